//! `rmb-bench registrar`: twin lookups through `RegistrarClient`, uncached (every call
//! asks the registrar, a SQLite query each) and cached, against the same client asking a
//! trivial axum handler that answers a constant account JSON, in the same run. The
//! registrar and the baseline server are child processes, so their CPU and RSS are
//! measured apart from the client's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use futures_util::StreamExt;
use rmb_registrar_client::RegistrarClient;

use crate::load::{closed_loop, LoadResult};
use crate::report::{Common, Meter, Row, Table};
use crate::servers::{self, Server, DOMAIN};

#[derive(Args, Debug, Clone)]
pub(crate) struct RegistrarArgs {
    /// Twins registered (lookups walk through all of them).
    #[arg(long, default_value_t = 1000)]
    pub twins: usize,
    /// Concurrent lookup tasks (one shared client, as in a relay).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[command(flatten)]
    pub common: Common,
}

/// A client whose budget for lookups of uncached twins (the relay's protection against
/// floods of random twin ids, 500 a second by default) does not cap the measurement:
/// the uncached rows measure the HTTP path, and every lookup there is a miss.
fn uncached_client(url: &str) -> anyhow::Result<RegistrarClient> {
    Ok(RegistrarClient::with_config(
        url,
        rmb_registrar_client::ClientConfig {
            miss_burst: u32::MAX,
            misses_per_second: 1e9,
            ..Default::default()
        },
    )?)
}

pub(crate) async fn run(args: RegistrarArgs) -> anyhow::Result<Vec<Table>> {
    let c = &args.common;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("registrar.db");
    let registrar = Server::spawn(&["serve-registrar", "--db", &db.to_string_lossy()]).await?;
    let url = format!("http://{}", registrar.addr);
    let client = RegistrarClient::new(&url)?;
    eprintln!("registering {} twins ...", args.twins);
    let relays = [DOMAIN.to_string()];
    let registered: Vec<anyhow::Result<servers::BenchTwin>> =
        futures_util::stream::iter(0..args.twins.max(1))
            .map(|_| servers::register(&client, c.key_type, &relays))
            .buffer_unordered(16)
            .collect()
            .await;
    let ids = Arc::new(
        registered
            .into_iter()
            .map(|t| t.map(|t| t.id))
            .collect::<anyhow::Result<Vec<u32>>>()?,
    );
    // The baseline answers what the registrar answers for a twin, from a constant.
    let body = reqwest::get(format!("{url}/v1/accounts/?twin_id={}", ids[0]))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let trivial = Server::spawn(&["serve-http", "--body", &body]).await?;

    let n = args.concurrency.max(1);
    // Calls walk through the twins in turn, so concurrent calls ask for different ones.
    let lookups = |client: RegistrarClient, uncached: bool| {
        let ids = ids.clone();
        let next = Arc::new(AtomicUsize::new(0));
        move |_task: usize| {
            let client = client.clone();
            let id = ids[next.fetch_add(1, Ordering::Relaxed) % ids.len()];
            async move {
                if uncached {
                    client.invalidate(id);
                }
                let twin = client.get_twin(id).await?;
                anyhow::ensure!(twin.is_some(), "twin {id} not found");
                Ok(())
            }
        }
    };
    let measure = |label: &'static str, server: &'static str, pid: u32, client, uncached| {
        let op = lookups(client, uncached);
        async move {
            eprintln!("measuring {label} ...");
            let meter = Meter::start(&[(server, pid)]);
            let result: LoadResult = closed_loop(n, c.warmup(), c.duration(), op).await?;
            anyhow::ensure!(result.messages > 0, "{label}: no lookup completed");
            anyhow::Ok(Row::new(label, n, &result, meter.finish()))
        }
    };
    let base = measure(
        "baseline: same client, trivial axum handler, uncached",
        "http server",
        trivial.pid(),
        uncached_client(&format!("http://{}", trivial.addr))?,
        true,
    )
    .await?;
    let uncached = measure(
        "registrar (SQLite), uncached",
        "registrar",
        registrar.pid(),
        uncached_client(&url)?,
        true,
    )
    .await?
    .against(&base);
    let warm = RegistrarClient::new(&url)?;
    for &id in ids.iter() {
        warm.get_twin(id).await?;
    }
    let cached = measure(
        "registrar, client cache hits",
        "registrar",
        registrar.pid(),
        warm,
        false,
    )
    .await?
    .against(&base);
    Ok(vec![Table {
        bench: "registrar".into(),
        title: "Registrar lookups".into(),
        setup: format!(
            "`RegistrarClient::get_twin` by twin id from {n} tasks sharing one client, over {} {} twins on a SQLite registrar (child process); uncached rows invalidate the client cache before every call, so each lookup is an HTTP request. {} s warm-up, {} s measured.",
            ids.len(), c.key_type, c.warmup, c.duration
        ),
        concurrency_label: "tasks".into(),
        unit: "lookups/s".into(),
        baseline: "trivial handler".into(),
        rows: vec![base, uncached, cached],
        ..Default::default()
    }])
}
