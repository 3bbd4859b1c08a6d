//! The real `rmb-peer` binary killed with SIGKILL, on a real redis-server, and started
//! again: what it accepted is neither lost nor run twice (issue 13).
//!
//! Copies reach the restarted peer the way they do in production when a relay forgot
//! them: the relay (in-memory) is restarted too, so its own de-duplication is empty and
//! only the peer's memory in Redis stands between a copy and a second run.

mod common;

use std::ffi::OsStr;
use std::sync::Arc;

use common::{random_secret, service, RawTwin, Relay, WAIT};
use parking_lot::Mutex;
use redis::AsyncCommands as _;
use rmb_core::proto::{Message, Payload};
use rmb_core::Envelope;
use rmb_testkit::{Process, RedisServer, TestRegistrar};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rmb-peer");

/// The binary, as an operator runs it: one identity, one relay, one Redis.
struct PeerProcess {
    args: Vec<String>,
    registrar: String,
}

impl PeerProcess {
    /// Starts it and waits until it is connected to its relay; returns its twin id.
    async fn start(&self) -> (Process, u32) {
        let (args, registrar) = (self.args.clone(), self.registrar.clone());
        let (process, ready) = tokio::task::spawn_blocking(move || {
            let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
            let env = [("RMB_REGISTRAR", OsStr::new(&registrar))];
            Process::start_until(BIN, &args, &env, |l| l.contains("now connected"))
        })
        .await
        .unwrap()
        .expect("rmb-peer starts and connects");
        let twin = ready
            .split("twin=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no twin id in {ready}"));
        (process, twin)
    }
}

/// What both tests run on: a registrar, an in-memory relay, a redis-server, and the
/// binary's command line for a fresh identity on them (not started yet).
struct Setup {
    reg: TestRegistrar,
    relay: Relay,
    /// Kept so the server lives as long as the test.
    redis: RedisServer,
    url: String,
    binary: PeerProcess,
}

impl Setup {
    async fn start() -> Setup {
        let reg = TestRegistrar::start().await.unwrap();
        let relay = Relay::start("127.0.0.1", &reg.url()).await;
        let redis = RedisServer::start().unwrap();
        let url = redis.url();
        let binary = PeerProcess {
            args: vec![
                "-m".into(),
                random_secret(),
                "--relay".into(),
                relay.ws_url(),
                "--redis".into(),
                url.clone(),
            ],
            registrar: reg.url(),
        };
        Setup {
            reg,
            relay,
            redis,
            url,
            binary,
        }
    }
}

/// SIGKILL: `Process` kills its child with SIGKILL when dropped, and reaps it.
fn sigkill(process: Process) {
    drop(process);
}

/// The next response the raw twin gets: its uid and payload.
async fn response(raw: &mut RawTwin) -> (String, Vec<u8>) {
    let env: Envelope = raw.recv().await;
    match env.message {
        Some(Message::Response(_)) => match env.payload {
            Some(Payload::Plain(body)) => (env.uid, body),
            other => panic!("expected a plain payload, got {other:?}"),
        },
        other => panic!("expected a response, got {other:?} for {}", env.uid),
    }
}

/// Polls `url` until list `key` holds `n` entries (a readiness wait, bounded by WAIT).
async fn wait_for_len(url: &str, key: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut c = common::conn(url).await.unwrap();
    loop {
        let len: usize = c.llen(key).await.unwrap();
        if len == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never held {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// An echo service on `url` that records the `ref` of every request it is given.
fn recording_service(url: &str, seen: &Arc<Mutex<Vec<String>>>) -> tokio::task::JoinHandle<()> {
    let seen = seen.clone();
    service(url, "work", move |req: &Value| {
        seen.lock().push(req["ref"].as_str().unwrap().to_string());
        common::echo(req)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_with_sigkill_loses_nothing_and_runs_nothing_twice() {
    let Setup {
        reg,
        mut relay,
        redis: _redis,
        url,
        binary,
    } = Setup::start().await;
    let (peer, twin) = binary.start().await;
    let mut raw = RawTwin::connect(&reg, &relay).await;
    let seen = Arc::new(Mutex::new(Vec::new()));

    // A request run and answered before the kill.
    let answered = raw.request("answered", twin, "work", b"one");
    raw.send(answered.clone()).await;
    let svc = recording_service(&url, &seen);
    assert_eq!(
        response(&mut raw).await,
        ("answered".into(), b"one".to_vec())
    );
    svc.abort();
    let _ = svc.await;
    // A request pushed to its service's list, not yet taken by the service.
    let queued = raw.request("queued", twin, "work", b"two");
    raw.send(queued.clone()).await;
    wait_for_len(&url, "msgbus.work", 1).await;
    // The reply leaves its processing list once a relay confirmed it; killed before
    // that, the peer would send it again (a harmless copy, but not what this counts).
    wait_for_len(&url, "msgbus.system.reply.processing", 0).await;

    sigkill(peer);
    relay.restart().await;
    raw.reconnect(&relay).await;
    let (peer, again) = binary.start().await;
    assert_eq!(again, twin);

    // A copy of the answered request is not run again: its kept reply is sent instead.
    raw.send(answered.clone()).await;
    assert_eq!(
        response(&mut raw).await,
        ("answered".into(), b"one".to_vec())
    );
    // The queued request survived the kill: the service gets it, its reply goes out.
    let svc = recording_service(&url, &seen);
    assert_eq!(response(&mut raw).await, ("queued".into(), b"two".to_vec()));

    // Once more, after that reply was kept: a copy of the queued request is not run.
    wait_for_len(&url, "msgbus.system.reply.processing", 0).await;
    sigkill(peer);
    relay.restart().await;
    raw.reconnect(&relay).await;
    let (_peer, _) = binary.start().await;
    raw.send(queued.clone()).await;
    assert_eq!(response(&mut raw).await, ("queued".into(), b"two".to_vec()));
    raw.send(answered).await;
    assert_eq!(
        response(&mut raw).await,
        ("answered".into(), b"one".to_vec())
    );

    assert_eq!(
        *seen.lock(),
        ["answered", "queued"],
        "each request ran once"
    );
    let mut c = common::conn(&url).await.unwrap();
    let left: usize = c.llen("msgbus.work").await.unwrap();
    assert_eq!(left, 0, "no copy was pushed to the service");
    svc.abort();
}

/// Polls `url` until hash `key` has `field` = `value`.
async fn wait_for_field(url: &str, key: &str, field: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut c = common::conn(url).await.unwrap();
    loop {
        let got: Option<String> = c.hget(key, field).await.unwrap();
        if got.as_deref() == Some(value) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} {field} never {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The next request the raw twin gets: its uid, command and sender.
async fn incoming_request(raw: &mut RawTwin) -> (String, String, rmb_core::Address) {
    let env: Envelope = raw.recv().await;
    match env.message {
        Some(Message::Request(r)) => (env.uid, r.command, env.source.unwrap()),
        other => panic!("expected a request, got {other:?} for {}", env.uid),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_with_sigkill_loses_no_request_and_answers_each_once() {
    let Setup {
        reg,
        relay,
        redis: _redis,
        url,
        binary,
    } = Setup::start().await;
    let (peer, _) = binary.start().await;
    let mut raw = RawTwin::connect(&reg, &relay).await;
    let to = [raw.id];

    // A request sent and confirmed by the relay, not yet answered, at the kill.
    common::lpush(
        &url,
        "msgbus.system.local",
        &common::request("sent", "work", "", &to, "app.ret"),
    )
    .await;
    let (uid, command, peer_address) = incoming_request(&mut raw).await;
    assert_eq!(command, "work");
    let backlog = rmb_core::peer_api::backlog_key(&uid);
    wait_for_field(&url, &backlog, &format!("d:{}", raw.id), "sent").await;
    sigkill(peer);

    // While it is down: an app hands over a request, and (the state a kill right after
    // the peer's BLMOVE leaves) another sits on the processing list.
    common::lpush(
        &url,
        "msgbus.system.local",
        &common::request("waiting", "work", "", &to, "app.ret"),
    )
    .await;
    common::lpush(
        &url,
        "msgbus.system.local.processing",
        &common::request("taken", "work", "", &to, "app.ret"),
    )
    .await;
    let (_peer, _) = binary.start().await;

    // The reply to the request sent before the kill reaches the app, from the backlog
    // in Redis; the other two are sent once each after the restart.
    let answer = raw.response(&uid, &peer_address, b"done");
    raw.send(answer).await;
    let mut later = Vec::new();
    for _ in 0..2 {
        let (uid, command, from) = incoming_request(&mut raw).await;
        assert_eq!(command, "work");
        assert_ne!(later.first(), Some(&uid), "a request was sent twice");
        let answer = raw.response(&uid, &from, b"done");
        raw.send(answer).await;
        later.push(uid);
    }
    let mut refs = Vec::new();
    for _ in 0..3 {
        let reply = common::brpop(&url, "app.ret").await;
        assert_eq!(reply["err"], Value::Null, "{reply}");
        refs.push(reply["ref"].as_str().unwrap().to_string());
    }
    refs.sort();
    assert_eq!(refs, ["sent", "taken", "waiting"]);
    let mut c = common::conn(&url).await.unwrap();
    for list in [
        "app.ret",
        "msgbus.system.local",
        "msgbus.system.local.processing",
    ] {
        let len: usize = c.llen(list).await.unwrap();
        assert_eq!(len, 0, "{list} is empty");
    }
}
