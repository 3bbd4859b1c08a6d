//! Which connection a message is for: a twin plus an optional session id (§3.1).

use std::fmt;

use rmb_core::Address;

/// A session is the pair (twin, sid); `sid: None` is the twin's default session, the one
/// rmb-peer uses and the one messages without `destination.connection` go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub twin: u32,
    pub sid: Option<String>,
}

impl SessionKey {
    pub fn new(twin: u32, sid: Option<String>) -> Self {
        // Clients differ: an empty sid means "no sid".
        SessionKey {
            twin,
            sid: sid.filter(|s| !s.is_empty()),
        }
    }

    /// The session an address points at.
    pub fn of(addr: &Address) -> Self {
        SessionKey::new(addr.twin, addr.connection.clone())
    }

    /// True when `addr` names exactly this session.
    pub fn matches(&self, addr: &Address) -> bool {
        addr.twin == self.twin && addr.session_id() == self.sid.as_deref()
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
    fn empty_sid_is_no_sid() {
        assert_eq!(
            SessionKey::new(7, Some(String::new())),
            SessionKey::new(7, None)
        );
        let key = SessionKey::new(7, None);
        assert!(key.matches(&Address::twin(7)));
        assert!(key.matches(&Address::session(7, "")));
        assert!(!key.matches(&Address::session(7, "s")));
        assert!(!key.matches(&Address::twin(8)));
    }

    #[test]
    fn display_parses_back() {
        for key in [
            SessionKey::new(7, None),
            SessionKey::new(7, Some("a:b".into())),
        ] {
            assert_eq!(SessionKey::parse(&key.to_string()), Some(key));
        }
        assert_eq!(SessionKey::parse("x"), None);
    }
}
