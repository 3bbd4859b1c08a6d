//! What a previous run left in Redis, taken up again at start, and the outbox kept to
//! the requests still waiting.
//!
//! - Entries on the processing lists were taken but not finished: they go back to the
//!   consuming end of their source list, oldest first, and are handled as new.
//! - Requests in the outbox were accepted. A destination still `sending` was handed to
//!   the relays without a confirmation: it may or may not have been delivered, and
//!   sending it again could run it twice at a receiver that does not de-duplicate, so
//!   the app gets an error saying so. A destination `sent` waits for its reply as
//!   before; if none has come when the request expires (the previous run may have
//!   taken it to its grave), the app gets an error instead of silence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands as _, Script};
use rmb_core::peer_api::{ErrorCode, SYSTEM_LOCAL, SYSTEM_REPLY};
use rmb_core::time::now;

use crate::peer::{Shared, Stats};
use crate::redis_conn::{Redis, Stop};
use crate::store;
use crate::translate::{self, Tracked};
use crate::writer::{self, Job};

/// How often the outbox is cleared of requests whose backlog expired.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Entries moved back per script call (so Redis is never blocked for long).
const MOVE_CHUNK: usize = 1000;

/// Moves up to ARGV[1] entries from the head of KEYS[1] (the newest) to the consuming
/// end of KEYS[2], so the oldest ends up consumed first. Returns how many moved.
const MOVE_BACK: &str = r#"
local moved = 0
while moved < tonumber(ARGV[1]) do
  if not redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') then break end
  moved = moved + 1
end
return moved
"#;

/// Runs the recovery; false if the peer shut down meanwhile.
pub(crate) async fn run(shared: &Arc<Shared>) -> bool {
    let mut redis = shared.redis();
    for source in [SYSTEM_LOCAL, SYSTEM_REPLY] {
        match move_back(shared, &mut redis, source).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("put {n} unfinished entries back on {source}"),
            Err(Stop::Cancelled) => return false,
            Err(Stop::Permanent(e)) => tracing::error!("cannot recover {source}: {e}"),
        }
    }
    let uids: Vec<String> = match shared
        .retry(
            &mut redis,
            "reading the outbox",
            Duration::ZERO,
            |mut c| async move { c.smembers(store::OUTBOX).await },
        )
        .await
    {
        Ok(uids) => uids,
        Err(Stop::Cancelled) => return false,
        Err(Stop::Permanent(e)) => {
            tracing::error!("cannot read the outbox: {e}");
            Vec::new()
        }
    };
    let mut awaiting = Vec::new();
    for uid in uids {
        let Some(found) = read_backlog(shared, &mut redis, &uid).await else {
            if shared.cancel.is_cancelled() {
                return false;
            }
            continue;
        };
        let (tracked, states) = found;
        Stats::inc(&shared.stats.recovered);
        shared.remember(&tracked, now());
        for (twin, state) in states {
            match state.as_str() {
                store::SENDING => {
                    let message = "rmb-peer stopped before a relay confirmed this request: it \
                                   may or may not have been delivered, and it was not sent \
                                   again so that it cannot run twice";
                    answer(shared, &tracked, twin, message).await;
                }
                store::SENT => awaiting.push((tracked.clone(), twin)),
                _ => {}
            }
        }
    }
    if !awaiting.is_empty() {
        tracing::info!(
            requests = awaiting.len(),
            "waiting for replies to requests sent before the restart"
        );
        awaiting.sort_by_key(|(t, _)| t.deadline);
        tokio::spawn(expire(shared.clone(), awaiting));
    }
    true
}

/// The app's error for destination `twin` of `tracked` (pushed unless it was answered).
async fn answer(shared: &Shared, tracked: &Tracked, twin: u32, message: &str) {
    let error = ErrorCode::Other.with_message(message);
    let json = translate::error_reply(tracked.reference.clone(), twin.to_string(), error, now());
    let job = Job::Reply {
        uid: tracked.uid.clone(),
        field: store::destination_field(twin),
        ret: tracked.reply_to.clone(),
        json,
        unchecked: false,
    };
    writer::queue(shared, job, tracked.deadline + store::BACKLOG_GRACE).await;
}

/// At each request's deadline, an error for each destination still unanswered.
async fn expire(shared: Arc<Shared>, awaiting: Vec<(Tracked, u32)>) {
    for (tracked, twin) in awaiting {
        let wait = tracked.deadline.saturating_sub(now());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let message = "no reply before the request expired: rmb-peer restarted while waiting \
                       for it, and the reply may have been lost";
        answer(&shared, &tracked, twin, message).await;
    }
}

async fn move_back(shared: &Shared, redis: &mut Redis, source: &str) -> Result<u64, Stop> {
    let script = Script::new(MOVE_BACK);
    let processing = store::processing_list(source);
    let mut total = 0;
    loop {
        let moved = shared
            .retry(
                redis,
                "recovering unfinished entries",
                Duration::ZERO,
                |mut c| {
                    let mut invocation = script.prepare_invoke();
                    invocation.key(processing).key(source).arg(MOVE_CHUNK);
                    async move { invocation.invoke_async::<u64>(&mut c).await }
                },
            )
            .await?;
        total += moved;
        for _ in 0..moved {
            Stats::inc(&shared.stats.recovered);
        }
        if moved < MOVE_CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// The backlog of `uid`, or `None` (and the uid leaves the outbox) if it expired.
async fn read_backlog(
    shared: &Shared,
    redis: &mut Redis,
    uid: &str,
) -> Option<(Tracked, Vec<(u32, String)>)> {
    let key = store::backlog_key(uid);
    let fields: HashMap<String, String> = shared
        .retry(redis, "reading a backlog", Duration::ZERO, |mut c| {
            let key = key.clone();
            async move { c.hgetall(key).await }
        })
        .await
        .unwrap_or_default();
    let found = store::tracked_from_fields(uid, &fields);
    if found.is_none() {
        let _ = shared
            .retry(
                redis,
                "clearing the outbox",
                Duration::ZERO,
                |mut c| async move { c.srem::<_, _, i64>(store::OUTBOX, uid).await },
            )
            .await;
    }
    found
}

/// Every [`SWEEP_EVERY`], drops from the outbox the requests whose backlog expired
/// (destinations that never answered), so the outbox holds only live requests.
pub(crate) async fn sweep(shared: Arc<Shared>) {
    let mut redis = shared.redis();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let uids: Vec<String> = match redis.conn(Duration::ZERO).await {
            Ok(mut c) => c.smembers(store::OUTBOX).await.unwrap_or_default(),
            Err(_) => continue,
        };
        if uids.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for uid in &uids {
            pipe.exists(store::backlog_key(uid));
        }
        let Ok(mut conn) = redis.conn(Duration::ZERO).await else {
            continue;
        };
        let Ok(exists) = pipe.query_async::<Vec<bool>>(&mut conn).await else {
            redis.reset();
            continue;
        };
        let gone: Vec<&String> = uids
            .iter()
            .zip(exists)
            .filter_map(|(uid, exists)| (!exists).then_some(uid))
            .collect();
        if !gone.is_empty() {
            let _: Result<i64, _> = conn.srem(store::OUTBOX, gone).await;
        }
    }
}
