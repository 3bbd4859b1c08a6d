//! The real `rmb-relay` binary started from a TOML config file, and the deploy files'
//! flags checked against its `--help`.

use std::ffi::OsStr;
use std::path::Path;

use rmb_testkit::{refused_config, Process, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_rmb-relay");

/// Starts the relay and waits for its "relay listening" log line, whose fields
/// (address, backend) it returns.
fn start(args: &[&OsStr], env: &[(&str, &OsStr)]) -> (Process, String) {
    Process::start_until(BIN, args, env, |l| l.contains("relay listening")).unwrap()
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
    let args = [
        "--config".as_ref(),
        config.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let (_relay, line) = start(&args, &[]);
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
    let (_relay, line) = start(&[], &[("RMB_RELAY_CONFIG", config.as_os_str())]);
    assert_eq!(field(&line, "backend"), "memory");
    let addr = field(&line, "addr");
    let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[test]
fn unknown_key_stops_the_binary_naming_key_and_file() {
    let (config, stderr) = refused_config(BIN, "domain = \"relay.test\"\nlisten_port = 8081\n");
    assert!(stderr.contains("unknown key `listen_port`"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

#[test]
fn missing_domain_says_where_to_give_it() {
    let (_, stderr) = refused_config(BIN, "listen = \"127.0.0.1:0\"\n");
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
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let checked = rmb_config::deploy_files::check_binary(Path::new(BIN), &deploy)
        .unwrap_or_else(|problem| panic!("{problem}"));
    assert!(checked > 0, "deploy/ runs rmb-relay somewhere");
}
