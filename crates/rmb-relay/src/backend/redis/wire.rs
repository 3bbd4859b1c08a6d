//! What the Redis backend writes to Redis: key names, the stored form of a frame and
//! the entries instances leave in each other's inboxes. Pure, so every format is
//! unit-tested; `docs/relay.md` ("Scaling out with Redis") documents the same.

use bytes::Bytes;

use crate::mailbox::{QueuedFrame, StoredId};
use crate::session_key::SessionKey;

/// Every key starts with this, so a Redis shared with rmb-peer (`msgbus.*`) is fine.
pub const PREFIX: &str = "rmb.relay.";

/// The instance a session is connected to (expires unless its heartbeat refreshes it).
pub fn owner_key(key: &SessionKey) -> String {
    format!("{PREFIX}owner.{key}")
}

/// The session's queue: a stream of [`encode_stored`] entries (field `e`).
pub fn queue_key(key: &SessionKey) -> String {
    format!("{PREFIX}q.{key}")
}

/// A destination twin's accounting: fields `f` (frames) and `b` (bytes) across all its
/// session queues, plus `b.<session>` per queue.
pub fn twin_key(twin: u32) -> String {
    format!("{PREFIX}twin.{twin}")
}

/// The field of `twin_key` holding one session queue's bytes.
pub fn session_bytes_field(key: &SessionKey) -> String {
    format!("b.{key}")
}

/// Relay-wide accounting of everything queued: fields `f` and `b`.
pub const TOTAL_KEY: &str = "rmb.relay.total";

/// Sorted set: session queue → the latest deadline in it, so an offline session's
/// queue is deleted (and its accounting released) once all of it has expired.
pub const EXPIRY_KEY: &str = "rmb.relay.expiry";

/// The federation outbox: a stream of [`encode_stored`] entries (field `e`), consumed by
/// the instances through the consumer group [`OUTBOX_GROUP`], each instance being a
/// consumer named by its id.
pub const OUTBOX_KEY: &str = "rmb.relay.outbox";
pub const OUTBOX_GROUP: &str = "relays";
/// The outbox's accounting: fields `f` and `b`.
pub const OUTBOX_COUNT_KEY: &str = "rmb.relay.outbox.count";

/// Sorted set: the relay's memory of accepted envelopes, [`seen_member`] → the unix
/// second until which it is remembered (design D1a; shared by all instances).
pub const SEEN_KEY: &str = "rmb.relay.seen";

/// The secret (64 bytes) every instance hashes de-dup keys with, set by the first one.
pub const HASH_KEY_KEY: &str = "rmb.relay.hashkey";

/// A de-dup key as a member of [`SEEN_KEY`]: 16 hex digits.
pub fn seen_member(key: u64) -> String {
    format!("{key:016x}")
}

/// The set of [`InboxEntry`] other instances left for `instance`.
pub fn inbox_key(instance: &str) -> String {
    format!("{PREFIX}inbox.{instance}")
}

/// A list of at most one element, pushed with each inbox entry, that `instance`
/// blocks on (a set cannot be waited for).
pub fn wake_key(instance: &str) -> String {
    format!("{PREFIX}wake.{instance}")
}

/// Present while `instance` runs (refreshed by its heartbeat).
pub fn alive_key(instance: &str) -> String {
    format!("{PREFIX}alive.{instance}")
}

/// A frame as stored in a queue: `deadline` (8 bytes, big endian) ‖ the frame.
pub fn encode_stored(frame: &QueuedFrame) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + frame.data.len());
    out.extend_from_slice(&frame.deadline.to_be_bytes());
    out.extend_from_slice(&frame.data);
    out
}

/// The inverse of [`encode_stored`], for the queue entry `id`.
pub fn decode_stored(id: StoredId, raw: Bytes) -> Option<QueuedFrame> {
    let deadline = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    Some(QueuedFrame {
        data: raw.slice(8..),
        deadline,
        id: Some(id),
        remember: None,
    })
}

/// Bytes a stored frame of `frame_len` takes in the accounting.
pub fn stored_len(frame_len: usize) -> usize {
    frame_len + 8
}

/// `ms-seq`, as Redis writes stream ids.
pub fn format_id(id: StoredId) -> String {
    format!("{}-{}", id.ms, id.seq)
}

pub fn parse_id(text: &str) -> Option<StoredId> {
    let (ms, seq) = text.split_once('-')?;
    Some(StoredId {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// What one instance asks of another about a session the other holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InboxEntry {
    /// Something was stored in the session's queue: read it.
    Drain(SessionKey),
    /// A newer connection of the session exists elsewhere: close this one.
    Kick(SessionKey),
}

impl InboxEntry {
    /// `D<session>` or `K<session>`: a set member, so repeated pokes about one session
    /// collapse into one.
    pub fn encode(&self) -> String {
        match self {
            InboxEntry::Drain(key) => format!("D{key}"),
            InboxEntry::Kick(key) => format!("K{key}"),
        }
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let mut chars = raw.chars();
        let kind = chars.next()?;
        let key = SessionKey::parse(chars.as_str())?;
        match kind {
            'D' => Some(InboxEntry::Drain(key)),
            'K' => Some(InboxEntry::Kick(key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_entries_round_trip() {
        for key in [
            SessionKey::new(7, None),
            SessionKey::new(7, Some("s:1".into())),
        ] {
            for entry in [
                InboxEntry::Drain(key.clone()),
                InboxEntry::Kick(key.clone()),
            ] {
                assert_eq!(InboxEntry::decode(&entry.encode()), Some(entry));
            }
        }
        assert_eq!(InboxEntry::Drain(SessionKey::new(7, None)).encode(), "D7");
        for bad in ["", "D", "Dx", "X7"] {
            assert_eq!(InboxEntry::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stored_frames_round_trip() {
        let id = StoredId { ms: 5, seq: 2 };
        let frame = QueuedFrame::new(Bytes::from_static(b"abc"), 99);
        let raw = encode_stored(&frame);
        assert_eq!(raw.len(), stored_len(3));
        let back = decode_stored(id, Bytes::from(raw)).unwrap();
        assert_eq!(back.data, frame.data);
        assert_eq!((back.deadline, back.id), (99, Some(id)));
        assert_eq!(decode_stored(id, Bytes::from_static(b"short")), None);
    }

    #[test]
    fn ids_round_trip() {
        let id = StoredId {
            ms: 1733000000123,
            seq: 4,
        };
        assert_eq!(format_id(id), "1733000000123-4");
        assert_eq!(parse_id(&format_id(id)), Some(id));
        for bad in ["", "1", "1-", "-1", "a-b", "1-2-3"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
