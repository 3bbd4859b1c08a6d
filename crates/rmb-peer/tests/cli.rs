//! The real `rmb-peer` binary started with the original rmb-peer's command lines
//! (threefoldtech/rmb-rs, src/bins/rmb-peer.rs and the scripts that run it), with the
//! registrar given the one way the original's lines leave open: RMB_REGISTRAR.

mod common;

use std::ffi::OsStr;

use common::{random_secret, Relay};
use rmb_testkit::{Process, RedisServer, TestRegistrar};

const BIN: &str = env!("CARGO_BIN_EXE_rmb-peer");

/// Starts the binary with `args` and RMB_REGISTRAR, waiting for the original's readiness
/// line, on a blocking thread so the in-process registrar and relay keep serving.
async fn start(args: Vec<String>, registrar: String) -> (Process, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let env = [("RMB_REGISTRAR", OsStr::new(&registrar))];
        Process::start_until(BIN, &args, &env, |l| l.contains("now connected"))
    })
    .await
    .unwrap()
    .expect("rmb-peer starts and connects")
}

fn twin_of(line: &str) -> u32 {
    line.split("twin=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no twin id in {line}"))
}

#[tokio::test]
async fn the_original_command_line_starts_the_peer() {
    let reg = TestRegistrar::start().await.unwrap();
    let r1 = Relay::start("127.0.0.1", &reg.url()).await;
    let r2 = Relay::start("127.0.0.6", &reg.url()).await;
    let redis = RedisServer::start().unwrap();
    // As rmb-rs tools/rmb_tester/test_live_nodes.sh runs it, with a second relay after
    // the same --relay (the original takes up to three there) and a counted -d.
    let args = vec![
        "-m".into(),
        random_secret(),
        "--substrate".into(),
        "wss://tfchain.grid.tf:443".into(),
        "--relay".into(),
        r1.ws_url(),
        r2.ws_url(),
        "--redis".into(),
        redis.url(),
        "-dd".into(),
    ];
    let (_peer, ready) = start(args, reg.url()).await;
    let record = reg
        .client()
        .get_twin(twin_of(&ready))
        .await
        .unwrap()
        .unwrap();
    let mut relays = record.relays.clone();
    relays.sort();
    assert_eq!(relays, [r1.domain(), r2.domain()], "both relays registered");
}

#[tokio::test]
async fn the_deprecated_seed_flag_and_no_update_work() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let redis = RedisServer::start().unwrap();
    let secret = random_secret();
    let base = |flag: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            flag.into(),
            secret.clone(),
            "-k".into(),
            "ed25519".into(),
            "--relay".into(),
            relay.ws_url(),
            "-r".into(),
            redis.url(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (first, ready) = start(base("--seed", &[]), reg.url()).await;
    let twin = twin_of(&ready);
    drop(first);
    // Registered now, so --no-update finds the same twin without touching its record.
    let (_second, ready) = start(base("--mnemonics", &["--no-update"]), reg.url()).await;
    assert_eq!(twin_of(&ready), twin);
}

#[test]
fn without_a_registrar_the_original_line_is_refused_with_a_reason() {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .args(["-m", "0x00", "--substrate", "wss://tfchain.grid.tf:443"])
        .args(["--relay", "wss://relay.grid.tf:443"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not on TFChain") && stderr.contains("RMB_REGISTRAR"),
        "{stderr}"
    );
}
