//! Services' replies: moved off `msgbus.system.reply` onto a processing list, sent to
//! the requester, then removed. A crash in between leaves the reply on the processing
//! list and the next start sends it again; a copy of a reply is harmless (receivers and
//! our relays drop it, the original's clients match replies to calls by uid).

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;
use rmb_core::peer_api::SYSTEM_REPLY;
use rmb_core::time::now;
use rmb_core::Address;
use rmb_sdk::Outgoing;

use crate::local::next_entry;
use crate::peer::{Shared, Stats};
use crate::redis_conn::{Redis, Stop};
use crate::store;
use crate::translate::{self, RequestInfo};

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut redis = shared.redis();
    while let Some(entry) = next_entry(&shared, &mut redis, SYSTEM_REPLY).await {
        match std::str::from_utf8(&entry) {
            Ok(json) => reply(&shared, &mut redis, json).await,
            Err(_) => {
                Stats::inc(&shared.stats.malformed);
                tracing::warn!("malformed message on {SYSTEM_REPLY}: not UTF-8");
            }
        }
        remove(&shared, &mut redis, &entry).await;
    }
}

async fn reply(shared: &Shared, redis: &mut Redis, json: &str) {
    let me = shared.client.address().clone();
    let known = known_request(shared, redis, json).await;
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
            return;
        }
    };
    match shared.send(out).await {
        Ok(_) => Stats::inc(&shared.stats.replies_sent),
        Err(e) => tracing::warn!("cannot send a reply: {e}"),
    }
}

/// What the peer remembers of the request a reply answers (its schema and deadline):
/// from memory, else from the request's seen marker in Redis (after a restart).
async fn known_request(shared: &Shared, redis: &mut Redis, json: &str) -> Option<RequestInfo> {
    let (dst, uid) = translate::reply_target(json)?;
    if let Some(info) = shared.requests.get(&format!("{dst}|{uid}"), now()) {
        return Some(info);
    }
    let source: Address = dst.parse().ok()?;
    let marker: Option<String> = match redis.conn(Duration::ZERO).await {
        Ok(mut conn) => conn.get(store::seen_key(&source, &uid)).await.ok()?,
        Err(_) => None,
    };
    RequestInfo::from_marker(&marker?)
}

/// Takes a handled reply off the processing list.
async fn remove(shared: &Shared, redis: &mut Redis, entry: &[u8]) {
    let removed = shared
        .retry(
            redis,
            "removing a sent reply",
            Duration::ZERO,
            |mut c| async move { c.lrem::<_, _, i64>(store::REPLY_PROCESSING, 1, entry).await },
        )
        .await;
    if let Err(Stop::Permanent(e)) = removed {
        tracing::warn!(
            "cannot remove a sent reply from {}: {e}",
            store::REPLY_PROCESSING
        );
    }
}
