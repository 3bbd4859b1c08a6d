//! The Redis backend's background tasks: this instance's inbox (pokes from other
//! instances) and the heartbeat that keeps its marks alive.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::wire::{self, InboxEntry};
use super::{Inner, Lua};

/// Inbox entries taken per round trip.
const INBOX_BATCH: usize = 256;
/// Sessions refreshed per heartbeat pipeline.
const HEARTBEAT_BATCH: usize = 512;

/// Waits on this instance's wake list with a dedicated connection (a blocking pop
/// would stall the shared one), then takes the inbox set in batches. The wait times out
/// every second, so a lost wake-up delays a poke by a second at most.
pub(super) async fn inbox_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let wake = wire::wake_key(&inner.id);
    let inbox = wire::inbox_key(&inner.id);
    let mut backoff = Duration::from_millis(100);
    'reconnect: loop {
        let conn = async {
            redis::Client::open(inner.url.as_str())?
                .get_multiplexed_async_connection()
                .await
        };
        let mut conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = conn => match c {
                Ok(c) => { backoff = Duration::from_millis(100); c }
                Err(e) => {
                    tracing::warn!(error = %e, "redis inbox connection failed, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'reconnect;
                }
            }
        };
        loop {
            let mut blpop = redis::cmd("BLPOP");
            blpop.arg(&wake).arg(1.0);
            let woken: Result<Option<(String, String)>, _> = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = blpop.query_async(&mut conn) => r,
            };
            if let Err(e) = woken {
                tracing::warn!(error = %e, "redis inbox read failed, reconnecting");
                continue 'reconnect;
            }
            loop {
                let mut spop = redis::cmd("SPOP");
                spop.arg(&inbox).arg(INBOX_BATCH);
                let entries: Result<Vec<String>, _> = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = spop.query_async(&mut conn) => r,
                };
                match entries {
                    Ok(entries) => {
                        let full = entries.len() == INBOX_BATCH;
                        for raw in entries {
                            handle(&inner, &raw).await;
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis inbox read failed, reconnecting");
                        continue 'reconnect;
                    }
                }
            }
        }
    }
}

async fn handle(inner: &Inner, raw: &str) {
    match InboxEntry::decode(raw) {
        Some(InboxEntry::Drain(key)) => {
            if let Some(mailbox) = inner.local.connected_mailbox(&key) {
                mailbox.signal_arrival();
            }
        }
        Some(InboxEntry::Kick(key)) => {
            if inner.local.connected_mailbox(&key).is_none() {
                return;
            }
            // The kick may be older than a connection that came back here since: close
            // only if the mark says the session is held elsewhere now.
            let mut redis = inner.redis.clone();
            let owner: Result<Option<String>, _> = redis::cmd("GET")
                .arg(wire::owner_key(&key))
                .query_async(&mut redis)
                .await;
            match owner {
                Ok(Some(owner)) if owner == inner.id => {}
                _ => {
                    if inner.local.kick(&key) {
                        tracing::info!(session = %key, "session connected on another instance: closing it here");
                    }
                }
            }
        }
        None => tracing::warn!(entry = raw, "ignoring a malformed relay inbox entry"),
    }
}

/// Refreshes this instance's liveness mark and the owner marks of its sessions, in
/// pipelines. A mark that had been lost (Redis restarted without its data) is set again
/// and the session's queue read again (pokes may have been lost with it); a mark taken
/// by a newer connection elsewhere closes the connection here.
pub(super) async fn heartbeat_loop(
    inner: Arc<Inner>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = beat(&inner).await {
            tracing::warn!(error = %e, "redis heartbeat failed");
        }
    }
}

/// Sets (or refreshes) this instance's liveness mark.
pub(super) async fn announce(inner: &Inner) -> Result<(), redis::RedisError> {
    let mut redis = inner.redis.clone();
    redis::cmd("SET")
        .arg(wire::alive_key(&inner.id))
        .arg(1)
        .arg("EX")
        .arg(inner.owner_ttl_secs)
        .query_async::<()>(&mut redis)
        .await
}

async fn beat(inner: &Inner) -> Result<(), redis::RedisError> {
    announce(inner).await?;
    let mut redis = inner.redis.clone();
    let sessions = inner.local.connected();
    for chunk in sessions.chunks(HEARTBEAT_BATCH) {
        let cmds = chunk
            .iter()
            .map(|(key, _)| {
                let mut cmd = inner.scripts.call(Lua::Refresh, &[&wire::owner_key(key)]);
                cmd.arg(&inner.id).arg(inner.owner_ttl_secs);
                cmd
            })
            .collect();
        let answers = inner.scripts.run(&mut redis, cmds).await?;
        for ((key, mailbox), answer) in chunk.iter().zip(answers) {
            let before: String = redis::from_owned_redis_value(answer?)?;
            if before.is_empty() {
                mailbox.signal_arrival();
            } else if before != inner.id && inner.local.kick(key) {
                tracing::info!(session = %key, "session connected on another instance: closing it here");
            }
        }
    }
    Ok(())
}
