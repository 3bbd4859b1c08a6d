//! The `rmb` binary end to end against a real local network, including its failure
//! paths and exit codes.

use std::time::Duration;

use rmb_core::KeyType;
use rmb_sdk::{Client, HandlerError};
use rmb_testkit::{TestRegistrar, TestRelay};
use tokio::process::Command;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn rmb(args: &[&str]) -> Output {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_rmb"))
            .args(args)
            .env_remove("RMB_MNEMONIC")
            .output(),
    )
    .await
    .expect("rmb did not finish in time")
    .expect("rmb runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn twin_line(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
        .to_string()
}

#[tokio::test]
async fn up_runs_a_demo_call_and_reuses_its_twins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("net");
    let data = data.to_str().unwrap();
    let args = [
        "up",
        "--data-dir",
        data,
        "--registrar-port",
        "0",
        "--relay-port",
        "0",
        "--exit-after-demo",
    ];
    let first = rmb(&args).await;
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains("demo call succeeded"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("end-to-end encrypted"),
        "{}",
        first.stdout
    );
    let second = rmb(&args).await;
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    for name in ["alice", "bob", "guest"] {
        assert_eq!(
            twin_line(&first.stdout, name),
            twin_line(&second.stdout, name),
            "{name} changed"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("net/guest.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn keys_registration_lookup_and_calls() {
    let registrar = TestRegistrar::start().await.unwrap();
    let relay = TestRelay::start("127.0.0.1", &registrar.url())
        .await
        .unwrap();
    let reg = registrar.url();
    let relay_url = relay.ws_url();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("me.secret");
    let key = key_file.to_str().unwrap();

    let new = rmb(&["key", "new", "--out", key]).await;
    assert_eq!(new.code, 0, "{}", new.stderr);
    let again = rmb(&["key", "new", "--out", key]).await;
    assert_eq!(
        again.code, 2,
        "an existing secret file is never overwritten"
    );
    let show = rmb(&["key", "show", "--mnemonic-file", key]).await;
    assert!(
        show.stdout.contains("public key hex:") && show.stdout.contains("e2e key (rmb_enc_key): 0"),
        "{}",
        show.stdout
    );

    let registered = rmb(&[
        "register",
        "--mnemonic-file",
        key,
        "--registrar",
        &reg,
        "--relay",
        &relay.domain(),
    ])
    .await;
    assert_eq!(registered.code, 0, "{}", registered.stderr);
    let me: u32 = registered.stdout.trim().parse().unwrap();
    let looked_up = rmb(&["twin", &me.to_string(), "--registrar", &reg, "--json"]).await;
    let record: serde_json::Value = serde_json::from_str(&looked_up.stdout).unwrap();
    assert_eq!(record["relays"][0], relay.domain());
    assert!(record["rmb_enc_key"].is_string());

    // A service to call.
    let server = Client::builder(format!("0x{}", "42".repeat(32)), KeyType::Ed25519)
        .registrar(reg.clone())
        .relays([relay_url.clone()])
        .build()
        .await
        .unwrap();
    server.handle("echo", |req| async move { Ok(req.payload) });
    server.handle("fail", |_| async move {
        Err(HandlerError::new(1001, "it broke"))
    });
    assert!(server.wait_connected(1, Duration::from_secs(10)).await);
    let srv = server.twin_id().to_string();
    let call = |cmd: &'static str, dst: String, extra: Vec<&'static str>| {
        let (reg, relay_url, key) = (reg.clone(), relay_url.clone(), key.to_string());
        async move {
            let mut args = vec![
                "call",
                "--registrar",
                &reg,
                "--relay",
                &relay_url,
                "--mnemonic-file",
                &key,
                "--dst",
                &dst,
                "--cmd",
                cmd,
            ];
            args.extend(extra);
            rmb(&args).await
        }
    };

    let ok = call("echo", srv.clone(), vec!["--data", r#"{"x":1}"#]).await;
    assert_eq!(
        (ok.code, ok.stdout.trim()),
        (0, r#"{"x":1}"#),
        "{}",
        ok.stderr
    );
    let json = call("echo", srv.clone(), vec!["--data", r#"{"x":2}"#, "--json"]).await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["reply"]["x"], 2);

    let remote = call("fail", srv.clone(), vec!["--json"]).await;
    assert_eq!(remote.code, 6, "{}", remote.stderr);
    let value: serde_json::Value = serde_json::from_str(&remote.stdout).unwrap();
    assert_eq!(value["error"]["code"], 1001);

    let unknown = call("echo", "999999".into(), vec![]).await;
    assert_eq!(unknown.code, 4, "{}\n{}", unknown.stdout, unknown.stderr);

    // Registered but never connected: the relay queues the request, nobody answers.
    let offline = rmb(&[
        "register",
        "--mnemonic",
        &format!("0x{}", "43".repeat(32)),
        "--registrar",
        &reg,
        "--relay",
        &relay.domain(),
    ])
    .await;
    let offline_id = offline.stdout.trim().to_string();
    let timeout = call("echo", offline_id, vec!["--timeout", "1"]).await;
    assert_eq!(timeout.code, 5, "{}", timeout.stderr);
    assert!(timeout.stderr.contains("hint:"), "{}", timeout.stderr);

    let no_secret = rmb(&["call", "--registrar", &reg, "--dst", "1", "--cmd", "x"]).await;
    assert_eq!(no_secret.code, 2);
    assert!(
        no_secret.stderr.contains("no secret given"),
        "{}",
        no_secret.stderr
    );
    server.shutdown();
}

#[tokio::test]
async fn unreachable_registrar_is_exit_code_3() {
    let port = rmb_testkit::free_port();
    let out = rmb(&[
        "twin",
        "1",
        "--registrar",
        &format!("http://127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}
