//! The example apps in examples/python run against two real rmb-peers, as an app in
//! another language would use them. Skipped (with a note) when python3 or its `redis`
//! package is missing; `scripts/test` installs the package when it can.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use rmb_testkit::TestRegistrar;
use tokio::process::Command;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/python")
}

async fn python_with_redis() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn python_service_and_client_talk_through_two_peers() {
    if !python_with_redis().await {
        eprintln!("skipped: python3 with the redis package is not installed (pip install redis)");
        return;
    }
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (_caller, caller_redis) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (server, server_redis) = peer(&reg, &[&relay], PeerOpts::default()).await;

    let mut service = Command::new("python3")
        .arg(examples().join("service.py"))
        .args(["--redis", &server_redis.url(), "--count", "2"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = |data: &str| {
        Command::new("python3")
            .arg(examples().join("client.py"))
            .args([
                "--redis",
                &caller_redis.url(),
                "--dst",
                &server.twin_id().to_string(),
            ])
            .args(["--cmd", "calc.add", "--data", data, "--timeout", "20"])
            .output()
    };
    let ok = client("[2, 3]").await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "5");

    let bad = client("not json").await.unwrap();
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
