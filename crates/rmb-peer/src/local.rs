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
use rmb_core::peer_api::{ErrorCode, JsonError, SYSTEM_LOCAL};
use rmb_core::time::now;
use rmb_sdk::{Outgoing, Resend, Sent, Unconfirmed};

use crate::peer::{Shared, Stats};
use crate::redis_conn::{Redis, Stop};
use crate::store::{self, Outcome};
use crate::translate::{self, LocalRequest, PreparedRequest, Tracked};
use crate::writer::{self, Job};

/// Seconds a blocking move waits before looping (to notice shutdown).
pub(crate) const MOVE_TIMEOUT: f64 = 1.0;
/// Pause before trying again to accept a request while the outbox is full.
const OUTBOX_FULL_PAUSE: Duration = Duration::from_millis(100);

/// Entries a worker takes off its source list in one round trip, besides the one its
/// blocking move found.
pub(crate) const TAKE_MORE: usize = 32;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut redis = shared.redis();
    let scripts = Scripts::default();
    let mut entries = Vec::new();
    loop {
        if entries.is_empty() {
            match next_entry(&shared, &mut redis, SYSTEM_LOCAL).await {
                Some(entry) => entries.push(entry),
                None => return,
            }
        }
        entries = batch(&shared, &mut redis, &scripts, std::mem::take(&mut entries)).await;
        if shared.cancel.is_cancelled() {
            // What was taken stays on the processing list for the next start.
            return;
        }
    }
}

struct Scripts {
    accept: Script,
    consume: Script,
    take_more: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            accept: Script::new(store::ACCEPT_REQUEST),
            consume: Script::new(store::CONSUME_ENTRY),
            take_more: Script::new(store::TAKE_MORE),
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

/// Handles entries taken off `msgbus.system.local`: the valid ones are accepted in one
/// pipeline, sent together with a take of up to [`TAKE_MORE`] entries waiting behind
/// them (so a busy peer pays one round trip per batch, and an idle one waits no longer
/// than before), then sent.
/// Returns the entries taken for the next batch.
async fn batch(
    shared: &Arc<Shared>,
    redis: &mut Redis,
    scripts: &Scripts,
    entries: Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let mut ready = Vec::with_capacity(entries.len());
    for entry in entries {
        Stats::inc(&shared.stats.requests_popped);
        match String::from_utf8(entry) {
            Ok(entry) => {
                if let Some(prepared) = prepare(shared, redis, scripts, &entry).await {
                    ready.push((entry, prepared));
                }
            }
            Err(e) => {
                Stats::inc(&shared.stats.malformed);
                tracing::warn!("malformed message on {SYSTEM_LOCAL}: not UTF-8");
                consume(shared, redis, scripts, e.as_bytes(), None).await;
            }
        }
    }
    let (statuses, more) = accept_all(shared, redis, scripts, &ready).await;
    for ((entry, prepared), status) in ready.into_iter().zip(statuses) {
        let accepted = match status {
            Some(Outcome::Done) => true,
            Some(Outcome::Gone) => false,
            // Not accepted at once (the outbox is full, Redis refused, or the pipeline
            // failed): the one-by-one accept waits and retries as before.
            _ => accept(shared, redis, scripts, &entry, &prepared).await,
        };
        if accepted {
            let tracked = prepared.tracked;
            shared.remember(&tracked, now());
            send_all(shared, tracked, prepared.envelopes).await;
        }
    }
    more
}

/// Parses a request; `None` (after answering or dropping it) if it will not be sent.
async fn prepare(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    entry: &str,
) -> Option<PreparedRequest> {
    let uid = uuid::Uuid::new_v4().to_string();
    let me = shared.client.address().clone();
    match translate::local_request(entry, &uid, &me, now()) {
        Ok(LocalRequest::Send(p)) => Some(p),
        Ok(LocalRequest::Expired { reference, age }) => {
            Stats::inc(&shared.stats.expired_dropped);
            tracing::info!(?reference, age, "dropping an expired request");
            consume(shared, redis, scripts, entry.as_bytes(), None).await;
            None
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
            None
        }
    }
}

/// One attempt at accepting every request of `ready` (one pipeline) and, sent right
/// behind it on the same connection, at taking the next entries. Each request's outcome
/// (`None` for all when the pipeline failed: the one-by-one accept retries them), and
/// the entries taken. The take is a query of its own so that a failed accept never
/// hides which entries it moved.
async fn accept_all(
    shared: &Shared,
    redis: &mut Redis,
    scripts: &Scripts,
    ready: &[(String, PreparedRequest)],
) -> (Vec<Option<Outcome>>, Vec<Vec<u8>>) {
    let mut statuses = vec![None; ready.len()];
    let mut conn = match redis.conn(Duration::ZERO).await {
        Ok(conn) => conn,
        Err(_) => return (statuses, Vec::new()),
    };
    let mut pipe = redis::pipe();
    for (entry, prepared) in ready {
        pipe.invoke_script(&accept_invocation(shared, scripts, entry, prepared));
    }
    let mut take_conn = conn.clone();
    let mut take = scripts.take_more.key(SYSTEM_LOCAL);
    take.key(store::LOCAL_PROCESSING).arg(TAKE_MORE);
    let accepting = async {
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        pipe.query_async::<Vec<String>>(&mut conn).await
    };
    let (accepted, taken) =
        tokio::join!(accepting, take.invoke_async::<Vec<Vec<u8>>>(&mut take_conn));
    let mut failure = None;
    match accepted {
        Ok(got) if got.len() == ready.len() => {
            for (status, got) in statuses.iter_mut().zip(got) {
                *status = Some(Outcome::parse(&got));
            }
        }
        Ok(_) => {}
        Err(e) => failure = Some(e),
    }
    let more = match taken {
        Ok(more) => more,
        Err(e) => {
            failure.get_or_insert(e);
            Vec::new()
        }
    };
    if let Some(e) = failure {
        Stats::inc(&shared.stats.redis_errors);
        if e.kind() == redis::ErrorKind::NoScriptError {
            // A pipeline runs scripts by hash: Redis (re)started without them.
            for script in [&scripts.accept, &scripts.take_more] {
                let _ = script.prepare_invoke().load_async(&mut conn).await;
            }
        } else if crate::redis_conn::is_transient(&e) {
            redis.reset();
        }
        tracing::debug!("redis: accepting a batch failed ({e}); one by one");
    }
    (statuses, more)
}

/// Sends the envelopes of an accepted request and, aside, waits for their
/// confirmations; answers the app for each destination it cannot send to.
pub(crate) async fn send_all(shared: &Arc<Shared>, tracked: Tracked, envelopes: Vec<Outgoing>) {
    let uid = &tracked.uid;
    let mut handed = Vec::new();
    for envelope in envelopes {
        let dst = envelope.destination.twin;
        match shared.send(envelope).await {
            Ok(sent) => {
                Stats::inc(&shared.stats.envelopes_sent);
                handed.push((dst, sent));
            }
            Err(e) => {
                tracing::info!(uid, dst, "cannot send a request: {e}");
                let error = e.code().with_message(e.to_string());
                fail(shared, &tracked, dst, error).await;
            }
        }
    }
    if handed.is_empty() {
        return;
    }
    // Confirmations come a relay round trip later: waited for aside, so this worker
    // takes the next request meanwhile (within CONFIRMING at once).
    let aside = shared.clone();
    shared
        .aside(async move { confirm(&aside, &tracked, handed).await })
        .await;
}

/// Records which envelopes a relay confirmed (`sent`), and answers the app for those
/// that no relay will (an explicit error, never a silent loss or a second copy).
async fn confirm(shared: &Shared, tracked: &Tracked, handed: Vec<(u32, Sent)>) {
    let mut confirmed = Vec::new();
    for (dst, sent) in handed {
        match sent.confirmed().await {
            Ok(()) => confirmed.push(store::destination_field(dst)),
            // Shutting down: the backlog still says `sending`, for the next start.
            Err(Unconfirmed::Closed) => {}
            Err(why) => {
                tracing::info!(uid = tracked.uid, dst, "a request was not confirmed: {why}");
                let error = ErrorCode::Other.with_message(format!("not delivered: {why}"));
                fail(shared, tracked, dst, error).await;
            }
        }
    }
    if !confirmed.is_empty() {
        let job = Job::Mark {
            uid: tracked.uid.clone(),
            from: store::SENDING,
            to: store::SENT,
            fields: confirmed,
        };
        writer::queue(shared, job, tracked.deadline + store::BACKLOG_GRACE).await;
    }
}

/// The app's error for destination `dst` of a request the peer could not deliver.
async fn fail(shared: &Shared, tracked: &Tracked, dst: u32, error: JsonError) {
    let json = translate::error_reply(tracked.reference.clone(), dst.to_string(), error, now());
    let job = Job::Reply {
        uid: tracked.uid.clone(),
        field: store::destination_field(dst),
        ret: tracked.reply_to.clone(),
        json,
        unchecked: true,
    };
    writer::queue(shared, job, tracked.deadline + store::BACKLOG_GRACE).await;
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
    loop {
        let status = shared
            .retry(redis, "accepting a request", Duration::ZERO, |mut c| {
                let invocation = accept_invocation(shared, scripts, entry, prepared);
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

/// The accept script for a request: its backlog written, its entry taken off the
/// processing list.
fn accept_invocation<'a>(
    shared: &Shared,
    scripts: &'a Scripts,
    entry: &str,
    prepared: &PreparedRequest,
) -> redis::ScriptInvocation<'a> {
    let tracked = &prepared.tracked;
    let ttl = tracked
        .deadline
        .saturating_sub(now())
        .saturating_add(store::BACKLOG_GRACE);
    // Under `--resend always` a request still `sending` at a restart is sent again,
    // which needs the request itself.
    let keep = (shared.resend == Resend::Always).then_some(entry);
    let mut invocation = scripts.accept.prepare_invoke();
    invocation
        .key(store::LOCAL_PROCESSING)
        .key(store::backlog_key(&tracked.uid))
        .key(store::OUTBOX)
        .arg(entry)
        .arg(ttl)
        .arg(&tracked.uid)
        .arg(shared.limits.outbox_entries);
    for (field, value) in store::backlog_fields(tracked, keep) {
        invocation.arg(field).arg(value);
    }
    invocation
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
