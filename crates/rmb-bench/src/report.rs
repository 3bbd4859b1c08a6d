//! What every subcommand produces: tables of rows, each row with throughput, latency
//! percentiles, the CPU and peak RSS of the server processes, and the ratio to the
//! table's baseline; printed as Markdown and optionally written as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use rmb_core::KeyType;
use serde::{Deserialize, Serialize};

use crate::load::{self, LoadResult};
use crate::proc_stats::{self, TICKS_PER_SEC};

/// Options shared by the throughput subcommands.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// Payload bytes per message.
    #[arg(long, alias = "size", default_value_t = 1024)]
    pub payload: usize,
    /// Seconds measured per row (after the warm-up).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Seconds of warm-up per row (not measured).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Key type of the benchmark twins: ed25519 or sr25519.
    #[arg(long, default_value = "ed25519")]
    pub key_type: KeyType,
    /// Also write the results as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl Common {
    pub(crate) fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup)
    }

    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.duration)
    }
}

/// CPU and peak memory of one server process over a row's run.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Usage {
    pub process: String,
    /// (utime + stime) / wall time, in percent of one core.
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Row {
    pub target: String,
    /// Pairs, requests in flight or clients, as the table says.
    pub concurrency: usize,
    /// Messages, round trips or lookups per second (the table's unit).
    pub throughput: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub servers: Vec<Usage>,
    /// CPU time of every process of the bench (load generator, servers, Redis) during
    /// the measured window, divided by the messages delivered in it, in microseconds:
    /// where the machine's time goes per message. `None` where not measured.
    #[serde(default)]
    pub cpu_us_per_msg: Option<f64>,
    /// throughput / the baseline row's throughput (1 for the baseline itself).
    pub ratio_to_baseline: f64,
}

impl Row {
    pub(crate) fn new(
        target: &str,
        concurrency: usize,
        result: &LoadResult,
        servers: Vec<Usage>,
    ) -> Row {
        Row {
            target: target.to_string(),
            concurrency,
            throughput: result.rate(),
            p50_ms: result.percentile(0.5),
            p90_ms: result.percentile(0.9),
            p99_ms: result.percentile(0.99),
            max_ms: result.percentile(1.0),
            servers,
            cpu_us_per_msg: cpu_us_per_msg(result),
            ratio_to_baseline: 1.0,
        }
    }

    /// Sets the ratio against `baseline` (a row measured in the same run).
    pub(crate) fn against(mut self, baseline: &Row) -> Row {
        self.ratio_to_baseline = self.throughput / baseline.throughput;
        self
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub(crate) struct Table {
    /// The subcommand that produced it (`relay`, `federation`, ...).
    pub bench: String,
    pub title: String,
    /// How it was measured, one line.
    pub setup: String,
    /// What `concurrency` means here: pairs, in flight, clients.
    pub concurrency_label: String,
    /// msgs/s, round trips/s, lookups/s.
    pub unit: String,
    /// Which row the ratios are against.
    pub baseline: String,
    pub rows: Vec<Row>,
    /// Findings printed under the table (memory per session, lost replies, ...).
    pub notes: Vec<String>,
    /// The same findings as numbers, for the JSON.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Table {
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("### {}\n\n{}\n\n", self.title, self.setup));
        if !self.rows.is_empty() {
            out.push_str(&format!(
                "| target | {} | {} | p50 ms | p90 ms | p99 ms | max ms | CPU µs each, all processes | server CPU % | server peak RSS MiB | vs {} |\n",
                self.concurrency_label, self.unit, self.baseline
            ));
            out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            // Name the processes when some row measures more than one.
            let named = self.rows.iter().any(|r| r.servers.len() > 1);
            let cell = |r: &Row, value: &dyn Fn(&Usage) -> String| {
                let parts: Vec<String> = r
                    .servers
                    .iter()
                    .map(|u| {
                        if named {
                            format!("{} {}", u.process, value(u))
                        } else {
                            value(u)
                        }
                    })
                    .collect();
                or_dash(parts.join(", "))
            };
            for r in &self.rows {
                out.push_str(&format!(
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |\n",
                    r.target,
                    r.concurrency,
                    r.throughput,
                    num(r.p50_ms, 2),
                    num(r.p90_ms, 2),
                    num(r.p99_ms, 2),
                    num(r.max_ms, 2),
                    r.cpu_us_per_msg.map_or("-".into(), |us| num(us, 1)),
                    cell(r, &|u| format!("{:.0}", u.cpu_percent)),
                    cell(r, &|u| format!("{:.1}", u.peak_rss_mib)),
                    r.ratio_to_baseline * 100.0
                ));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// All processes' CPU microseconds per message of `result`'s measured window.
fn cpu_us_per_msg(result: &LoadResult) -> Option<f64> {
    let ticks = load::window_cpu(result.elapsed)?;
    (result.messages > 0).then(|| ticks as f64 / TICKS_PER_SEC * 1e6 / result.messages as f64)
}

/// `value` with `decimals`, or `-` when it is not a number (not measured).
fn num(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".into()
    }
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// Prints the tables and writes the JSON the options ask for.
pub(crate) fn emit(tables: &[Table], json: Option<&Path>) -> anyhow::Result<()> {
    for t in tables {
        println!("{}", t.markdown());
    }
    match json {
        Some(path) => write_json(tables, path),
        None => Ok(()),
    }
}

/// Writes the tables as JSON to `path` (`-`: stdout).
pub(crate) fn write_json(tables: &[Table], path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(tables)?;
    if path == Path::new("-") {
        println!("{text}");
    } else {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// Samples the CPU time of some processes now; [`Meter::finish`] turns the difference
/// into [`Usage`].
pub(crate) struct Meter {
    start: std::time::Instant,
    before: Vec<(String, u32, Option<u64>)>,
}

impl Meter {
    pub(crate) fn start(processes: &[(&str, u32)]) -> Meter {
        Meter {
            start: std::time::Instant::now(),
            before: processes
                .iter()
                .map(|(name, pid)| {
                    (
                        name.to_string(),
                        *pid,
                        proc_stats::sample(*pid).map(|s| s.cpu_ticks),
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn finish(self) -> Vec<Usage> {
        let wall = self.start.elapsed().as_secs_f64();
        self.before
            .into_iter()
            .map(|(process, pid, before)| {
                let after = proc_stats::sample(pid);
                let (cpu_percent, peak_rss_mib) = match (before, after) {
                    (Some(b), Some(a)) => (
                        (a.cpu_ticks.saturating_sub(b)) as f64 / TICKS_PER_SEC / wall * 100.0,
                        a.peak_rss_kib as f64 / 1024.0,
                    ),
                    _ => (f64::NAN, f64::NAN),
                };
                Usage {
                    process,
                    cpu_percent,
                    peak_rss_mib,
                }
            })
            .collect()
    }
}
