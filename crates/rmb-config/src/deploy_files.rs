//! Reading the flags that deployment files (systemd units, Dockerfiles) pass to a
//! binary, so each binary's tests can check them against its real `--help`: a renamed
//! flag must not leave a unit that fails only when an operator starts it.

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
