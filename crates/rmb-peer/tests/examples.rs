//! The example apps in examples/python and examples/node run against two real
//! rmb-peers, as apps in other languages use them. Each is skipped (with a note) when its
//! interpreter or Redis client package is missing; `scripts/test` installs the packages
//! when it can.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use rmb_testkit::TestRegistrar;
use tokio::process::Command;

fn examples(lang: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(lang)
}

/// True when `program` can run `check` (an import of its Redis client) in `dir`.
async fn available(program: &str, check: &[&str], dir: &PathBuf) -> bool {
    Command::new(program)
        .args(check)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Starts the example service next to one peer, calls it with the example client next
/// to the other, and checks a sum and an error reply.
async fn service_and_client_talk_through_two_peers(
    program: &str,
    dir: PathBuf,
    service: &str,
    client: &str,
) {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (_caller, caller_redis) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (server, server_redis) = peer(&reg, &[&relay], PeerOpts::default()).await;

    let mut service = Command::new(program)
        .arg(dir.join(service))
        .args(["--redis", &server_redis.url(), "--count", "2"])
        .current_dir(&dir)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let call = |data: &str| {
        Command::new(program)
            .arg(dir.join(client))
            .args([
                "--redis",
                &caller_redis.url(),
                "--dst",
                &server.twin_id().to_string(),
            ])
            .args(["--cmd", "calc.add", "--data", data, "--timeout", "20"])
            .current_dir(&dir)
            .output()
    };
    let ok = call("[2, 3]").await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "5");

    let bad = call("not json").await.unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error 400"));
    let status = tokio::time::timeout(WAIT, service.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the service exits after its two requests");
}

#[tokio::test]
async fn python_example_apps() {
    let dir = examples("python");
    if !available("python3", &["-c", "import redis"], &dir).await {
        eprintln!("skipped: python3 with the redis package is not installed (pip install redis)");
        return;
    }
    service_and_client_talk_through_two_peers("python3", dir, "service.py", "client.py").await;
}

#[tokio::test]
async fn node_example_apps() {
    let dir = examples("node");
    if !available("node", &["-e", "require('redis')"], &dir).await {
        eprintln!(
            "skipped: node with the redis package is not installed (npm install in examples/node)"
        );
        return;
    }
    service_and_client_talk_through_two_peers("node", dir, "service.js", "client.js").await;
}
