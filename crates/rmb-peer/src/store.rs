//! The peer's Redis layout, and the scripts that change it.
//!
//! Every change that may be retried is one Lua script, atomic in Redis and written so
//! that running it twice has the effect of running it once: a retry after a connection
//! dropped (when Redis may or may not have applied the first attempt) never pushes a
//! message twice. Scripts report an unusable key (WRONGTYPE) or a full Redis (OOM) as
//! a result instead of raising, so one bad key never fails a batch of others.
//!
//! Keys, besides the lists apps and services use (`msgbus.system.local`,
//! `msgbus.system.reply`, `msgbus.<cmd>` and each app's `ret`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `msgbus.system.local.processing` | list | requests taken off `msgbus.system.local` and not yet accepted |
//! | `msgbus.system.reply.processing` | list | replies taken off `msgbus.system.reply` and not yet sent |
//! | `msgbus.backlog.<uid>` | hash | an accepted request: `ref`, `ret`, `cmd`, its time and deadline, per destination `d:<twin>` = `sending`, `sent` or `done`, and under `--resend always` the request itself (`req`) |
//! | `msgbus.system.outbox` | set | uids of accepted requests with a destination not yet `done` |
//! | `msgbus.system.seen` | sorted set | the seen markers, scored by expiry, to cap their number |
//! | `msgbus.system.seen.<key>` | string | a request from a remote twin was pushed to its service, under each of its two de-duplication keys (value: its schema and deadline) |
//! | `msgbus.system.answer.<key>` | string | the reply frame sent for a remote request, to answer its copies |
//! | `msgbus.system.answers`, `.bytes` | sorted set, string | the replies kept (scored by expiry) and their bytes, to cap them |
//! | `msgbus.system.hashkey` | string | the secret the de-duplication keys are hashed with, kept across restarts |
//!
//! All of them expire with the request they describe, and `msgbus.<cmd>` lists expire
//! with their newest entry, so nothing a remote twin sends outlives its envelope.

use std::collections::HashMap;

use rmb_core::peer_api::SYSTEM_LOCAL;

use crate::translate::Tracked;

/// Requests taken off [`SYSTEM_LOCAL`] and not yet accepted.
pub const LOCAL_PROCESSING: &str = "msgbus.system.local.processing";
/// Replies taken off `msgbus.system.reply` and not yet confirmed sent.
pub const REPLY_PROCESSING: &str = "msgbus.system.reply.processing";
/// Uids of accepted requests still waiting for a destination's reply.
pub const OUTBOX: &str = "msgbus.system.outbox";
/// Seconds a backlog outlives its request, so a late reply or the check that a request
/// was answered still finds it.
pub const BACKLOG_GRACE: u64 = 30;

/// Where each source list is moved to while the peer works on an entry.
pub fn processing_list(source: &str) -> &'static str {
    if source == SYSTEM_LOCAL {
        LOCAL_PROCESSING
    } else {
        REPLY_PROCESSING
    }
}

/// The backlog of request `uid` ([`rmb_core::peer_api::backlog_key`]).
pub fn backlog_key(uid: &str) -> String {
    rmb_core::peer_api::backlog_key(uid)
}

/// The backlog field holding destination `twin`'s state.
pub fn destination_field(twin: u32) -> String {
    format!("d:{twin}")
}

/// The backlog field for relay errors of a request to several twins, which name no
/// destination: the first one is pushed, later ones are copies.
pub const RELAY_ERROR_FIELD: &str = "relay";

/// A destination's state in a backlog: handed to the relays, confirmed by one, answered.
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
pub const DONE: &str = "done";

/// A backlog's fields: what the peer needs to route the replies, every destination
/// `sending`, and the app's request itself if given (to send it again after a restart).
pub fn backlog_fields(tracked: &Tracked, request: Option<&str>) -> Vec<(String, String)> {
    let mut fields = vec![
        ("ret".to_string(), tracked.reply_to.clone()),
        ("cmd".to_string(), tracked.command.clone()),
        ("ts".to_string(), tracked.timestamp.to_string()),
        ("dl".to_string(), tracked.deadline.to_string()),
    ];
    if let Some(reference) = &tracked.reference {
        fields.push(("ref".to_string(), reference.clone()));
    }
    if let Some(request) = request {
        fields.push((REQUEST_FIELD.to_string(), request.to_string()));
    }
    for twin in &tracked.destinations {
        fields.push((destination_field(*twin), SENDING.to_string()));
    }
    fields
}

/// The backlog field holding the app's request (only under `--resend always`).
pub const REQUEST_FIELD: &str = "req";

/// A backlog read back (`HGETALL`), with each destination's state; `None` if the
/// fields are not a backlog (missing, or written by something else).
pub fn tracked_from_fields(
    uid: &str,
    fields: &HashMap<String, String>,
) -> Option<(Tracked, Vec<(u32, String)>)> {
    let number = |name: &str| fields.get(name)?.parse::<u64>().ok();
    let mut states: Vec<(u32, String)> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("d:")?.parse().ok()?, v.clone())))
        .collect();
    states.sort();
    let tracked = Tracked {
        uid: uid.to_string(),
        reference: fields.get("ref").cloned(),
        reply_to: fields.get("ret")?.clone(),
        command: fields.get("cmd").cloned().unwrap_or_default(),
        destinations: states.iter().map(|(twin, _)| *twin).collect(),
        timestamp: number("ts")?,
        deadline: number("dl")?,
    };
    Some((tracked, states))
}

/// The seen markers (of [`PUSH_REQUEST`]), scored by the Unix second they expire, to
/// cap how many there are.
pub const SEEN_INDEX: &str = "msgbus.system.seen";

/// Pushes a remote twin's request to its service list once.
///
/// KEYS: list, [`SEEN_INDEX`], the message key's marker, and the signature key's
/// marker if known. ARGV: json, ttl, max entries, max bytes, marker value, now, max
/// markers.
/// Returns `pushed`, `duplicate` (a marker exists), `full` (the list, or the markers
/// are at their cap), `wrongtype`, or the error Redis gave (OOM).
pub const PUSH_REQUEST: &str = r#"
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 'duplicate' end
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'list' then return 'wrongtype' end
local len = redis.call('LLEN', KEYS[1])
if len >= tonumber(ARGV[3]) then return 'full' end
if len > 0 then
  local used = redis.call('MEMORY', 'USAGE', KEYS[1]) or 0
  if used + string.len(ARGV[1]) > tonumber(ARGV[4]) then return 'full' end
end
local now = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) + #KEYS - 2 > tonumber(ARGV[7]) then return 'markers' end
local ttl = tonumber(ARGV[2])
for i = 3, #KEYS do
  local set = redis.pcall('SET', KEYS[i], ARGV[5], 'EX', ttl)
  if type(set) == 'table' and set['err'] then
    for j = 3, i - 1 do redis.call('DEL', KEYS[j]) end
    return set['err']
  end
end
local pushed = redis.pcall('LPUSH', KEYS[1], ARGV[1])
if type(pushed) == 'table' and pushed['err'] then
  for j = 3, #KEYS do redis.call('DEL', KEYS[j]) end
  return pushed['err']
end
for i = 3, #KEYS do redis.call('ZADD', KEYS[2], now + ttl, KEYS[i]) end
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 'pushed'
"#;

/// Pushes a reply (or an error the peer reports) for one destination of a request to
/// the app's `ret` list, once, and takes the request out of the outbox when every
/// destination has its answer.
///
/// KEYS: backlog, ret list, outbox. ARGV: field, json, uid, `1` to push even without a
/// backlog (the peer remembers the request but Redis lost it).
/// Returns `pushed`, `duplicate` (that destination is answered), `stranger` (the
/// sender is not a destination of the request), `unknown` (no backlog), or Redis's
/// error (WRONGTYPE for a `ret` that is not a list, OOM).
pub const PUSH_REPLY: &str = r#"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' then
  if ARGV[4] ~= '1' then return 'unknown' end
  local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
  if type(pushed) == 'table' and pushed['err'] then return pushed['err'] end
  return 'pushed'
end
local state = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[1] == 'relay' then
  if state == 'done' then return 'duplicate' end
elseif not state then
  return 'stranger'
elseif state == 'done' then
  return 'duplicate'
end
local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
if type(pushed) == 'table' and pushed['err'] then return pushed['err'] end
redis.call('HSET', KEYS[1], ARGV[1], 'done')
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'd:' and fields[i + 1] ~= 'done' then
    return 'pushed'
  end
end
redis.call('SREM', KEYS[3], ARGV[3])
return 'pushed'
"#;

/// Accepts a request taken off `msgbus.system.local`: writes its backlog (every
/// destination `sending`) and takes the entry off the processing list, together.
/// Retried after an unanswered attempt, it finds the backlog and does nothing more.
///
/// KEYS: processing list, backlog, outbox. ARGV: entry, ttl, uid, max outbox size, then
/// field/value pairs of the backlog.
/// Returns `accepted`, `busy` (the outbox is full: try again later), `gone` (the entry
/// is no longer there), or Redis's error (OOM).
pub const ACCEPT_REQUEST: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'accepted' end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then return 'busy' end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
local set = redis.pcall('HSET', KEYS[2], unpack(fields))
if type(set) == 'table' and set['err'] then return set['err'] end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 'gone'
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 'accepted'
"#;

/// Takes an entry off a processing list and, when the entry was still there, pushes
/// what the peer answers it with (an error for a malformed request). Run twice, the
/// second run finds no entry and pushes nothing.
///
/// KEYS: processing list, and the list to push to (if any). ARGV: entry, and the JSON
/// to push (if any). Returns `done` or `gone`.
pub const CONSUME_ENTRY: &str = r#"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 'gone' end
if KEYS[2] then
  local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
  if type(pushed) == 'table' and pushed['err'] then return pushed['err'] end
end
return 'done'
"#;

/// Moves up to ARGV[1] more entries from the consuming end of KEYS[1] onto KEYS[2] (its
/// processing list), as `BLMOVE` does one, and returns them: a worker that found one
/// entry takes what else is waiting in the same round trip as its accept, instead of one
/// blocking move per entry. Like `BLMOVE`, an entry moved whose answer is lost stays on
/// the processing list, which the next start puts back.
pub const TAKE_MORE: &str = r#"
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not entry then break end
  moved[#moved + 1] = entry
end
return moved
"#;

/// Moves destinations of a request from one state to another (only those in the
/// `from` state: a reply that came first already made them `done`).
///
/// KEYS: backlog. ARGV: from, to, fields... Returns `done`, or `unknown` without a
/// backlog.
pub const MARK: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[2])
  end
end
return 'done'
"#;

/// What a script said, as the peer acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done now.
    Done,
    /// Done before (a copy, or a retry of an attempt Redis applied).
    Duplicate,
    /// The list is at its cap (entries or bytes), or the outbox is.
    Full,
    /// The seen markers are at their cap.
    Markers,
    /// The key holds something other than a list.
    WrongType,
    /// The reply's sender is not a destination of the request.
    Stranger,
    /// No backlog for the request (expired, or never ours).
    Unknown,
    /// The entry was no longer on its processing list.
    Gone,
    /// Another error from Redis, e.g. OOM.
    Refused(String),
}

impl Outcome {
    /// Reads a script's status.
    pub fn parse(status: &str) -> Outcome {
        match status {
            "pushed" | "accepted" | "done" => Outcome::Done,
            "duplicate" => Outcome::Duplicate,
            "full" | "busy" => Outcome::Full,
            "markers" => Outcome::Markers,
            "wrongtype" => Outcome::WrongType,
            "stranger" => Outcome::Stranger,
            "unknown" => Outcome::Unknown,
            "gone" => Outcome::Gone,
            e if e.starts_with("WRONGTYPE") => Outcome::WrongType,
            other => Outcome::Refused(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlogs_read_back_as_written() {
        let tracked = Tracked {
            uid: "u".into(),
            reference: Some("r".into()),
            reply_to: "app.ret".into(),
            command: "calc.add".into(),
            destinations: vec![7, 12],
            timestamp: 100,
            deadline: 160,
        };
        let mut fields: HashMap<String, String> =
            backlog_fields(&tracked, Some("{}")).into_iter().collect();
        assert_eq!(fields[REQUEST_FIELD], "{}");
        fields.insert("d:12".into(), DONE.into());
        let (back, states) = tracked_from_fields("u", &fields).unwrap();
        assert_eq!(back, tracked);
        assert_eq!(states, [(7, SENDING.into()), (12, DONE.into())]);
        fields.remove("ref");
        assert_eq!(tracked_from_fields("u", &fields).unwrap().0.reference, None);
        fields.remove("ret");
        assert_eq!(tracked_from_fields("u", &fields), None);
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(Outcome::parse("pushed"), Outcome::Done);
        assert_eq!(Outcome::parse("busy"), Outcome::Full);
        assert_eq!(
            Outcome::parse("WRONGTYPE Operation against a key holding the wrong kind of value"),
            Outcome::WrongType
        );
        assert_eq!(
            Outcome::parse("OOM command not allowed"),
            Outcome::Refused("OOM command not allowed".into())
        );
    }
}
