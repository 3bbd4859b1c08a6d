//! `rmb up`: a complete local RMB network in one process — a registrar on a SQLite file,
//! a relay, and two demo twins (alice and bob) with end-to-end encryption — then a demo
//! call, then it keeps running until Ctrl-C. The data directory keeps the database and
//! the twins' secrets, so a second `rmb up` on it reuses the same twins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rmb_core::{E2eKey, KeyType, Signer};
use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_relay::registrar_directory::RegistrarDirectory;
use rmb_sdk::Client;
use tokio::net::TcpListener;

use crate::commands::write_private;
use crate::exit::CliError;

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Directory for the registrar database and the demo twins' secrets. A second
    /// `rmb up` on the same directory reuses them.
    #[arg(long, env = "RMB_UP_DIR", default_value = ".rmb-up")]
    data_dir: PathBuf,
    /// Registrar port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    registrar_port: u16,
    /// Relay port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8081)]
    relay_port: u16,
    /// Exit after the demo call; the exit code says whether it succeeded.
    #[arg(long)]
    exit_after_demo: bool,
}

const DEMO_COMMAND: &str = "demo.echo";
const DEMO_BODY: &[u8] = br#"{"hello":"rmb"}"#;

async fn bind(port: u16, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        CliError::Usage(format!("cannot listen on 127.0.0.1:{port} for the {what}: {e} (pass {flag} 0 to pick a free port)")).into()
    })
}

/// Reads `<name>.secret` in the data dir, creating it with a new mnemonic if absent.
fn demo_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(format!("{name}.secret"));
    if !path.exists() {
        let mnemonic = rmb_core::identity::generate_mnemonic(12)?;
        write_private(&path, &mnemonic)?;
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", args.data_dir.display())))?;
    let dir = args.data_dir.canonicalize()?;
    let step = |text: &str| eprintln!("• {text}");

    step("starting the registrar");
    let db = dir.join("registrar.db");
    let registrar = rmb_registrar::serve(
        bind(args.registrar_port, "registrar", "--registrar-port").await?,
        rmb_registrar::Config::new(db.to_string_lossy().to_string()),
    )
    .await?;
    let registrar_url = registrar.url();

    step("starting the relay");
    let relay_listener = bind(args.relay_port, "relay", "--relay-port").await?;
    let relay_addr = relay_listener.local_addr()?;
    let domain = relay_addr.to_string();
    let relay_url = format!("ws://{relay_addr}");
    let mut relay_config = rmb_relay::Config::new(vec![domain.clone()]);
    relay_config.federation_scheme = "http";
    // Everything of a local network is on loopback.
    relay_config.federation_allow_private = true;
    // A local network changes under its users' hands: keep registrar answers fresh.
    let lookups = RegistrarClient::with_config(
        &registrar_url,
        ClientConfig {
            cache_ttl: Duration::from_secs(2),
            negative_ttl: Duration::from_millis(200),
            ..Default::default()
        },
    )?;
    let relay = rmb_relay::start(
        relay_listener,
        relay_config,
        Arc::new(RegistrarDirectory::from_client(lookups)),
    )
    .await?;

    step("connecting the demo twins alice and bob (sr25519, end-to-end encrypted)");
    let registrar_client = RegistrarClient::new(&registrar_url)?;
    let twin_client = |name: &'static str| {
        let secret = demo_secret(&dir, name);
        let registrar_url = registrar_url.clone();
        let relay_url = relay_url.clone();
        async move {
            Client::builder(secret?, KeyType::Sr25519)
                .registrar(registrar_url)
                .relays([relay_url])
                .build()
                .await
                .map_err(anyhow::Error::from)
        }
    };
    let bob = twin_client("bob").await?;
    bob.handle(DEMO_COMMAND, |req| async move { Ok(req.payload) });
    let alice = twin_client("alice").await?;
    // A third identity, registered but not running, for connecting rmb-peer or the SDK.
    let guest_secret = demo_secret(&dir, "guest")?;
    let guest_signer = Signer::from_secret(&guest_secret, KeyType::Sr25519)?;
    let guest = registrar_client
        .ensure_account(
            &guest_signer,
            std::slice::from_ref(&domain),
            E2eKey::from_secret(&guest_secret)
                .ok()
                .map(|k| k.public_key()),
        )
        .await?;
    let connected = alice.wait_connected(1, Duration::from_secs(10)).await
        && bob.wait_connected(1, Duration::from_secs(10)).await;
    if !connected {
        anyhow::bail!("the demo twins could not connect to the relay at {relay_url}");
    }

    step(&format!(
        "demo call: alice (twin {}) → bob (twin {}) `{DEMO_COMMAND}` {}",
        alice.twin_id(),
        bob.twin_id(),
        String::from_utf8_lossy(DEMO_BODY)
    ));
    let started = Instant::now();
    let demo = alice
        .call(
            bob.twin_id(),
            DEMO_COMMAND,
            DEMO_BODY.to_vec(),
            Duration::from_secs(10),
        )
        .await
        .map(|reply| reply.payload);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let bob_record = registrar_client.get_twin(bob.twin_id()).await?;
    let encrypted = bob_record.as_ref().is_some_and(|t| t.rmb_enc_key.is_some());
    let demo_ok = match &demo {
        Ok(reply) if reply == DEMO_BODY => {
            println!(
                "demo call succeeded in {ms:.1} ms: bob replied {} (signed by each twin{})",
                String::from_utf8_lossy(reply),
                if encrypted {
                    ", payloads end-to-end encrypted"
                } else {
                    ""
                }
            );
            true
        }
        Ok(reply) => {
            println!(
                "demo call returned an unexpected reply: {}",
                String::from_utf8_lossy(reply)
            );
            false
        }
        Err(e) => {
            println!("demo call failed: {e}");
            false
        }
    };

    let guest_file = dir.join("guest.secret");
    println!(
        "\nRMB local network is running (data in {dir}):\n\
         \x20 registrar  {registrar_url}\n\
         \x20 relay      {relay_url}   (twins register it as \"{domain}\")\n\
         \x20 alice      twin {alice}\n\
         \x20 bob        twin {bob}, serving `{DEMO_COMMAND}`\n\
         \x20 guest      twin {guest}, registered but not connected: use it from your own programs\n\
         \n\
         Call bob from the command line:\n\
         \x20 rmb call --registrar {registrar_url} --relay {relay_url} --mnemonic-file {guest_file} --dst {bob} --cmd {DEMO_COMMAND} --data '{{\"hi\":1}}'\n\
         Connect an rmb-peer as guest (then talk to it through Redis lists, see docs/rmb-peer.md):\n\
         \x20 rmb-peer --registrar {registrar_url} --relay {relay_url} --mnemonic-file {guest_file} --redis redis://127.0.0.1:6379\n\
         From Rust: rmb_sdk::Client::builder(<guest secret>, KeyType::Sr25519).registrar(\"{registrar_url}\").relays([\"{relay_url}\"])\n\
         The guest mnemonic is in {guest_file}.\n",
        dir = dir.display(),
        alice = alice.twin_id(),
        bob = bob.twin_id(),
        guest = guest.twin_id,
        guest_file = guest_file.display(),
    );

    if !args.exit_after_demo {
        println!("Ctrl-C stops the network.");
        tokio::signal::ctrl_c().await?;
        eprintln!("• stopping");
    }
    alice.shutdown();
    bob.shutdown();
    relay.shutdown().await;
    registrar.shutdown().await?;
    if demo_ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!("the demo call did not succeed"))
    }
}
