//! What the SDK verified and handed over: requests of remote twins for local services,
//! replies and relay errors for local apps. Each becomes a write for the
//! [`writer`](crate::writer); nothing here waits for the relays.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;
use rmb_core::peer_api::{check_command, ErrorCode, JsonError};
use rmb_core::time::{now, MAX_TTL};
use rmb_sdk::{Event, Incoming, Kind};
use tokio::sync::mpsc;

use crate::peer::{Shared, Stats};
use crate::redis_conn::Redis;
use crate::store;
use crate::translate::{self, RequestInfo, Tracked};
use crate::writer::{self, Job, NotQueued};

pub(crate) async fn run(shared: Arc<Shared>, mut events: mpsc::Receiver<Event>) {
    let mut redis = shared.redis();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = shared.cancel.cancelled() => None,
        };
        match event {
            None => return,
            Some(Event::Request(msg)) => request(&shared, msg),
            Some(Event::Reply(msg)) => {
                Stats::inc(&shared.stats.incoming_replies);
                let uid = msg.uid.clone();
                let Some((tracked, in_memory)) = find_tracked(&shared, &mut redis, &uid).await
                else {
                    tracing::info!(uid, source = %msg.source, "reply to an unknown or expired request dropped");
                    continue;
                };
                let twin = msg.source.twin;
                if !tracked.destinations.contains(&twin) {
                    tracing::info!(
                        uid,
                        twin,
                        "dropped a reply from a twin the request did not go to"
                    );
                    continue;
                }
                let json = translate::incoming_reply(&msg, &tracked);
                reply(
                    &shared,
                    &tracked,
                    store::destination_field(twin),
                    json,
                    in_memory,
                )
                .await;
            }
            Some(Event::RelayError { uid, message }) => {
                Stats::inc(&shared.stats.incoming_replies);
                let Some((tracked, in_memory)) = find_tracked(&shared, &mut redis, &uid).await
                else {
                    tracing::info!(uid, "relay error for an unknown or expired request dropped");
                    continue;
                };
                // A relay error names no destination: for a request to one twin it is
                // that twin's answer; for several, it is pushed once on its own.
                let field = match tracked.destinations[..] {
                    [twin] => store::destination_field(twin),
                    _ => store::RELAY_ERROR_FIELD.to_string(),
                };
                let error = JsonError {
                    code: ErrorCode::Relay.code(),
                    message,
                };
                let json =
                    translate::error_reply(tracked.reference.clone(), "0".into(), error, now());
                reply(&shared, &tracked, field, json, in_memory).await;
            }
        }
    }
}

/// A remote twin's request: answered by the peer (`rmb.version`), refused, or queued
/// for its service's list.
fn request(shared: &Shared, msg: Incoming) {
    Stats::inc(&shared.stats.incoming_requests);
    let now = now();
    if translate::is_version_request(&msg) {
        shared.send_in_background(translate::version_reply(&msg, shared.client.address(), now));
        return;
    }
    let Kind::Request { command } = &msg.kind else {
        return;
    };
    if let Err(refused) = check_command(command) {
        Stats::inc(&shared.stats.refused);
        tracing::warn!(uid = msg.uid, source = %msg.source, "refused a request: {refused}");
        let message = format!("rmb-peer refuses the request: {refused}");
        writer::refuse(
            shared,
            msg.source,
            msg.uid,
            ErrorCode::InvalidMessage,
            message,
        );
        return;
    }
    // What the peer keeps for the request lives no longer than a peer accepts a request
    // to live, whatever its sender claims.
    let deadline = msg
        .timestamp
        .saturating_add(msg.expiration)
        .min(now.saturating_add(MAX_TTL));
    let info = RequestInfo {
        schema: msg.schema.clone(),
        deadline,
    };
    shared.requests.insert(
        format!("{}|{}", msg.source, msg.uid),
        info.clone(),
        deadline,
        info.size(),
        now,
    );
    let Some((list, json)) = translate::incoming_request(&msg) else {
        return;
    };
    let (from, uid) = (msg.source.clone(), msg.uid.clone());
    let job = Job::Request {
        list,
        seen: store::seen_key(&msg.source, &msg.uid),
        json,
        ttl: deadline.saturating_sub(now).max(1),
        marker: info.to_marker(),
        from: msg.source,
        uid: msg.uid,
    };
    if let Err(NotQueued::Busy) = writer::try_queue(shared, job, deadline) {
        Stats::inc(&shared.stats.refused);
        tracing::warn!(uid, %from, "refused a request: too much is waiting for Redis");
        let message = "busy: the peer's Redis is not keeping up; try again later".to_string();
        writer::refuse(shared, from, uid, ErrorCode::Other, message);
    }
}

/// Queues an answer for destination `field` of a local request.
async fn reply(shared: &Shared, tracked: &Tracked, field: String, json: String, in_memory: bool) {
    let job = Job::Reply {
        uid: tracked.uid.clone(),
        field,
        ret: tracked.reply_to.clone(),
        json,
        unchecked: in_memory,
    };
    writer::queue(shared, job, tracked.deadline + store::BACKLOG_GRACE).await;
}

/// The local request `uid`: from memory (`true`), else from its backlog in Redis. One
/// attempt at Redis: a reply arriving while Redis is down must not hold up the others.
pub(crate) async fn find_tracked(
    shared: &Shared,
    redis: &mut Redis,
    uid: &str,
) -> Option<(Tracked, bool)> {
    let now = now();
    if let Some(tracked) = shared.backlogs.get(uid, now) {
        return Some((tracked, true));
    }
    let fields: HashMap<String, String> = match redis.conn(Duration::ZERO).await {
        Ok(mut conn) => match conn.hgetall(store::backlog_key(uid)).await {
            Ok(fields) => fields,
            Err(e) => {
                Stats::inc(&shared.stats.redis_errors);
                redis.reset();
                tracing::warn!(uid, "cannot read a backlog: {e}");
                return None;
            }
        },
        Err(e) => {
            Stats::inc(&shared.stats.redis_errors);
            tracing::warn!(uid, "cannot read a backlog: {e}");
            return None;
        }
    };
    let (tracked, _) = store::tracked_from_fields(uid, &fields)?;
    shared.remember(&tracked, now);
    Some((tracked, false))
}
