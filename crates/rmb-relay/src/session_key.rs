//! Which connection a message is for: a twin plus an optional session id (§3.1).

use std::fmt;

use rmb_core::Address;

/// A session is the pair (twin, sid); `sid: None` is the twin's default session, the one
/// rmb-peer uses and the one messages without `destination.connection` go to.
///
/// `Some("")` is a session of its own, as on the original relay (design D2): the
/// TypeScript client connects with session `""` (its JWT says `"sid":""` and its
/// envelopes carry `connection: ""`), and must not replace the twin's rmb-peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub twin: u32,
    pub sid: Option<String>,
}

impl SessionKey {
    pub fn new(twin: u32, sid: Option<String>) -> Self {
        SessionKey { twin, sid }
    }

    /// The session an address points at.
    pub fn of(addr: &Address) -> Self {
        SessionKey::new(addr.twin, addr.connection.clone())
    }

    /// True when `addr` names exactly this session.
    pub fn matches(&self, addr: &Address) -> bool {
        addr.twin == self.twin && addr.connection.as_deref() == self.sid.as_deref()
    }

    pub fn address(&self) -> Address {
        Address {
            twin: self.twin,
            connection: self.sid.clone(),
        }
    }

    /// Parses the `Display` form back (used for Redis keys).
    pub fn parse(text: &str) -> Option<Self> {
        let (twin, sid) = match text.split_once(':') {
            Some((t, s)) => (t, Some(s.to_string())),
            None => (text, None),
        };
        Some(SessionKey::new(twin.parse().ok()?, sid))
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sid {
            Some(sid) => write!(f, "{}:{}", self.twin, sid),
            None => write!(f, "{}", self.twin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sid_is_a_session_of_its_own() {
        let empty = SessionKey::new(7, Some(String::new()));
        let default = SessionKey::new(7, None);
        assert_ne!(empty, default);
        assert!(default.matches(&Address::twin(7)));
        assert!(!default.matches(&Address::session(7, "")));
        assert!(empty.matches(&Address::session(7, "")));
        assert!(!empty.matches(&Address::twin(7)));
        assert!(!default.matches(&Address::session(7, "s")));
        assert!(!default.matches(&Address::twin(8)));
    }

    #[test]
    fn display_parses_back() {
        for key in [
            SessionKey::new(7, None),
            SessionKey::new(7, Some("a:b".into())),
            SessionKey::new(7, Some(String::new())),
        ] {
            assert_eq!(SessionKey::parse(&key.to_string()), Some(key));
        }
        assert_eq!(SessionKey::parse("x"), None);
    }
}
