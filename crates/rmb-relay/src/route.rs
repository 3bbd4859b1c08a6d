//! The relay's per-envelope rules (§3.2), as pure functions: what to do with an envelope
//! a session sent, and the envelopes the relay itself writes (pong, relay errors).
//! The I/O around them lives in `connection` and `federation`.

use rmb_core::proto::{EnvelopeHeader, Error, Message, MessageKind, Payload, Pong};
use rmb_core::rules::{Rules, Violation};
use rmb_core::{envelope, Envelope};

use crate::session_key::SessionKey;

/// Life of a relay error envelope, seconds (§3.2).
pub const ERROR_EXPIRATION: u64 = 300;

/// What an envelope from a session asks of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// An envelope ping: answer it with a [`pong`], to the sender only.
    Ping,
    /// Route it to `destination`.
    Forward(Forward),
}

/// Routing facts about an envelope to forward, read once from its header by
/// [`forward`] whichever way it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub destination: SessionKey,
    /// Unix second after which the envelope is dropped.
    pub deadline: u64,
    pub is_request: bool,
    pub fail_fast: bool,
}

/// Whom to tell when an envelope from a session cannot be routed, and whether to: only
/// requests get relay errors back (answering a response or an error with an error could
/// loop between two parties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub session: SessionKey,
    pub uid: String,
    pub is_request: bool,
}

impl ReplyTo {
    /// The sender of `env`, the authenticated `session`.
    pub fn of(env: &EnvelopeHeader, session: &SessionKey) -> Self {
        ReplyTo {
            session: session.clone(),
            uid: env.uid_text(),
            is_request: header_is_request(env),
        }
    }
}

/// Why an envelope was refused before routing; the text is what the sender reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("source {found} does not match your session {session}: envelopes must be sent as the authenticated twin and session")]
    SourceMismatch { found: String, session: String },
    /// The envelope rules every relay and receiver apply (`rmb_core::rules`).
    #[error("{0}")]
    Rules(#[from] Violation),
}

impl Rejection {
    /// The `reason` label of `rmb_relay_rejected_total` (a fixed set of values).
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::SourceMismatch { .. } => "source_mismatch",
            Rejection::Rules(Violation::NoDestination) => "no_destination",
            Rejection::Rules(Violation::Expired { .. }) => "expired",
            Rejection::Rules(Violation::LifetimeTooLong { .. }) => "lifetime_too_long",
            Rejection::Rules(Violation::FromTheFuture { .. }) => "from_the_future",
            Rejection::Rules(_) => "bad_envelope",
        }
    }
}

/// Classifies an envelope received from `session` at `now`, from its routing header
/// alone (the payload is never read).
///
/// Pings are answered before any other check: the pong goes back to the authenticated
/// session only, and the TypeScript client sends pings with an empty destination and
/// no timestamp (§6).
pub fn classify(
    env: &EnvelopeHeader,
    session: &SessionKey,
    rules: &Rules,
    now: u64,
) -> Result<Inbound, Rejection> {
    if matches!(env.kind, Some(MessageKind::Ping(_))) {
        return Ok(Inbound::Ping);
    }
    let source_ok = env.source.as_ref().is_some_and(|s| session.matches(s));
    if !source_ok {
        return Err(Rejection::SourceMismatch {
            found: env
                .source
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "<none>".into()),
            session: session.to_string(),
        });
    }
    forward(env, rules, now).map(Inbound::Forward)
}

/// The routing facts of an envelope whose source has been checked (by the session it
/// came from, or by its signature when another relay posted it), after the envelope
/// rules: among them, a timestamp at most a little in the future and an `expiration`
/// at most `rules.max_lifetime`, so every deadline the relay keeps is near, which bounds
/// how long it must remember an envelope to drop its copies.
pub fn forward(env: &EnvelopeHeader, rules: &Rules, now: u64) -> Result<Forward, Rejection> {
    rules.check_header(env, now)?;
    let destination = match &env.destination {
        Some(d) if d.twin != 0 => SessionKey::of(d),
        _ => return Err(Violation::NoDestination.into()),
    };
    Ok(Forward {
        destination,
        deadline: env.timestamp.saturating_add(env.expiration),
        is_request: header_is_request(env),
        fail_fast: envelope::tags_say_fail_fast(env.tags_text()),
    })
}

/// True for a request: the only kind that gets relay errors back (see [`ReplyTo`]).
pub fn header_is_request(env: &EnvelopeHeader) -> bool {
    matches!(env.kind, Some(MessageKind::Request(_)))
}

/// The answer to an envelope ping: source and destination swapped (the destination
/// being the authenticated session), `hello world` appended to the plain payload as the
/// reference relay does.
pub fn pong(ping: &Envelope, session: &SessionKey) -> Envelope {
    let mut plain = match &ping.payload {
        Some(Payload::Plain(p)) => p.clone(),
        _ => Vec::new(),
    };
    plain.extend_from_slice(b"hello world");
    Envelope {
        uid: ping.uid.clone(),
        tags: ping.tags.clone(),
        timestamp: ping.timestamp,
        expiration: ping.expiration,
        source: ping.destination.clone(),
        destination: Some(session.address()),
        message: Some(Message::Pong(Pong {})),
        payload: Some(Payload::Plain(plain)),
        ..Default::default()
    }
}

/// A relay error for `uid` sent back to `to` (§3.2): unsigned, no source (twin 0),
/// expiration 300 s, code 0.
pub fn error_envelope(uid: &str, to: &SessionKey, message: String, now: u64) -> Envelope {
    Envelope {
        uid: uid.to_string(),
        timestamp: now,
        expiration: ERROR_EXPIRATION,
        source: None,
        destination: Some(to.address()),
        message: Some(Message::Error(Error { code: 0, message })),
        ..Default::default()
    }
}

/// True when a twin with these registered relays lives on a relay serving `domains`.
/// Hostnames compare case-insensitively; a port, when present, must match too.
pub fn lives_here(twin_relays: &[String], domains: &[String]) -> bool {
    twin_relays
        .iter()
        .any(|r| domains.iter().any(|d| d.eq_ignore_ascii_case(r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::proto::{Ping, RequestHeader, Skipped};
    use rmb_core::Address;

    fn rules() -> Rules {
        Rules::default()
    }

    fn env(source: Option<Address>, destination: Option<Address>) -> EnvelopeHeader {
        EnvelopeHeader {
            uid: bytes::Bytes::from_static(b"u"),
            timestamp: 1000,
            expiration: 60,
            source,
            destination,
            kind: Some(MessageKind::Request(RequestHeader {
                command: bytes::Bytes::from_static(b"calc.add"),
            })),
            signature: Some(bytes::Bytes::from([&b"e"[..], &[1u8; 64]].concat())),
            ..Default::default()
        }
    }

    #[test]
    fn forwards_a_good_request() {
        let me = SessionKey::new(1, None);
        let e = env(Some(Address::twin(1)), Some(Address::session(2, "s")));
        let Ok(Inbound::Forward(f)) = classify(&e, &me, &rules(), 1010) else {
            panic!()
        };
        assert_eq!(f.destination, SessionKey::new(2, Some("s".into())));
        assert_eq!(f.deadline, 1060);
        assert!(f.is_request && !f.fail_fast);
    }

    #[test]
    fn refuses_spoofed_sources() {
        let me = SessionKey::new(1, Some("a".into()));
        for source in [
            None,
            Some(Address::twin(1)),
            Some(Address::session(1, "b")),
            Some(Address::session(2, "a")),
        ] {
            let e = env(source, Some(Address::twin(2)));
            assert!(matches!(
                classify(&e, &me, &rules(), 1010),
                Err(Rejection::SourceMismatch { .. })
            ));
        }
    }

    #[test]
    fn applies_the_envelope_rules() {
        let me = SessionKey::new(1, None);
        let at = |e: EnvelopeHeader, now| classify(&e, &me, &rules(), now).map(|_| ());
        let label = |r: Result<(), Rejection>| r.unwrap_err().label();
        assert_eq!(
            label(at(env(Some(Address::twin(1)), None), 1010)),
            "no_destination"
        );
        let to_zero = env(Some(Address::twin(1)), Some(Address::twin(0)));
        assert_eq!(label(at(to_zero, 1010)), "no_destination");
        let good = env(Some(Address::twin(1)), Some(Address::twin(2)));
        assert_eq!(label(at(good.clone(), 1060)), "expired");
        let mut huge = good.clone();
        huge.expiration = u64::MAX - huge.timestamp;
        assert_eq!(label(at(huge, 1010)), "lifetime_too_long");
        let mut future = good.clone();
        future.timestamp = 173_300_000_030;
        future.expiration = 0;
        assert_eq!(label(at(future, 1010)), "from_the_future");
        let mut unsigned = good;
        unsigned.signature = None;
        let refused = at(unsigned, 1010).unwrap_err();
        assert_eq!(refused.label(), "bad_envelope");
        assert!(refused.to_string().contains("not signed"), "{refused}");
    }

    #[test]
    fn pings_are_answered_before_any_check() {
        let me = SessionKey::new(1, None);
        let mut ping = env(None, None);
        ping.kind = Some(MessageKind::Ping(Skipped {}));
        assert_eq!(classify(&ping, &me, &rules(), 5000), Ok(Inbound::Ping));
        let full = Envelope {
            uid: "u".into(),
            message: Some(Message::Ping(Ping {})),
            ..Default::default()
        };
        let p = pong(&full, &me);
        assert_eq!(p.destination, Some(Address::twin(1)));
        assert_eq!(p.source, None);
        assert_eq!(p.payload, Some(Payload::Plain(b"hello world".to_vec())));
        assert!(matches!(p.message, Some(Message::Pong(_))));
    }

    #[test]
    fn relay_errors_have_the_protocol_shape() {
        let to = SessionKey::new(3, Some("x".into()));
        let e = error_envelope("uid-9", &to, "nope".into(), 77);
        assert_eq!(
            (e.uid.as_str(), e.timestamp, e.expiration),
            ("uid-9", 77, 300)
        );
        assert_eq!(e.source, None);
        assert_eq!(e.destination, Some(Address::session(3, "x")));
        assert_eq!(
            e.message,
            Some(Message::Error(Error {
                code: 0,
                message: "nope".into()
            }))
        );
        assert_eq!(e.signature, None);
    }

    #[test]
    fn domain_matching() {
        let domains = vec!["relay.one".to_string(), "127.0.0.1:8081".to_string()];
        assert!(lives_here(&["RELAY.one".into()], &domains));
        assert!(lives_here(&["x".into(), "127.0.0.1:8081".into()], &domains));
        assert!(!lives_here(&["127.0.0.1:8082".into()], &domains));
        assert!(!lives_here(&[], &domains));
    }
}
