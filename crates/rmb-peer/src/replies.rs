//! Services' replies: moved off `msgbus.system.reply` onto a processing list, sent to
//! the requester, then removed. A crash in between leaves the reply on the processing
//! list and the next start sends it again; a copy of a reply is harmless (receivers and
//! our relays drop it, the original's clients match replies to calls by uid).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands as _, Script};
use rmb_core::peer_api::SYSTEM_REPLY;
use rmb_core::time::now;
use rmb_core::Address;
use rmb_sdk::{Outgoing, Sent, Unconfirmed};

use crate::local::{next_entry, TAKE_MORE};
use crate::memory;
use crate::peer::{Shared, Stats};
use crate::redis_conn::Redis;
use crate::store;
use crate::translate::{self, RequestInfo};
use crate::writer::{self, Job};

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut redis = shared.redis();
    let take_more = Script::new(store::TAKE_MORE);
    let mut entries = Vec::new();
    loop {
        if entries.is_empty() {
            match next_entry(&shared, &mut redis, SYSTEM_REPLY).await {
                Some(entry) => entries.push(entry),
                None => return,
            }
        }
        // The batch's replies are sent together (each is kept in Redis before it goes,
        // so their round trips overlap) while the next entries are taken.
        let conn = redis.conn(Duration::ZERO).await.ok();
        let sends = join_all(
            entries
                .drain(..)
                .map(|entry| handle(&shared, conn.clone(), entry)),
        );
        let (handled, more) = tokio::join!(sends, take(&shared, &mut redis, &take_more));
        if handled.contains(&false) {
            return;
        }
        entries = more;
    }
}

/// Up to [`TAKE_MORE`] more replies moved onto the processing list (none if Redis
/// failed: the next blocking move retries).
async fn take(shared: &Shared, redis: &mut Redis, script: &Script) -> Vec<Vec<u8>> {
    let Ok(mut conn) = redis.conn(Duration::ZERO).await else {
        return Vec::new();
    };
    let mut invocation = script.key(SYSTEM_REPLY);
    invocation.key(store::REPLY_PROCESSING).arg(TAKE_MORE);
    match invocation.invoke_async(&mut conn).await {
        Ok(moved) => moved,
        Err(e) => {
            Stats::inc(&shared.stats.redis_errors);
            if crate::redis_conn::is_transient(&e) {
                redis.reset();
            }
            Vec::new()
        }
    }
}

/// Sends one reply taken off `msgbus.system.reply`; it leaves the processing list once
/// a relay confirmed it (or at once if it cannot be sent). False when shutting down.
async fn handle(shared: &Arc<Shared>, conn: Option<MultiplexedConnection>, entry: Vec<u8>) -> bool {
    let sent = match std::str::from_utf8(&entry) {
        Ok(json) => reply(shared, conn, json).await,
        Err(_) => {
            Stats::inc(&shared.stats.malformed);
            tracing::warn!("malformed message on {SYSTEM_REPLY}: not UTF-8");
            None
        }
    };
    let Some(sent) = sent else {
        remove(shared, entry).await;
        return true;
    };
    // The reply leaves the processing list once a relay confirmed it, waited for
    // aside so this worker takes the next one meanwhile.
    let aside = shared.clone();
    shared
        .aside(async move {
            match sent.confirmed().await {
                // Shutting down: it stays on the processing list for the next start.
                Err(Unconfirmed::Closed) => {}
                outcome => {
                    if let Err(why) = outcome {
                        tracing::info!("a reply was not confirmed: {why}");
                    }
                    remove(&aside, entry).await;
                }
            }
        })
        .await
}

/// Sends the service's reply (or tells the requester what is wrong with it); the
/// handle of the reply sent, to wait for its confirmation.
async fn reply(shared: &Shared, conn: Option<MultiplexedConnection>, json: &str) -> Option<Sent> {
    let me = shared.client.address().clone();
    let known = known_request(shared, conn, json).await;
    let reply = translate::local_reply(json, &me, |_, _| known);
    let out = match reply {
        Ok(out) => out,
        Err(bad) => {
            Stats::inc(&shared.stats.malformed);
            tracing::warn!("malformed message on {SYSTEM_REPLY}: {}", bad.message);
            // Tell the requester, when we can tell who and which request.
            let to = bad
                .reply_to
                .as_deref()
                .and_then(|d| d.parse::<Address>().ok());
            if let (Some(to), Some(uid)) = (to, bad.reference) {
                let out = Outgoing::error(
                    uid,
                    me,
                    to,
                    bad.code.code(),
                    bad.message,
                    None,
                    rmb_core::time::DEFAULT_TTL,
                );
                let _ = shared.send(out).await;
            }
            return None;
        }
    };
    match shared.send(out).await {
        Ok(sent) => {
            Stats::inc(&shared.stats.replies_sent);
            Some(sent)
        }
        Err(e) => {
            tracing::warn!("cannot send a reply: {e}");
            None
        }
    }
}

/// What the peer remembers of the request a reply answers (its schema and deadline):
/// from memory, else from the request's seen marker in Redis (after a restart).
async fn known_request(
    shared: &Shared,
    conn: Option<MultiplexedConnection>,
    json: &str,
) -> Option<RequestInfo> {
    let (dst, uid) = translate::reply_target(json)?;
    if let Some(info) = shared.requests.get(&format!("{dst}|{uid}"), now()) {
        return Some(info);
    }
    let source: Address = dst.parse().ok()?;
    let key = shared
        .memory
        .request_key(&source, shared.client.address(), &uid);
    let marker: Option<String> = conn?.get(memory::seen_key(key)).await.ok()?;
    RequestInfo::from_marker(&marker?)
}

/// Takes a handled reply off the processing list (queued for the writer, which batches
/// and retries).
async fn remove(shared: &Shared, entry: Vec<u8>) {
    let job = Job::Remove {
        list: store::REPLY_PROCESSING,
        entry,
    };
    let deadline = now().saturating_add(rmb_core::time::MAX_TTL);
    writer::queue(shared, job, deadline).await;
}
