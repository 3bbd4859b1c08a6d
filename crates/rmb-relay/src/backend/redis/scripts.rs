//! The Lua scripts that change the relay's state in Redis. Each decision that touches
//! several keys (store a frame and account for it, remove written frames, hand a
//! session to a new instance) is one script, so it is atomic however many instances
//! share the Redis, and many of them go to Redis in one pipeline (one round trip).
//!
//! Scripts are sent by hash (`EVALSHA`); a Redis that does not know them (restarted,
//! or flushed) answers `NOSCRIPT` to each, and exactly those commands are sent again
//! after loading the scripts, so none runs twice.
//!
//! The accounting keys ([`super::wire::twin_key`], [`super::wire::TOTAL_KEY`]) change
//! only inside these scripts, in the same step as the queue they count, so they never
//! drift from it. Key names are built inside `sweep` from the session; the backend
//! needs a single Redis (or a primary with replicas), not a cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, Value};

/// Lua: leaves `entry` in `instance`'s inbox set and wakes it (its wake list holds at
/// most one element); both expire after `ttl` unless poked again. An entry already in
/// the inbox was poked since the instance last looked, so it is woken already: under
/// load most pokes stop at the `SADD` (every nested call costs Redis CPU).
macro_rules! poke_fn {
    () => {
        r#"
local function poke(inbox_prefix, wake_prefix, instance, entry, ttl)
  local inbox, wake = inbox_prefix .. instance, wake_prefix .. instance
  if redis.call('SADD', inbox, entry) == 0 then return end
  redis.call('EXPIRE', inbox, ttl)
  redis.call('RPUSH', wake, '1')
  redis.call('LTRIM', wake, -1, -1)
  redis.call('EXPIRE', wake, ttl)
end
"#
    };
}

/// Lua: the relay's memory of accepted envelopes (design D1a), shared by its instances:
/// a sorted set of de-dup keys (16 hex digits each) scored by the unix second until
/// which each is remembered. `is_copy`: one of the keys (`''`: none) is remembered and
/// not expired. `remember`: adds the keys, first forgetting the entries nearest their
/// end while the set holds `max` keys; returns how many still-live ones it forgot.
/// Time is Redis's, so instances agree on it.
macro_rules! seen_fn {
    () => {
        r#"
local seen_now = tonumber(redis.call('TIME')[1])
local function is_copy(set, k1, k2)
  for _, k in ipairs({k1, k2}) do
    if k ~= '' then
      local until_ = redis.call('ZSCORE', set, k)
      if until_ and tonumber(until_) > seen_now then return true end
    end
  end
  return false
end
local function remember(set, max, until_, k1, k2)
  local evicted, cap = 0, tonumber(max)
  for _, k in ipairs({k1, k2}) do
    if k ~= '' then
      while redis.call('ZCARD', set) >= cap do
        local gone = redis.call('ZPOPMIN', set)
        if not gone[2] then break end
        if tonumber(gone[2]) > seen_now then evicted = evicted + 1 end
      end
      redis.call('ZADD', set, until_, k)
    end
  end
  return evicted
end
"#
    };
}

/// Stores a frame in a session's queue, within the session's, the destination twin's
/// and the relay's bounds, and pokes the instance holding the session.
///
/// KEYS: queue, twin accounting, total accounting, owner, expiry set, seen set.
/// ARGV: stored frame, deadline, session, session bytes field, this instance,
/// require an owner (`1`/`0`), session frames, session bytes, twin frames, twin bytes,
/// total frames, total bytes, inbox prefix, wake prefix, inbox ttl, then the
/// [`seen_fn`] arguments (most keys, remember until, message key, signature key).
/// Returns `{status, owner, dropped, id, evicted}`; status 0: nobody holds the session
/// (nothing stored), 1: stored, 2: the twin's bounds are reached, 3: the relay's are,
/// 4: a copy of an envelope stored before (nothing stored).
/// Over the session's bounds its oldest frames are dropped to make room (and counted).
pub(super) const APPEND: &str = concat!(
    poke_fn!(),
    seen_fn!(),
    r#"
local owner = redis.call('GET', KEYS[4])
if ARGV[6] == '1' and not owner then return {0, '', 0, '', 0} end
owner = owner or ''
if is_copy(KEYS[6], ARGV[18], ARGV[19]) then return {4, owner, 0, '', 0} end
local size = string.len(ARGV[1])
local slen = redis.call('XLEN', KEYS[1])
local sbytes = tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')
local sf, sb = tonumber(ARGV[7]), tonumber(ARGV[8])
local drop, dropped_bytes, cursor = {}, 0, '-'
while slen - #drop > 0 and (slen - #drop + 1 > sf or sbytes - dropped_bytes + size > sb) do
  local e = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', 1)[1]
  if not e then break end
  drop[#drop + 1] = e[1]
  dropped_bytes = dropped_bytes + string.len(e[2][2])
  cursor = '(' .. e[1]
end
local df, db = 1 - #drop, size - dropped_bytes
local function over(key, max_f, max_b)
  local fb = redis.call('HMGET', key, 'f', 'b')
  local f, b = tonumber(fb[1] or '0'), tonumber(fb[2] or '0')
  return (df > 0 and f + df > tonumber(max_f)) or (db > 0 and b + db > tonumber(max_b))
end
if over(KEYS[2], ARGV[9], ARGV[10]) then return {2, owner, 0, '', 0} end
if over(KEYS[3], ARGV[11], ARGV[12]) then return {3, owner, 0, '', 0} end
for _, id in ipairs(drop) do redis.call('XDEL', KEYS[1], id) end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'f', df)
redis.call('HINCRBY', KEYS[2], 'b', db)
redis.call('HINCRBY', KEYS[2], ARGV[4], db)
redis.call('HINCRBY', KEYS[3], 'f', df)
redis.call('HINCRBY', KEYS[3], 'b', db)
redis.call('ZADD', KEYS[5], 'GT', ARGV[2], ARGV[3])
if owner ~= '' and owner ~= ARGV[5] then
  poke(ARGV[13], ARGV[14], owner, 'D' .. ARGV[3], ARGV[15])
end
local evicted = remember(KEYS[6], ARGV[16], ARGV[17], ARGV[18], ARGV[19])
return {1, owner, #drop, id, evicted}
"#
);

/// Removes frames that were written (or expired) from a session's queue and releases
/// their accounting; deletes the queue once empty.
///
/// KEYS: queue, twin accounting, total accounting, expiry set.
/// ARGV: session bytes field, session, then pairs of entry id and stored length.
/// Returns how many entries were still there (a frame dropped meanwhile for room, or
/// removed by another instance, is not counted twice).
pub(super) const ACK: &str = r#"
local n, bytes = 0, 0
for i = 3, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    n = n + 1
    bytes = bytes + tonumber(ARGV[i + 1])
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[2], 'f', -n)
  redis.call('HINCRBY', KEYS[2], 'b', -bytes)
  redis.call('HINCRBY', KEYS[2], ARGV[1], -bytes)
  redis.call('HINCRBY', KEYS[3], 'f', -n)
  redis.call('HINCRBY', KEYS[3], 'b', -bytes)
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[2])
  if tonumber(redis.call('HGET', KEYS[2], 'f') or '0') <= 0 then redis.call('DEL', KEYS[2]) end
end
return n
"#;

/// Reads a session's queue after an entry, at most a count and (but for the first
/// entry) a number of bytes.
///
/// KEYS: queue. ARGV: start (`-` or `(<id>`), most entries, most bytes.
/// Returns `{{id, stored frame}, ...}`.
pub(super) const READ: &str = r#"
local out, bytes, start = {}, 0, ARGV[1]
local max_n, max_b = tonumber(ARGV[2]), tonumber(ARGV[3])
while #out < max_n and bytes < max_b do
  local batch = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 16)
  for _, e in ipairs(batch) do
    if #out >= max_n or bytes >= max_b then break end
    out[#out + 1] = {e[1], e[2][2]}
    bytes = bytes + string.len(e[2][2])
    start = '(' .. e[1]
  end
  if #batch < 16 then break end
end
return out
"#;

/// A session connected to this instance: it becomes the owner (the newest connection
/// wins) and the previous owner, if another instance, is told to close its connection.
///
/// KEYS: owner. ARGV: this instance, owner ttl, inbox prefix, wake prefix, session.
/// Returns the previous owner or ''.
pub(super) const CLAIM: &str = concat!(
    poke_fn!(),
    r#"
local prev = redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'GET')
if prev and prev ~= ARGV[1] then poke(ARGV[3], ARGV[4], prev, 'K' .. ARGV[5], ARGV[2]) end
return prev or ''
"#
);

/// Heartbeat of one session: keeps the owner mark if it is still ours (or was lost),
/// never takes it from a newer connection elsewhere.
///
/// KEYS: owner. ARGV: this instance, owner ttl. Returns the owner before, or ''.
pub(super) const REFRESH: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return v or ''
"#;

/// A session left this instance: drop the owner mark if it is still ours.
///
/// KEYS: owner. ARGV: this instance.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Deletes the queues of offline sessions whose every frame has expired, with their
/// accounting. A session that is connected somewhere is looked at again a minute later
/// (its feeder removes expired frames as it reads them).
///
/// KEYS: expiry set, total accounting. ARGV: now, most queues, key prefix.
/// Returns the number of frames deleted.
pub(super) const SWEEP: &str = r#"
local gone = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  if redis.call('EXISTS', ARGV[3] .. 'owner.' .. m) == 1 then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + 60, m)
  else
    local q = ARGV[3] .. 'q.' .. m
    local twin = ARGV[3] .. 'twin.' .. string.match(m, '^%d+')
    local field = 'b.' .. m
    local n = redis.call('XLEN', q)
    local b = tonumber(redis.call('HGET', twin, field) or '0')
    redis.call('DEL', q)
    redis.call('HDEL', twin, field)
    redis.call('HINCRBY', twin, 'f', -n)
    redis.call('HINCRBY', twin, 'b', -b)
    redis.call('HINCRBY', KEYS[2], 'f', -n)
    redis.call('HINCRBY', KEYS[2], 'b', -b)
    if tonumber(redis.call('HGET', twin, 'f') or '0') <= 0 then redis.call('DEL', twin) end
    redis.call('ZREM', KEYS[1], m)
    gone = gone + n
  end
end
return gone
"#;

/// Stores an envelope to federate in the outbox stream, within the outbox's bounds.
///
/// KEYS: outbox, outbox accounting, seen set. ARGV: stored frame, most frames, most
/// bytes, then the [`seen_fn`] arguments.
/// Returns `{1, '', 0, id, evicted}`, `{2, '', 0, '', 0}` when the outbox is full, or
/// `{4, '', 0, '', 0}` for a copy of an envelope stored before.
pub(super) const OUTBOX_PUT: &str = concat!(
    seen_fn!(),
    r#"
if is_copy(KEYS[3], ARGV[6], ARGV[7]) then return {4, '', 0, '', 0} end
local size = string.len(ARGV[1])
local f = tonumber(redis.call('HGET', KEYS[2], 'f') or '0')
local b = tonumber(redis.call('HGET', KEYS[2], 'b') or '0')
if f + 1 > tonumber(ARGV[2]) or b + size > tonumber(ARGV[3]) then return {2, '', 0, '', 0} end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'f', 1)
redis.call('HINCRBY', KEYS[2], 'b', size)
local evicted = remember(KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {1, '', 0, id, evicted}
"#
);

/// An outbox entry is done with: acknowledged, deleted, released from the accounting.
///
/// KEYS: outbox, outbox accounting. ARGV: group, entry id, stored length.
pub(super) const OUTBOX_DONE: &str = r#"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'f', -1)
  redis.call('HINCRBY', KEYS[2], 'b', -tonumber(ARGV[3]))
end
return 1
"#;

/// Takes over the outbox entries held by instances that are no longer alive (their
/// liveness mark expired), and forgets those instances once they hold nothing.
///
/// KEYS: outbox. ARGV: group, this instance, liveness key prefix, most entries.
/// Returns `{{id, stored frame}, ...}`, now this instance's.
pub(super) const RECLAIM: &str = r#"
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
local consumers = summary[4]
local out, max = {}, tonumber(ARGV[4])
if not consumers then return out end
for _, c in ipairs(consumers) do
  local name = c[1]
  if #out < max and name ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. name) == 0 then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', max - #out, name)
    local ids = {}
    for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
    if #ids > 0 then
      for _, e in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
        out[#out + 1] = {e[1], e[2][2]}
      end
    end
    if #pending < max then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name) end
  end
end
return out
"#;

/// Every script, with its hash; [`Scripts::run`] sends pipelines of them.
pub(super) struct Scripts {
    all: Vec<redis::Script>,
    timeout: Duration,
}

/// Which script a command runs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Lua {
    Append,
    Ack,
    Read,
    Claim,
    Refresh,
    Release,
    Sweep,
    OutboxPut,
    OutboxDone,
    Reclaim,
}

const CODE: [&str; 10] = [
    APPEND,
    ACK,
    READ,
    CLAIM,
    REFRESH,
    RELEASE,
    SWEEP,
    OUTBOX_PUT,
    OUTBOX_DONE,
    RECLAIM,
];

impl Scripts {
    /// `timeout`: longest wait for Redis's answer to one pipeline; past it the caller
    /// gets an error (a hung Redis must not hang the relay's sessions).
    pub(super) fn new(timeout: Duration) -> Self {
        Scripts {
            all: CODE.iter().map(|code| redis::Script::new(code)).collect(),
            timeout,
        }
    }

    /// A command running `lua` with `keys` and `args`.
    pub(super) fn call(&self, lua: Lua, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.all[lua as usize].get_hash())
            .arg(keys.len())
            .arg(keys);
        cmd
    }

    /// Sends `cmds` (script calls only) in one pipeline; returns each one's answer,
    /// a server error as `Err` in its slot. An `Err` of the whole call means the
    /// connection failed: any of them may or may not have run.
    pub(super) async fn run(
        &self,
        redis: &mut ConnectionManager,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        let mut answers = self.send(redis, &cmds).await?;
        let unknown: Vec<usize> = answers
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a, Err(e) if e.kind() == ErrorKind::NoScriptError))
            .map(|(i, _)| i)
            .collect();
        if unknown.is_empty() {
            return Ok(answers);
        }
        self.load(redis).await?;
        let again: Vec<Cmd> = unknown.iter().map(|&i| cmds[i].clone()).collect();
        for (i, answer) in unknown.into_iter().zip(self.send(redis, &again).await?) {
            answers[i] = answer;
        }
        Ok(answers)
    }

    async fn send(
        &self,
        redis: &mut ConnectionManager,
        cmds: &[Cmd],
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        let mut pipe = Pipeline::with_capacity(cmds.len());
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        let values = tokio::time::timeout(
            self.timeout,
            redis.req_packed_commands(&pipe, 0, cmds.len()),
        )
        .await
        .map_err(|_| RedisError::from((ErrorKind::IoError, "redis did not answer in time")))??;
        Ok(values.into_iter().map(Value::extract_error).collect())
    }

    async fn load(&self, redis: &mut ConnectionManager) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        for code in CODE {
            pipe.cmd("SCRIPT").arg("LOAD").arg(code);
        }
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(redis))
            .await
            .map_err(|_| RedisError::from((ErrorKind::IoError, "redis did not answer in time")))?
    }
}
