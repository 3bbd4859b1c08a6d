//! CPU time and memory of a child process, from /proc.

pub(crate) struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, cpu_ticks) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(ProcSample {
        cpu_ticks,
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
    })
}

/// Clock ticks per second (USER_HZ), 100 on Linux.
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// The pid of the redis-server listening on `port` (started by rmb-testkit, which does
/// not say), found by its command line in /proc.
pub(crate) fn redis_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            let words: Vec<&str> = cmdline.split(['\0', ' ', ':']).collect();
            (words.first()?.ends_with("redis-server") && words.contains(&port.as_str()))
                .then_some(pid)
        })
}

/// utime + stime, in clock ticks, of this process and every process it started, directly
/// or not (the servers, redis-server, PostgreSQL): what "all processes involved" costs.
/// Other work on the machine (other builds, other benchmarks) is not counted.
pub(crate) fn tree_cpu_ticks() -> u64 {
    // (pid, ppid, ticks) of every process readable now.
    let all: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (ppid, ticks) = parse_stat(&stat)?;
            Some((pid, ppid, ticks))
        })
        .collect();
    let mut tree = vec![std::process::id()];
    let mut total = 0;
    // Breadth first over the parent links; a pid is visited once, so a recycled pid
    // cannot loop.
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, ppid, ticks) in &all {
            if *pid == parent {
                total += ticks;
            }
            if *ppid == parent && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    total
}

/// (ppid, utime + stime) from the text of /proc/<pid>/stat.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // Fields after the ")" that ends the command name: state, ppid, ..., utime (14)
    // and stime (15) counting from 1 with pid.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        // A command name with spaces and a ")" in it, as a hostile binary could have.
        let stat = "42 (a b) c) S 7 42 42 0 -1 4194304 100 0 0 0 250 31 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some((7, 281)));
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn the_tree_counts_this_process() {
        // Burn some CPU so the count cannot be zero.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(tree_cpu_ticks() > 0, "{x}");
    }
}
