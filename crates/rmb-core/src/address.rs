//! The text form of an [`Address`]: `"7"` for a twin, `"7:session"` for one of its
//! sessions. This is the `src`/`dst` form of the Redis JSON API (§4).

use std::fmt;
use std::str::FromStr;

use crate::proto::Address;

/// Why an address text was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("address {0:?} is empty")]
    Empty(String),
    #[error("address {0:?} must start with a twin id (a number from 1 to 4294967295)")]
    BadTwin(String),
    #[error("address {0:?} has an empty session after ':'")]
    EmptySession(String),
}

impl Address {
    /// The address of a twin's default (sid-less) session.
    pub fn twin(twin: u32) -> Self {
        Address {
            twin,
            connection: None,
        }
    }

    /// The address of a named session of a twin.
    pub fn session(twin: u32, session: impl Into<String>) -> Self {
        Address {
            twin,
            connection: Some(session.into()),
        }
    }

    /// The session id, with an empty string meaning "no session" (clients differ in
    /// whether they omit the field or send it empty).
    pub fn session_id(&self) -> Option<&str> {
        self.connection.as_deref().filter(|s| !s.is_empty())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.session_id() {
            Some(sid) => write!(f, "{}:{}", self.twin, sid),
            None => write!(f, "{}", self.twin),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(AddressError::Empty(s.to_string()));
        }
        let (twin, session) = match text.split_once(':') {
            Some((twin, session)) => (twin, Some(session)),
            None => (text, None),
        };
        let twin: u32 = twin
            .parse()
            .ok()
            .filter(|t| *t != 0)
            .ok_or_else(|| AddressError::BadTwin(s.to_string()))?;
        match session {
            Some("") => Err(AddressError::EmptySession(s.to_string())),
            Some(sid) => Ok(Address::session(twin, sid)),
            None => Ok(Address::twin(twin)),
        }
    }
}
