//! Pushes to Redis lists in batches: requests of remote twins to their services, and
//! replies to the apps.
//!
//! A batch is one pipeline of scripts, each applied at most once however often it is
//! sent (see [`store`](crate::store)), so a batch retried after the connection dropped
//! pushes nothing twice. A failure that may pass (Redis down, a timeout) retries the
//! batch until each write's deadline; one that would not (a key of the wrong type, Redis
//! out of memory) fails that write alone, and the sender of a refused request is told.

use std::sync::Arc;
use std::time::Duration;

use redis::{ErrorKind, Script};
use rmb_core::peer_api::ErrorCode;
use rmb_core::time::now;
use rmb_core::Address;
use rmb_sdk::Outgoing;
use tokio::sync::{mpsc, OwnedSemaphorePermit, TryAcquireError};

use crate::peer::{Shared, Stats};
use crate::redis_conn::{is_transient, Redis};
use crate::store::{self, Outcome};

/// Most writes sent in one round trip.
const BATCH: usize = 256;

/// A write waiting for Redis, holding its share of the pending-bytes budget.
pub(crate) struct Queued {
    job: Job,
    /// Unix second after which the write is pointless (its envelope expired).
    deadline: u64,
    _permit: OwnedSemaphorePermit,
}

pub(crate) enum Job {
    /// A remote twin's request, for the service list `list`.
    Request {
        list: String,
        seen: String,
        json: String,
        ttl: u64,
        /// What the seen marker holds (the schema and deadline, for the reply).
        marker: String,
        from: Address,
        uid: String,
    },
    /// A reply (or an error the peer reports) for the app, for destination `field` of
    /// request `uid`.
    Reply {
        uid: String,
        field: String,
        ret: String,
        json: String,
        /// Push even if Redis has no backlog (the peer remembers the request).
        unchecked: bool,
    },
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Request {
                list, json, marker, ..
            } => list.len() + json.len() + marker.len() + 128,
            Job::Reply {
                uid,
                ret,
                json,
                field,
                ..
            } => uid.len() + ret.len() + json.len() + field.len() + 64,
        }
    }
}

/// Why a write was not queued.
pub(crate) enum NotQueued {
    /// The pending-bytes budget is spent (Redis is down or slow).
    Busy,
    /// The peer is shutting down.
    Closed,
}

/// Queues `job` if the pending-bytes budget allows it now.
pub(crate) fn try_queue(shared: &Shared, job: Job, deadline: u64) -> Result<(), NotQueued> {
    let bytes = budget(shared, &job);
    let permit = match shared.pending.clone().try_acquire_many_owned(bytes) {
        Ok(p) => p,
        Err(TryAcquireError::NoPermits) => return Err(NotQueued::Busy),
        Err(TryAcquireError::Closed) => return Err(NotQueued::Closed),
    };
    let queued = Queued {
        job,
        deadline,
        _permit: permit,
    };
    shared.writer.try_send(queued).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => NotQueued::Busy,
        mpsc::error::TrySendError::Closed(_) => NotQueued::Closed,
    })
}

/// Queues `job`, waiting for room (replies for apps are worth the wait; the writer
/// drops them at their deadline).
pub(crate) async fn queue(shared: &Shared, job: Job, deadline: u64) {
    let bytes = budget(shared, &job);
    let permit = tokio::select! {
        p = shared.pending.clone().acquire_many_owned(bytes) => p,
        _ = shared.cancel.cancelled() => return,
    };
    let Ok(permit) = permit else { return };
    let queued = Queued {
        job,
        deadline,
        _permit: permit,
    };
    let _ = shared.writer.send(queued).await;
}

/// The permits `job` takes: its bytes, but never more than the whole budget (a write
/// bigger than that waits until it has the budget to itself).
fn budget(shared: &Shared, job: &Job) -> u32 {
    job.bytes()
        .min(shared.limits.pending_bytes)
        .try_into()
        .unwrap_or(u32::MAX)
}

struct Scripts {
    request: Script,
    reply: Script,
}

pub(crate) async fn run(shared: Arc<Shared>, mut writes: mpsc::Receiver<Queued>) {
    let mut redis = shared.redis();
    let scripts = Scripts {
        request: Script::new(store::PUSH_REQUEST),
        reply: Script::new(store::PUSH_REPLY),
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = tokio::select! {
            w = writes.recv() => w,
            _ = shared.cancel.cancelled() => None,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if !write_batch(&shared, &mut redis, &scripts, &mut batch).await {
            return;
        }
    }
}

/// Writes the batch, retrying transient failures; false when shutting down.
async fn write_batch(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    batch: &mut Vec<Queued>,
) -> bool {
    let backoff = redis.backoff();
    let mut delay = backoff.min;
    let mut failures = 0u32;
    loop {
        let now = now();
        batch.retain(|w| {
            let live = w.deadline > now;
            if !live {
                tracing::warn!(
                    "dropped a message for Redis: it expired while Redis was unavailable"
                );
            }
            live
        });
        if batch.is_empty() {
            return true;
        }
        let mut pipe = redis::pipe();
        for w in batch.iter() {
            invoke(&mut pipe, scripts, &shared.limits, &w.job);
        }
        let result = match redis.conn(Duration::ZERO).await {
            Ok(mut conn) => pipe.query_async::<Vec<String>>(&mut conn).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(statuses) => {
                for (w, status) in batch.drain(..).zip(statuses) {
                    settle(shared, w.job, Outcome::parse(&status));
                }
                if failures > 0 {
                    tracing::info!("redis is back: pushes done after {failures} failures");
                }
                return true;
            }
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                // A pipeline runs scripts by hash: Redis (re)started without them.
                if let Err(e) = load_scripts(redis, scripts).await {
                    Stats::inc(&shared.stats.redis_errors);
                    redis.reset();
                    tracing::warn!("redis: loading the push scripts failed ({e}); retrying");
                } else {
                    continue;
                }
            }
            Err(e) if is_transient(&e) => {
                Stats::inc(&shared.stats.redis_errors);
                redis.reset();
                failures += 1;
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!("redis: pushing messages failed ({e}); retrying");
                }
            }
            Err(e) => {
                // One write Redis will never take must not hold up the others: try them
                // one by one, keep the ones that failed transiently for the retry.
                Stats::inc(&shared.stats.redis_errors);
                tracing::warn!("redis: a batch of pushes failed ({e}); trying them one by one");
                let mut keep = Vec::new();
                for w in batch.drain(..) {
                    let mut pipe = redis::pipe();
                    invoke(&mut pipe, scripts, &shared.limits, &w.job);
                    let one = match redis.conn(Duration::ZERO).await {
                        Ok(mut conn) => pipe.query_async::<(String,)>(&mut conn).await,
                        Err(e) => Err(e),
                    };
                    match one {
                        Ok((status,)) => settle(shared, w.job, Outcome::parse(&status)),
                        Err(e) if is_transient(&e) => keep.push(w),
                        Err(e) => settle(shared, w.job, Outcome::Refused(e.to_string())),
                    }
                }
                *batch = keep;
                if batch.is_empty() {
                    return true;
                }
                redis.reset();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.cancel.cancelled() => return false,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

async fn load_scripts(redis: &mut Redis, scripts: &Scripts) -> redis::RedisResult<()> {
    let mut conn = redis.conn(Duration::ZERO).await?;
    scripts
        .request
        .prepare_invoke()
        .load_async(&mut conn)
        .await?;
    scripts.reply.prepare_invoke().load_async(&mut conn).await?;
    Ok(())
}

fn invoke(pipe: &mut redis::Pipeline, scripts: &Scripts, limits: &crate::Limits, job: &Job) {
    match job {
        Job::Request {
            list,
            seen,
            json,
            ttl,
            marker,
            ..
        } => {
            pipe.invoke_script(
                scripts
                    .request
                    .key(list)
                    .key(seen)
                    .arg(json)
                    .arg(ttl)
                    .arg(limits.command_list_entries)
                    .arg(limits.command_list_bytes)
                    .arg(marker),
            );
        }
        Job::Reply {
            uid,
            field,
            ret,
            json,
            unchecked,
        } => {
            pipe.invoke_script(
                scripts
                    .reply
                    .key(store::backlog_key(uid))
                    .key(ret)
                    .key(store::OUTBOX)
                    .arg(field)
                    .arg(json)
                    .arg(uid)
                    .arg(if *unchecked { "1" } else { "0" }),
            );
        }
    }
}

/// Acts on what became of a write.
fn settle(shared: &Shared, job: Job, outcome: Outcome) {
    match (job, outcome) {
        (_, Outcome::Done) => Stats::inc(&shared.stats.pushed),
        (_, Outcome::Duplicate) => Stats::inc(&shared.stats.duplicates),
        (
            Job::Request {
                list, from, uid, ..
            },
            refused,
        ) => {
            Stats::inc(&shared.stats.refused);
            let message = match refused {
                Outcome::Full => format!(
                    "busy: the service's queue {list} is full ({} requests or {} bytes); try \
                     again later",
                    shared.limits.command_list_entries, shared.limits.command_list_bytes
                ),
                Outcome::WrongType => {
                    format!("the peer cannot queue requests: its key {list} is not a list")
                }
                other => format!("the peer cannot queue the request: {other:?}"),
            };
            tracing::warn!(uid, %from, "refused a request: {message}");
            refuse(shared, from, uid, ErrorCode::Other, message);
        }
        (Job::Reply { uid, ret, .. }, Outcome::Stranger) => {
            tracing::info!(
                uid,
                ret,
                "dropped a reply from a twin the request did not go to"
            );
        }
        (Job::Reply { uid, .. }, Outcome::Unknown) => {
            tracing::info!(uid, "reply to an unknown or expired request dropped");
        }
        (Job::Reply { uid, ret, .. }, other) => {
            tracing::warn!(uid, ret, "cannot push a reply to the app: {other:?}");
        }
    }
}

/// Answers a remote request with an error, in the background (the writer never waits
/// for the relays).
pub(crate) fn refuse(shared: &Shared, to: Address, uid: String, code: ErrorCode, message: String) {
    let reply = Outgoing::error(
        uid,
        shared.client.address().clone(),
        to,
        code.code(),
        message,
        Some(rmb_sdk::DEFAULT_SCHEMA.into()),
        rmb_core::time::DEFAULT_TTL,
    );
    shared.send_in_background(reply);
}
