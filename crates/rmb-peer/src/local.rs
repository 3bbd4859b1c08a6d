//! Requests of local apps: moved off `msgbus.system.local` onto a processing list,
//! accepted (their backlog written and the entry removed in one script), then sent, one
//! envelope per destination.
//!
//! A crash before the accept leaves the entry on the processing list, and the next
//! start puts it back; after it, the backlog says for each destination whether the
//! envelope was handed to the relays (`sending`) or confirmed (`sent`), which is what
//! [`recover`](crate::recover) needs to decide without running anything twice.

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncCommands as _, Direction, Script};
use rmb_core::peer_api::SYSTEM_LOCAL;
use rmb_core::time::now;

use crate::peer::{Shared, Stats};
use crate::redis_conn::{Redis, Stop};
use crate::store::{self, Outcome};
use crate::translate::{self, LocalRequest, PreparedRequest};
use crate::writer::{self, Job};

/// Seconds a blocking move waits before looping (to notice shutdown).
pub(crate) const MOVE_TIMEOUT: f64 = 1.0;
/// Pause before trying again to accept a request while the outbox is full.
const OUTBOX_FULL_PAUSE: Duration = Duration::from_millis(100);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut redis = shared.redis();
    let scripts = Scripts::default();
    while let Some(entry) = next_entry(&shared, &mut redis, SYSTEM_LOCAL).await {
        Stats::inc(&shared.stats.requests_popped);
        match String::from_utf8(entry) {
            Ok(entry) => request(&shared, &mut redis, &scripts, entry).await,
            Err(e) => {
                Stats::inc(&shared.stats.malformed);
                tracing::warn!("malformed message on {SYSTEM_LOCAL}: not UTF-8");
                consume(&shared, &mut redis, &scripts, e.as_bytes(), None).await;
            }
        }
    }
}

struct Scripts {
    accept: Script,
    consume: Script,
    mark: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            accept: Script::new(store::ACCEPT_REQUEST),
            consume: Script::new(store::CONSUME_ENTRY),
            mark: Script::new(store::MARK),
        }
    }
}

/// Moves the next entry of `source` onto its processing list and returns it; `None`
/// when shutting down. A source Redis cannot move from (not a list) is logged and
/// tried again at the slowest pace: it is the operator's to fix, and nothing is lost.
pub(crate) async fn next_entry(
    shared: &Shared,
    redis: &mut Redis,
    source: &str,
) -> Option<Vec<u8>> {
    let processing = store::processing_list(source);
    let what = format!("BLMOVE {source} {processing}");
    loop {
        let moved = shared
            .retry(
                redis,
                &what,
                Duration::from_secs_f64(MOVE_TIMEOUT),
                |mut c| async move {
                    c.blmove::<_, _, Option<Vec<u8>>>(
                        source,
                        processing,
                        Direction::Right,
                        Direction::Left,
                        MOVE_TIMEOUT,
                    )
                    .await
                },
            )
            .await;
        match moved {
            Ok(Some(entry)) => return Some(entry),
            Ok(None) => continue,
            Err(Stop::Cancelled) => return None,
            Err(Stop::Permanent(e)) => {
                tracing::error!("cannot take messages from {source}: {e}");
                let pause = redis.backoff().max;
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shared.cancel.cancelled() => return None,
                }
            }
        }
    }
}

async fn request(shared: &Shared, redis: &mut Redis, scripts: &Scripts, entry: String) {
    let uid = uuid::Uuid::new_v4().to_string();
    let me = shared.client.address().clone();
    let prepared = match translate::local_request(&entry, &uid, &me, now()) {
        Ok(LocalRequest::Send(p)) => p,
        Ok(LocalRequest::Expired { reference, age }) => {
            Stats::inc(&shared.stats.expired_dropped);
            tracing::info!(?reference, age, "dropping an expired request");
            consume(shared, redis, scripts, entry.as_bytes(), None).await;
            return;
        }
        Err(bad) => {
            Stats::inc(&shared.stats.malformed);
            tracing::warn!(
                reply_to = ?bad.reply_to,
                "malformed message on {SYSTEM_LOCAL}: {}",
                bad.message
            );
            let answer = bad.reply_to.map(|list| {
                let error = bad.code.with_message(bad.message);
                (
                    list,
                    translate::error_reply(bad.reference, me.to_string(), error, now()),
                )
            });
            consume(shared, redis, scripts, entry.as_bytes(), answer).await;
            return;
        }
    };
    if !accept(shared, redis, scripts, &entry, &prepared).await {
        return;
    }
    let tracked = prepared.tracked;
    shared.remember(&tracked, now());
    let mut sent = Vec::new();
    for envelope in prepared.envelopes {
        let dst = envelope.destination.twin;
        match shared.send(envelope).await {
            Ok(_) => {
                Stats::inc(&shared.stats.envelopes_sent);
                sent.push(store::destination_field(dst));
            }
            Err(e) => {
                tracing::info!(uid, dst, "cannot send a request: {e}");
                let error = e.code().with_message(e.to_string());
                let json = translate::error_reply(
                    tracked.reference.clone(),
                    dst.to_string(),
                    error,
                    now(),
                );
                let job = Job::Reply {
                    uid: uid.clone(),
                    field: store::destination_field(dst),
                    ret: tracked.reply_to.clone(),
                    json,
                    unchecked: true,
                };
                writer::queue(shared, job, tracked.deadline + store::BACKLOG_GRACE).await;
            }
        }
    }
    if !sent.is_empty() {
        mark(
            shared,
            redis,
            scripts,
            &uid,
            store::SENDING,
            store::SENT,
            &sent,
        )
        .await;
    }
}

/// Writes the request's backlog and removes its entry from the processing list; false
/// if it will not be sent (it expired while Redis refused it, or shutdown).
async fn accept(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    entry: &str,
    prepared: &PreparedRequest,
) -> bool {
    let tracked = &prepared.tracked;
    let ttl = tracked
        .deadline
        .saturating_sub(now())
        .saturating_add(store::BACKLOG_GRACE);
    let fields = store::backlog_fields(tracked);
    loop {
        let status = shared
            .retry(redis, "accepting a request", Duration::ZERO, |mut c| {
                let mut invocation = scripts.accept.prepare_invoke();
                invocation
                    .key(store::LOCAL_PROCESSING)
                    .key(store::backlog_key(&tracked.uid))
                    .key(store::OUTBOX)
                    .arg(entry)
                    .arg(ttl)
                    .arg(&tracked.uid)
                    .arg(shared.limits.outbox_entries);
                for (field, value) in &fields {
                    invocation.arg(field).arg(value);
                }
                async move { invocation.invoke_async::<String>(&mut c).await }
            })
            .await;
        let outcome = match status {
            Ok(status) => Outcome::parse(&status),
            Err(Stop::Cancelled) => return false,
            Err(Stop::Permanent(e)) => Outcome::Refused(e.to_string()),
        };
        match outcome {
            Outcome::Done => return true,
            Outcome::Gone => return false,
            // The outbox is full (or Redis is out of memory): the entry waits on the
            // processing list, and this worker with it, until there is room.
            other => {
                if now() >= tracked.deadline {
                    tracing::warn!(
                        uid = tracked.uid,
                        "dropping a request that expired waiting to be accepted ({other:?})"
                    );
                    consume(shared, redis, scripts, entry.as_bytes(), None).await;
                    return false;
                }
                if other != Outcome::Full {
                    tracing::warn!(uid = tracked.uid, "cannot accept a request yet: {other:?}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(OUTBOX_FULL_PAUSE) => {}
                    _ = shared.cancel.cancelled() => return false,
                }
            }
        }
    }
}

/// Removes `entry` from the processing list, pushing `answer` (list, JSON) if it was
/// still there.
async fn consume(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    entry: &[u8],
    answer: Option<(String, String)>,
) {
    let done = shared
        .retry(
            redis,
            "removing a processed request",
            Duration::ZERO,
            |mut c| {
                let mut invocation = scripts.consume.prepare_invoke();
                invocation.key(store::LOCAL_PROCESSING).arg(entry);
                if let Some((list, json)) = &answer {
                    invocation.key(list).arg(json);
                }
                async move { invocation.invoke_async::<String>(&mut c).await }
            },
        )
        .await;
    if let Ok(status) = done {
        if !matches!(Outcome::parse(&status), Outcome::Done | Outcome::Gone) {
            tracing::warn!(
                "cannot push an error for a malformed request to its ret list: {status}"
            );
        }
    }
}

/// Moves destinations `fields` of request `uid` from state `from` to `to`.
async fn mark(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    uid: &str,
    from: &str,
    to: &str,
    fields: &[String],
) {
    let result = shared
        .retry(
            redis,
            "recording a request's progress",
            Duration::ZERO,
            |mut c| {
                let mut invocation = scripts.mark.prepare_invoke();
                invocation.key(store::backlog_key(uid)).arg(from).arg(to);
                for field in fields {
                    invocation.arg(field);
                }
                async move { invocation.invoke_async::<i64>(&mut c).await }
            },
        )
        .await;
    if let Err(Stop::Permanent(e)) = result {
        tracing::warn!(uid, "cannot record a request's progress: {e}");
    }
}
