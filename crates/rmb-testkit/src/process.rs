//! A project binary run as a child process, for tests of what an operator runs: flags,
//! config files, logs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running binary, killed when dropped.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    /// Starts `program` with `args` and an empty environment (so no `RMB_*` variable of
    /// the test's own environment leaks in) apart from `env`, and reads its stdout until a
    /// line for which `ready` holds, which it returns. Stdout is drained afterwards so the
    /// process never logs into a closed pipe. Blocks: from an async test that serves the
    /// process in-process (registrar, relay), call it in `spawn_blocking`.
    pub fn start_until(
        program: &str,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        ready: impl Fn(&str) -> bool,
    ) -> std::io::Result<(Process, String)> {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let process = Process(child);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line?;
            if ready(&line) {
                std::thread::spawn(move || lines.for_each(drop));
                return Ok((process, line));
            }
        }
        Err(std::io::Error::other(format!(
            "{program} exited before logging the awaited line"
        )))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Kills the process with SIGKILL (a crash: no shutdown code runs) and waits for it.
    pub fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends SIGTERM, as systemd and `docker stop` do, and waits for the exit.
    pub fn terminate(mut self) -> std::io::Result<std::process::ExitStatus> {
        let pid = self.0.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !kill.success() {
            return Err(std::io::Error::other(format!("kill -TERM {pid} failed")));
        }
        self.0.wait()
    }
}

/// Runs `program --config FILE`, FILE holding `config`, in an empty environment, and
/// asserts it fails (a config the binary must refuse). Returns FILE's path, for
/// messages that should name it, and the binary's stderr.
pub fn refused_config(program: &str, config: &str) -> (std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).expect("writing the config file");
    let out = Command::new(program)
        .env_clear()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("running the binary");
    assert!(!out.status.success(), "{program} must refuse {config:?}");
    (path, String::from_utf8_lossy(&out.stderr).into_owned())
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
