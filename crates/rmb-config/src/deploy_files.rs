//! Reading the flags that deployment files (systemd units, Dockerfiles) pass to a
//! binary, so each binary's tests can check them against its real `--help`: a renamed
//! flag must not leave a unit that fails only when an operator starts it.

use std::path::{Path, PathBuf};

/// [`check_dir`] for the binary at `binary_path`, with the help it prints for `--help`.
/// Returns how many flags were checked, or why the check failed.
pub fn check_binary(binary_path: &Path, dir: &Path) -> Result<usize, String> {
    let name = binary_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("no binary name in {}", binary_path.display()))?;
    let out = std::process::Command::new(binary_path)
        .arg("--help")
        .output()
        .map_err(|e| format!("running {} --help: {e}", binary_path.display()))?;
    check_dir(dir, name, &String::from_utf8_lossy(&out.stdout))
}

/// Checks every systemd unit (`*.service`) and Dockerfile (`*Dockerfile*`) under `dir`
/// (recursively): each `--flag` passed to `binary` must appear in `help`, that
/// binary's `--help` output. Returns how many flags were checked, or one line per
/// unknown flag.
pub fn check_dir(dir: &Path, binary: &str, help: &str) -> Result<usize, String> {
    let mut checked = 0;
    let mut unknown = Vec::new();
    for file in deploy_files(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for flag in flags_passed_to(&text, binary) {
            checked += 1;
            // Help lists `--flag <VALUE>`, `--flag` alone or `--flag,`: match whole words.
            let known = help
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|w| w == flag);
            if !known {
                unknown.push(format!("{}: {binary} has no flag {flag}", file.display()));
            }
        }
    }
    if unknown.is_empty() {
        Ok(checked)
    } else {
        Err(unknown.join("\n"))
    }
}

fn deploy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            files.extend(deploy_files(&path)?);
        } else if name.ends_with(".service") || name.contains("Dockerfile") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every `--flag` (without any `=value`) that `text` passes to `binary`: on systemd
/// `Exec*=` lines and Dockerfile `ENTRYPOINT` lines after a word naming the binary
/// (by path or name), and on Dockerfile `CMD` lines when the `ENTRYPOINT` before them
/// runs the binary.
pub fn flags_passed_to(text: &str, binary: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut entrypoint_is_binary = false;
    for line in logical_lines(text) {
        let line = line.trim_start();
        let words = words(line);
        let is_binary = |w: &&str| w.rsplit('/').next() == Some(binary);
        let after_binary = words.iter().position(is_binary).map(|i| i + 1);
        let start = if line.starts_with("Exec") {
            after_binary
        } else if line.starts_with("ENTRYPOINT") {
            entrypoint_is_binary = after_binary.is_some();
            after_binary
        } else if line.starts_with("CMD") {
            after_binary.or(entrypoint_is_binary.then_some(1))
        } else {
            None
        };
        if let Some(start) = start {
            flags.extend(
                words[start.min(words.len())..]
                    .iter()
                    .filter(|w| w.starts_with("--") && w.len() > 2)
                    .map(|w| w.to_string()),
            );
        }
    }
    flags
}

/// Lines with backslash continuations joined, as both systemd and Docker read them.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        match raw.trim_end().strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(raw);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Words of a command line in either shell or JSON (exec) form; `--flag=value` yields
/// `--flag` and `value`, and `ExecStart=/bin/x` yields `ExecStart` and `/bin/x`.
fn words(line: &str) -> Vec<&str> {
    line.split(|c: char| c.is_whitespace() || "[]\",=".contains(c))
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::flags_passed_to;

    #[test]
    fn systemd_exec_lines_with_continuations() {
        let unit = "[Service]\nExecStartPre=/bin/true --not-ours\n\
                    ExecStart=/usr/local/bin/rmb-relay --config /etc/rmb/relay.toml \\\n    --listen=127.0.0.1:8081\n\
                    Environment=RMB_X=--nope\n";
        assert_eq!(flags_passed_to(unit, "rmb-relay"), ["--config", "--listen"]);
        assert!(flags_passed_to(unit, "rmb-peer").is_empty());
    }

    #[test]
    fn check_dir_reports_flags_missing_from_help() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("systemd");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(
            sub.join("x.service"),
            "ExecStart=/bin/x --listen a --gone b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("x.toml"), "ExecStart=/bin/x --ignored\n").unwrap();
        let help = "Options:\n      --listen <LISTEN>  where\n      --gone-too\n";
        let err = super::check_dir(dir.path(), "x", help).unwrap_err();
        assert!(err.ends_with("x.service: x has no flag --gone"), "{err}");
        let help = format!("{help}  -g, --gone <G>\n");
        assert_eq!(super::check_dir(dir.path(), "x", &help), Ok(2));
    }

    #[test]
    fn dockerfile_entrypoint_and_cmd() {
        let dockerfile = "FROM rust AS build\nRUN cargo build --release -p rmb-relay\n\
                          ENTRYPOINT [\"/usr/local/bin/rmb-relay\", \"--listen\", \"0.0.0.0:8081\"]\n\
                          CMD [\"--config\", \"/etc/rmb/relay.toml\"]\n";
        assert_eq!(
            flags_passed_to(dockerfile, "rmb-relay"),
            ["--listen", "--config"]
        );
    }
}
