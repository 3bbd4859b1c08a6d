//! A short `rmb-bench chaos`: one SIGKILL of each kind (relay instance 1, rmb-peer A,
//! relay instance 2, rmb-peer B, the relays' Redis) under a request stream, bounded
//! in time. No request may run twice or be answered twice, and every request is
//! counted once as replied, failed or lost. (Requests lost are reported, not asserted
//! to be zero: see docs/benchmarks.md, "Chaos", for what is still lost and where.)

use std::process::Command;

use serde_json::Value;

#[test]
fn one_kill_of_each_kind_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("chaos.json");
    let output = Command::new(env!("CARGO_BIN_EXE_rmb-bench"))
        .args([
            "chaos",
            "--kills",
            "5",
            "--duration",
            "15",
            "--rate",
            "10",
            "--expiration",
            "10",
            "--down-ms",
            "300",
        ])
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no results ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let outcome: Value = serde_json::from_str(&text).unwrap();
    let count = |field: &str| outcome[field].as_u64().expect(field);
    let windows = outcome["windows_ms"].as_object().unwrap();
    let kills: usize = windows.values().map(|w| w.as_array().unwrap().len()).sum();
    assert_eq!((windows.len(), kills), (5, 5), "{text}");
    assert!(count("sent") > 100, "{text}");
    assert!(count("replies") > 0, "{text}");
    assert_eq!(
        count("replies") + count("errors") + count("lost"),
        count("sent"),
        "{text}"
    );
    assert_eq!(count("run_twice"), 0, "a request ran twice: {text}");
    assert_eq!(count("duplicate_answers"), 0, "answered twice: {text}");
}
