//! The real `rmb-relay` binary started from a TOML config file, and the deploy files'
//! flags checked against its `--help`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rmb_testkit::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_rmb-relay");

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A relay process, killed when dropped.
struct RelayProcess(Child);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay_command() -> Command {
    let mut cmd = Command::new(BIN);
    // The test controls every input: no inherited relay settings, no colour codes.
    for var in [
        "RMB_RELAY_DOMAINS",
        "RMB_RELAY_LISTEN",
        "RMB_RELAY_CONFIG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Starts the relay and reads its log until the "relay listening" line, whose fields
/// (address, backend) it returns.
fn start(cmd: &mut Command) -> (RelayProcess, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning rmb-relay");
    let stdout = child.stdout.take().unwrap();
    let process = RelayProcess(child);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the relay's log");
        if line.contains("relay listening") {
            return (process, line);
        }
    }
    panic!("rmb-relay exited before listening");
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
}

#[tokio::test]
async fn binary_starts_from_a_config_file_and_flags_override_it() {
    let redis = RedisServer::start().unwrap();
    // The file's port is taken, so the relay only starts if --listen overrides it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "domain = [\"relay.test\"]\nlisten = \"{}\"\nregistrar = \"http://127.0.0.1:9\"\n\
             redis = \"{}\"\nlimit = [100, 0]\nmax_connections = 10\n",
            taken.local_addr().unwrap(),
            redis.url()
        ),
    )
    .unwrap();
    let (_relay, line) = start(
        relay_command()
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"]),
    );
    assert_eq!(
        field(&line, "backend"),
        "redis",
        "redis came from the file: {line}"
    );
    let addr = field(&line, "addr");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert!(metrics.status().is_success());
}

#[tokio::test]
async fn config_file_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "domain = \"relay.test\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let (_relay, line) = start(relay_command().env("RMB_RELAY_CONFIG", &config));
    assert_eq!(field(&line, "backend"), "memory");
    let addr = field(&line, "addr");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

/// Runs the relay on a config file it must refuse; returns the file's path and stderr.
fn failure(config_text: &str) -> (PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, config_text).unwrap();
    let out = relay_command()
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the relay must refuse {config_text:?}"
    );
    (config, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_key_stops_the_binary_naming_key_and_file() {
    let (config, stderr) = failure("domain = \"relay.test\"\nlisten_port = 8081\n");
    assert!(stderr.contains("unknown key `listen_port`"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn missing_domain_says_where_to_give_it() {
    let (_, stderr) = failure("listen = \"127.0.0.1:0\"\n");
    assert!(
        stderr.contains(
            "missing --domain: give it on the command line, as RMB_RELAY_DOMAINS in the \
             environment, or as `domain` in a config file"
        ),
        "{stderr}"
    );
}

#[test]
fn deploy_files_pass_only_real_flags() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let checked = rmb_config::deploy_files::check_dir(&deploy_dir(), "rmb-relay", &help)
        .unwrap_or_else(|unknown| panic!("{unknown}"));
    assert!(checked > 0, "deploy/ runs rmb-relay somewhere");
}
