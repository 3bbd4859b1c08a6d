//! The real `rmb-peer` binary configured by a TOML file, and the deploy files' flags
//! checked against its `--help`.

mod common;

use std::path::Path;

use common::{random_secret, Relay};
use rmb_testkit::{refused_config, Process, RedisServer, TestRegistrar};

const BIN: &str = env!("CARGO_BIN_EXE_rmb-peer");

#[tokio::test]
async fn binary_starts_from_a_config_file() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, random_secret()).unwrap();
    let config = dir.path().join("rmb-peer.toml");
    std::fs::write(
        &config,
        format!(
            "mnemonic_file = {:?}\nkey_type = \"ed25519\"\nrelay = [{:?}]\nregistrar = {:?}\n\
             redis = {:?}\n",
            secret.to_str().unwrap(),
            relay.ws_url(),
            reg.url(),
            redis.url()
        ),
    )
    .unwrap();
    // Waited for on a blocking thread, so the in-process registrar and relay keep
    // serving the peer meanwhile.
    let (peer, started) = tokio::task::spawn_blocking(move || {
        let args = ["--config".as_ref(), config.as_os_str()];
        Process::start_until(BIN, &args, &[], |l| {
            l.contains("started") && l.contains("twin=")
        })
    })
    .await
    .unwrap()
    .expect("rmb-peer starts");
    assert!(
        started.contains(&redis.url()),
        "redis came from the file: {started}"
    );
    // It registered itself, with the relay and key type the file named.
    let twin: u32 = started
        .split("twin=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no twin id in {started}"));
    let record = reg
        .client()
        .get_twin(twin)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(record.relays, [relay.domain()]);

    // SIGTERM (systemd's stop) is a clean shutdown, not a kill.
    let status = tokio::task::spawn_blocking(move || peer.terminate())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "rmb-peer exits cleanly on SIGTERM: {status}"
    );
}

#[test]
fn missing_registrar_says_where_to_give_it() {
    let (_, stderr) = refused_config(BIN, "relay = \"ws://127.0.0.1:1\"\n");
    assert!(
        stderr.contains(
            "missing --registrar: give it on the command line, as RMB_REGISTRAR in the \
             environment, or as `registrar` in a config file"
        ),
        "{stderr}"
    );
}

#[test]
fn unknown_key_stops_the_binary() {
    let (_, stderr) = refused_config(
        BIN,
        "relays = [\"ws://127.0.0.1:1\"]\nregistrar = \"http://127.0.0.1:1\"\n",
    );
    assert!(stderr.contains("unknown key `relays`"), "{stderr}");
}

#[test]
fn deploy_files_pass_only_real_flags() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let checked = rmb_config::deploy_files::check_binary(Path::new(BIN), &deploy)
        .unwrap_or_else(|problem| panic!("{problem}"));
    assert!(checked > 0, "deploy/ runs rmb-peer somewhere");
}
