//! The field-shift attack, made reproducible.
//!
//! The signing challenge (PROTOCOL.md §2.1) concatenates an envelope's fields with no
//! separators, so whoever carries a signed envelope (a relay) can move bytes from one
//! field into its neighbour and the MD5 digest, hence the signature, stays valid:
//! `timestamp=1733000000, expiration=300` becomes `timestamp=173300000030,
//! expiration=0`. [`variants`] returns every such envelope reachable by one move, each
//! named, so relay, SDK and rmb-peer tests can send them to real servers.
//!
//! ```
//! use rmb_core::{envelope, Envelope};
//! use rmb_testkit::shift;
//!
//! let env = Envelope { uid: "u1".into(), timestamp: 1733000000, expiration: 300, ..Default::default() };
//! let all = shift::variants(&env);
//! let moved = all.iter().find(|s| s.envelope.timestamp == 173300000030).unwrap();
//! assert_eq!(moved.envelope.expiration, 0);
//! assert_eq!(envelope::challenge(&moved.envelope), envelope::challenge(&env));
//! ```
//!
//! One move is one of: some bytes across one boundary between fields (fields whose
//! challenge bytes are empty in between are crossed too, and an absent optional field
//! that receives bytes appears); an empty optional field appearing or disappearing; the
//! payload's type flipped between plain and cipher; or the message changed into another
//! kind (a request's command or an error's code and message absorbed by the
//! neighbouring session id and schema, a response turned into a request or an error
//! built from neighbouring bytes, and the kinds without challenge bytes swapped).

use std::fmt;

use rmb_core::proto::{Error, Message, Payload, Ping, Pong, Request, Response};
use rmb_core::{Address, Envelope};

/// At most this many bytes cross one boundary in one variant, so a large payload does
/// not yield thousands of near-identical variants.
const MAX_MOVE: usize = 40;

/// A field of the challenge, in challenge order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Uid,
    Tags,
    Timestamp,
    Expiration,
    SourceTwin,
    SourceSession,
    DestinationTwin,
    DestinationSession,
    Command,
    ErrorCode,
    ErrorMessage,
    Schema,
    Federation,
    Payload,
    /// An entry of `relays`; the one past the last is a new entry.
    Relay(usize),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Uid => f.write_str("uid"),
            Part::Tags => f.write_str("tags"),
            Part::Timestamp => f.write_str("timestamp"),
            Part::Expiration => f.write_str("expiration"),
            Part::SourceTwin => f.write_str("source twin"),
            Part::SourceSession => f.write_str("source session"),
            Part::DestinationTwin => f.write_str("destination twin"),
            Part::DestinationSession => f.write_str("destination session"),
            Part::Command => f.write_str("command"),
            Part::ErrorCode => f.write_str("error code"),
            Part::ErrorMessage => f.write_str("error message"),
            Part::Schema => f.write_str("schema"),
            Part::Federation => f.write_str("federation"),
            Part::Payload => f.write_str("payload"),
            Part::Relay(i) => write!(f, "relays[{i}]"),
        }
    }
}

/// The kind of an envelope's message, for [`Shift::Kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
    Error,
    Ping,
    Pong,
    None,
}

/// What one variant changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// `count` bytes moved from the end of `from` to the start of `to` (or from the
    /// start of `from` to the end of `to`, when `to` comes first).
    Bytes { from: Part, to: Part, count: usize },
    /// An empty optional field appeared or disappeared (no challenge bytes change).
    EmptyField(Part),
    /// The payload's type flipped between plain and cipher.
    PayloadType,
    /// The message became another kind, its challenge bytes given to or taken from
    /// the neighbouring fields.
    Kind { from: MessageKind, to: MessageKind },
}

/// One shifted envelope: same challenge bytes, same signature, other fields.
#[derive(Debug, Clone)]
pub struct Shifted {
    /// What moved and how the fields changed, e.g. `start of expiration into timestamp
    /// (2 bytes): timestamp 1733000000 → 173300000030, expiration 300 → 0`.
    pub name: String,
    pub shift: Shift,
    pub envelope: Envelope,
}

/// Every envelope one move away from `original` that keeps its challenge bytes.
pub fn variants(original: &Envelope) -> Vec<Shifted> {
    let pieces = Pieces::of(original);
    let mut out = Vec::new();
    let mut push = |shift: Shift, op: String, pieces: Pieces| {
        if let Some(envelope) = pieces.build(original) {
            if envelope != *original {
                let name = format!("{op}: {}", describe(original, &envelope));
                out.push(Shifted {
                    name,
                    shift,
                    envelope,
                });
            }
        }
    };
    byte_moves(&pieces, &mut push);
    empty_fields(&pieces, &mut push);
    if pieces.payload_is_cipher.is_some() {
        let mut flipped = pieces.clone();
        flipped.payload_is_cipher = flipped.payload_is_cipher.map(|c| !c);
        push(Shift::PayloadType, "payload type flipped".into(), flipped);
    }
    kind_changes(&pieces, &mut push);
    out
}

/// The challenge as an ordered list of parts; `None` is an absent optional field.
#[derive(Clone)]
struct Pieces {
    parts: Vec<(Part, Option<Vec<u8>>)>,
    kind: MessageKind,
    /// `Some(is_cipher)` when a payload is present.
    payload_is_cipher: Option<bool>,
}

impl Pieces {
    fn of(env: &Envelope) -> Self {
        let text = |s: &Option<String>| s.as_ref().map(|s| s.clone().into_bytes());
        let decimal = |n: u64| Some(n.to_string().into_bytes());
        let source = env.source.clone().unwrap_or_default();
        let destination = env.destination.clone().unwrap_or_default();
        let mut parts = vec![
            (Part::Uid, Some(env.uid.clone().into_bytes())),
            (Part::Tags, text(&env.tags)),
            (Part::Timestamp, decimal(env.timestamp)),
            (Part::Expiration, decimal(env.expiration)),
            (Part::SourceTwin, decimal(source.twin.into())),
            (Part::SourceSession, text(&source.connection)),
            (Part::DestinationTwin, decimal(destination.twin.into())),
            (Part::DestinationSession, text(&destination.connection)),
        ];
        let kind = match &env.message {
            Some(Message::Request(req)) => {
                parts.push((Part::Command, Some(req.command.clone().into_bytes())));
                MessageKind::Request
            }
            Some(Message::Error(err)) => {
                parts.push((Part::ErrorCode, decimal(err.code.into())));
                parts.push((Part::ErrorMessage, Some(err.message.clone().into_bytes())));
                MessageKind::Error
            }
            Some(Message::Response(_)) => MessageKind::Response,
            Some(Message::Ping(_)) => MessageKind::Ping,
            Some(Message::Pong(_)) => MessageKind::Pong,
            None => MessageKind::None,
        };
        parts.push((Part::Schema, text(&env.schema)));
        parts.push((Part::Federation, text(&env.federation)));
        let (payload, payload_is_cipher) = match &env.payload {
            Some(Payload::Plain(p)) => (Some(p.clone()), Some(false)),
            Some(Payload::Cipher(c)) => (Some(c.clone()), Some(true)),
            None => (None, None),
        };
        parts.push((Part::Payload, payload));
        for (i, relay) in env.relays.iter().enumerate() {
            parts.push((Part::Relay(i), Some(relay.clone().into_bytes())));
        }
        parts.push((Part::Relay(env.relays.len()), None));
        Pieces {
            parts,
            kind,
            payload_is_cipher,
        }
    }

    fn get(&self, part: Part) -> Option<&[u8]> {
        self.parts
            .iter()
            .find(|(p, _)| *p == part)
            .and_then(|(_, v)| v.as_deref())
    }

    fn set(&mut self, part: Part, value: Option<Vec<u8>>) {
        if let Some(slot) = self.parts.iter_mut().find(|(p, _)| *p == part) {
            slot.1 = value;
        }
    }

    /// The envelope these pieces describe (the original's signature kept), or `None`
    /// when a piece cannot be what its field holds (a number that is not canonical
    /// decimal or out of range, text that is not UTF-8, a required field absent).
    fn build(&self, original: &Envelope) -> Option<Envelope> {
        let text = |part| match self.get(part) {
            Some(bytes) => String::from_utf8(bytes.to_vec()).ok().map(Some),
            None => Some(None),
        };
        let required = |part| text(part).flatten();
        let number = |part| decimal(self.get(part)?);
        let twin = |part| u32::try_from(number(part)?).ok();
        let address = |twin_part, session_part, was: &Option<Address>| {
            let twin = twin(twin_part)?;
            let connection = text(session_part)?;
            // An absent address is twin 0 in the challenge: keep it absent.
            Some(
                (was.is_some() || twin != 0 || connection.is_some())
                    .then_some(Address { twin, connection }),
            )
        };
        let message = match self.kind {
            MessageKind::Request => Some(Message::Request(Request {
                command: required(Part::Command)?,
            })),
            MessageKind::Error => Some(Message::Error(Error {
                code: u32::try_from(number(Part::ErrorCode)?).ok()?,
                message: required(Part::ErrorMessage)?,
            })),
            MessageKind::Response => Some(Message::Response(Response {})),
            MessageKind::Ping => Some(Message::Ping(Ping {})),
            MessageKind::Pong => Some(Message::Pong(Pong {})),
            MessageKind::None => None,
        };
        let payload = self.get(Part::Payload).map(|bytes| {
            if self.payload_is_cipher == Some(true) {
                Payload::Cipher(bytes.to_vec())
            } else {
                Payload::Plain(bytes.to_vec())
            }
        });
        let mut relays = Vec::new();
        for (part, value) in &self.parts {
            if let (Part::Relay(_), Some(bytes)) = (part, value) {
                relays.push(String::from_utf8(bytes.clone()).ok()?);
            }
        }
        Some(Envelope {
            uid: required(Part::Uid)?,
            tags: text(Part::Tags)?,
            timestamp: number(Part::Timestamp)?,
            expiration: number(Part::Expiration)?,
            source: address(Part::SourceTwin, Part::SourceSession, &original.source)?,
            destination: address(
                Part::DestinationTwin,
                Part::DestinationSession,
                &original.destination,
            )?,
            message,
            signature: original.signature.clone(),
            schema: text(Part::Schema)?,
            federation: text(Part::Federation)?,
            payload,
            relays,
        })
    }
}

/// A number as the challenge writes it: canonical decimal (no sign, no leading zero).
fn decimal(bytes: &[u8]) -> Option<u64> {
    let canonical = !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    canonical
        .then(|| std::str::from_utf8(bytes).ok()?.parse().ok())
        .flatten()
}

type Push<'a> = dyn FnMut(Shift, String, Pieces) + 'a;

/// Bytes across each boundary: part `i` and every later part `j` it touches in the
/// challenge (all parts between them empty or absent).
fn byte_moves(pieces: &Pieces, push: &mut Push<'_>) {
    let n = pieces.parts.len();
    for i in 0..n {
        for j in i + 1..n {
            let (left, right) = (&pieces.parts[i], &pieces.parts[j]);
            let left_bytes = left.1.clone().unwrap_or_default();
            let right_bytes = right.1.clone().unwrap_or_default();
            for count in 1..=left_bytes.len().min(MAX_MOVE) {
                let cut = left_bytes.len() - count;
                let mut moved = pieces.clone();
                moved.parts[i].1 = Some(left_bytes[..cut].to_vec());
                moved.parts[j].1 = Some([&left_bytes[cut..], &right_bytes[..]].concat());
                let op = format!("end of {} into {} ({count} bytes)", left.0, right.0);
                let shift = Shift::Bytes {
                    from: left.0,
                    to: right.0,
                    count,
                };
                push(shift, op, moved);
            }
            for count in 1..=right_bytes.len().min(MAX_MOVE) {
                let mut moved = pieces.clone();
                moved.parts[i].1 = Some([&left_bytes[..], &right_bytes[..count]].concat());
                moved.parts[j].1 = Some(right_bytes[count..].to_vec());
                let op = format!("start of {} into {} ({count} bytes)", right.0, left.0);
                let shift = Shift::Bytes {
                    from: right.0,
                    to: left.0,
                    count,
                };
                push(shift, op, moved);
            }
            if !right_bytes.is_empty() {
                break; // `j` has bytes: parts after it do not touch `i`.
            }
        }
    }
}

/// An empty optional field appears or disappears; an empty relay entry is added.
fn empty_fields(pieces: &Pieces, push: &mut Push<'_>) {
    let optional = [
        Part::Tags,
        Part::SourceSession,
        Part::DestinationSession,
        Part::Schema,
        Part::Federation,
        Part::Payload,
    ];
    for part in optional {
        let flipped = match pieces.get(part) {
            None => Some(Vec::new()),
            Some([]) => None,
            Some(_) => continue,
        };
        let mut changed = pieces.clone();
        changed.set(part, flipped.clone());
        if part == Part::Payload {
            changed.payload_is_cipher = flipped.as_ref().map(|_| false);
        }
        let op = match flipped {
            Some(_) => format!("empty {part} added"),
            None => format!("empty {part} removed"),
        };
        push(Shift::EmptyField(part), op, changed);
    }
    let last = pieces.parts.len() - 1;
    if let (Part::Relay(n), None) = pieces.parts[last] {
        let mut added = pieces.clone();
        added.parts[last].1 = Some(Vec::new());
        push(
            Shift::EmptyField(Part::Relay(n)),
            "empty relay entry added".into(),
            added,
        );
    }
}

/// The message turned into another kind, its bytes going to or coming from the
/// destination session (before it) and the schema (after it).
fn kind_changes(pieces: &Pieces, push: &mut Push<'_>) {
    let without_bytes = [
        MessageKind::Response,
        MessageKind::Ping,
        MessageKind::Pong,
        MessageKind::None,
    ];
    let session = pieces
        .get(Part::DestinationSession)
        .unwrap_or_default()
        .to_vec();
    let schema = pieces.get(Part::Schema).unwrap_or_default().to_vec();
    let from = pieces.kind;
    let mut to_kind = |kind: MessageKind, op: String, changed: Pieces| {
        push(Shift::Kind { from, to: kind }, op, changed);
    };
    let message_bytes = match pieces.kind {
        MessageKind::Request => Some(pieces.get(Part::Command).unwrap_or_default().to_vec()),
        MessageKind::Error => Some(
            [
                pieces.get(Part::ErrorCode).unwrap_or_default(),
                pieces.get(Part::ErrorMessage).unwrap_or_default(),
            ]
            .concat(),
        ),
        _ => None,
    };
    if let Some(bytes) = message_bytes {
        // Request or error → response: its bytes split between session and schema.
        let what = match pieces.kind {
            MessageKind::Request => "request into response",
            _ => "error into empty success",
        };
        for split in 0..=bytes.len() {
            let mut changed = without_message(pieces);
            changed.kind = MessageKind::Response;
            if split > 0 {
                let grown = [&session[..], &bytes[..split]].concat();
                changed.set(Part::DestinationSession, Some(grown));
            }
            if split < bytes.len() {
                let grown = [&bytes[split..], &schema[..]].concat();
                changed.set(Part::Schema, Some(grown));
            }
            let op = format!("{what} ({split} bytes to the session, the rest to the schema)");
            to_kind(MessageKind::Response, op, changed);
        }
        return;
    }
    for kind in without_bytes.into_iter().filter(|k| *k != pieces.kind) {
        let mut changed = pieces.clone();
        changed.kind = kind;
        to_kind(kind, format!("{:?} into {kind:?}", pieces.kind), changed);
    }
    // A response → a request whose command is the end of the session or the start of
    // the schema.
    for count in 1..=session.len().min(MAX_MOVE) {
        let cut = session.len() - count;
        let mut changed = with_message(pieces, MessageKind::Request);
        changed.set(Part::DestinationSession, Some(session[..cut].to_vec()));
        changed.set(Part::Command, Some(session[cut..].to_vec()));
        let op = format!("response into request (command from the session, {count} bytes)");
        to_kind(MessageKind::Request, op, changed);
    }
    for count in 1..=schema.len().min(MAX_MOVE) {
        let mut changed = with_message(pieces, MessageKind::Request);
        changed.set(Part::Command, Some(schema[..count].to_vec()));
        changed.set(Part::Schema, Some(schema[count..].to_vec()));
        let op = format!("response into request (command from the schema, {count} bytes)");
        to_kind(MessageKind::Request, op, changed);
    }
    // A response → an error whose code is the last digits of the destination twin.
    let twin = pieces
        .get(Part::DestinationTwin)
        .unwrap_or_default()
        .to_vec();
    for count in 1..twin.len() {
        let cut = twin.len() - count;
        let mut changed = with_message(pieces, MessageKind::Error);
        changed.set(Part::DestinationTwin, Some(twin[..cut].to_vec()));
        changed.set(Part::ErrorCode, Some(twin[cut..].to_vec()));
        changed.set(Part::ErrorMessage, Some(Vec::new()));
        let op = format!("response into error (code from the destination twin, {count} digits)");
        to_kind(MessageKind::Error, op, changed);
    }
}

/// The pieces without the message's own parts.
fn without_message(pieces: &Pieces) -> Pieces {
    let mut out = pieces.clone();
    out.parts
        .retain(|(p, _)| !matches!(p, Part::Command | Part::ErrorCode | Part::ErrorMessage));
    out
}

/// The pieces with empty parts for a message of `kind`, right after the destination.
fn with_message(pieces: &Pieces, kind: MessageKind) -> Pieces {
    let mut out = without_message(pieces);
    let at = out
        .parts
        .iter()
        .position(|(p, _)| *p == Part::Schema)
        .unwrap_or(out.parts.len());
    let new: &[Part] = match kind {
        MessageKind::Request => &[Part::Command],
        MessageKind::Error => &[Part::ErrorCode, Part::ErrorMessage],
        _ => &[],
    };
    for (offset, part) in new.iter().enumerate() {
        out.parts.insert(at + offset, (*part, Some(Vec::new())));
    }
    out.kind = kind;
    out
}

/// The fields that differ, as `field old → new`.
fn describe(original: &Envelope, shifted: &Envelope) -> String {
    let show = |v: &dyn fmt::Debug| {
        let text = format!("{v:?}");
        if text.len() > 48 {
            format!("{}…", &text[..text.floor_char_boundary_compat(45)])
        } else {
            text
        }
    };
    let mut changes = Vec::new();
    let mut diff = |name: &str, a: &dyn fmt::Debug, b: &dyn fmt::Debug| {
        let (a, b) = (show(a), show(b));
        if a != b {
            changes.push(format!("{name} {a} → {b}"));
        }
    };
    diff("uid", &original.uid, &shifted.uid);
    diff("tags", &original.tags, &shifted.tags);
    diff("timestamp", &original.timestamp, &shifted.timestamp);
    diff("expiration", &original.expiration, &shifted.expiration);
    diff("source", &original.source, &shifted.source);
    diff("destination", &original.destination, &shifted.destination);
    diff("message", &original.message, &shifted.message);
    diff("schema", &original.schema, &shifted.schema);
    diff("federation", &original.federation, &shifted.federation);
    diff("payload", &original.payload, &shifted.payload);
    diff("relays", &original.relays, &shifted.relays);
    changes.join(", ")
}

/// `str::floor_char_boundary` is not stable yet.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for String {
    fn floor_char_boundary_compat(&self, index: usize) -> usize {
        (0..=index.min(self.len()))
            .rev()
            .find(|i| self.is_char_boundary(*i))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::envelope::challenge;

    fn sample() -> Envelope {
        Envelope {
            uid: "ab12".into(),
            tags: None,
            timestamp: 1_733_000_000,
            expiration: 300,
            source: Some(Address::twin(7)),
            destination: Some(Address::twin(95)),
            message: Some(Message::Error(Error {
                code: 500,
                message: "boom".into(),
            })),
            signature: Some(vec![b'e'; 65]),
            schema: Some("application/json".into()),
            federation: None,
            payload: Some(Payload::Plain(b"12".to_vec())),
            relays: vec!["r1".into()],
        }
    }

    #[test]
    fn every_variant_keeps_the_challenge_and_differs_from_the_original() {
        let original = sample();
        let all = variants(&original);
        assert!(all.len() > 50, "only {} variants", all.len());
        for v in &all {
            assert_eq!(challenge(&v.envelope), challenge(&original), "{}", v.name);
            assert_ne!(v.envelope, original, "{}", v.name);
            assert_eq!(v.envelope.signature, original.signature);
        }
    }

    #[test]
    fn the_named_shifts_of_the_issue_are_there() {
        let all = variants(&sample());
        let has = |pred: &dyn Fn(&Envelope) -> bool| all.iter().any(|v| pred(&v.envelope));
        assert!(has(&|e| e.timestamp == 173_300_000_030 && e.expiration == 0));
        assert!(has(&|e| e.uid == "ab" && e.tags.as_deref() == Some("12")));
        assert!(has(&|e| e.schema.as_deref() == Some("application/json1")
            && e.payload == Some(Payload::Plain(b"2".to_vec()))));
        assert!(has(&|e| e.relays == ["2r1"]));
        assert!(has(&|e| matches!(e.message, Some(Message::Response(_)))
            && e.schema.as_deref() == Some("500boomapplication/json")));
        assert!(has(&|e| e.source == Some(Address::session(7, "9"))
            && e.destination == Some(Address::twin(5))));
        assert!(has(&|e| matches!(
            e.message,
            Some(Message::Error(Error { code: 0, .. }))
        ) && e.destination == Some(Address::twin(9550))));
    }

    #[test]
    fn numbers_stay_canonical() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"300"), Some(300));
        assert_eq!(decimal(b"030"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"99999999999999999999"), None);
    }

    #[test]
    fn names_say_what_moved() {
        let all = variants(&sample());
        let name = all
            .iter()
            .find(|v| v.envelope.timestamp == 173_300_000_030)
            .map(|v| v.name.clone())
            .unwrap();
        assert_eq!(
            name,
            "start of expiration into timestamp (2 bytes): \
             timestamp 1733000000 → 173300000030, expiration 300 → 0"
        );
    }
}
