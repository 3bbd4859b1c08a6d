//! The processes a benchmark measures: this binary re-executed with a hidden `serve-*`
//! subcommand, so each server's CPU time and RSS are its own; plus the twins and the
//! envelopes the load generators send.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rmb_core::prost::Message as _;
use rmb_core::proto::{Message, Payload, Request};
use rmb_core::{envelope, jwt, Address, Envelope, KeyType, Signer};
use rmb_registrar_client::RegistrarClient;
use rmb_relay::registrar_directory::RegistrarDirectory;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The relay domain benchmark twins live on when only one relay domain is involved.
pub(crate) const DOMAIN: &str = "bench.relay";

/// A server child process that printed `ready <what>` (its address, or a twin id).
pub(crate) struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// Runs this binary with `args` (a hidden `serve-*` subcommand).
    pub(crate) async fn spawn(args: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .with_context(|| format!("{} did not start in time", args[0]))??
            .with_context(|| format!("{} exited before it was ready", args[0]))?;
        let addr = line
            .strip_prefix("ready ")
            .with_context(|| format!("unexpected output from {}: {line}", args[0]))?
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, addr })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Kills the process with SIGKILL (no shutdown code runs) and waits for it to exit.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// A relay on `listen` (see [`listen_addr`]), in-memory backend unless `redis` is
    /// given, serving `domains` (default: [`DOMAIN`]).
    pub(crate) async fn relay(
        listen: &str,
        registrar: &str,
        redis: Option<&str>,
        domains: &[&str],
    ) -> anyhow::Result<Server> {
        let mut args = vec!["serve-relay", "--listen", listen, "--registrar", registrar];
        if let Some(redis) = redis {
            args.extend(["--redis", redis]);
        }
        for d in domains {
            args.extend(["--domain", d]);
        }
        Server::spawn(&args).await
    }

    pub(crate) async fn forwarder() -> anyhow::Result<Server> {
        Server::spawn(&["serve-forwarder", "127.0.0.1:0"]).await
    }
}

/// A free loopback address to listen on (known before the server starts, so it can be
/// a relay's domain).
pub(crate) fn listen_addr() -> String {
    format!("127.0.0.1:{}", rmb_testkit::free_port())
}

#[derive(Args, Debug)]
pub(crate) struct ServeRelayArgs {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    registrar: String,
    /// Redis URL: the Redis backend; without it, in-memory.
    #[arg(long)]
    redis: Option<String>,
    /// Domains served (default: bench.relay).
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Rate limit: envelopes per second per twin (default: unlimited).
    #[arg(long)]
    limit_per_second: Option<u64>,
    /// Threads verifying federated signatures in batches (0: each post inline, as
    /// before batches; default: one per core).
    #[arg(long)]
    verify_threads: Option<usize>,
}

/// Runs a relay for the benchmark (child process). Federation is plain http: every
/// relay here is on loopback.
pub(crate) async fn serve_relay(args: ServeRelayArgs) -> anyhow::Result<()> {
    let domains = if args.domains.is_empty() {
        vec![DOMAIN.to_string()]
    } else {
        args.domains
    };
    let mut config = rmb_relay::Config::new(domains);
    config.redis_url = args.redis;
    config.max_connections = 1_000_000;
    config.federation_scheme = "http";
    config.federation_allow_private = true;
    if let Some(n) = args.verify_threads {
        config.verify_threads = n;
    }
    if let Some(n) = args.limit_per_second {
        config.rate_limit = rmb_relay::ratelimit::RateLimit {
            messages: Some(n),
            bytes: None,
            window_secs: 1,
        };
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let directory = Arc::new(RegistrarDirectory::new(&args.registrar)?);
    let relay = rmb_relay::start(listener, config, directory).await?;
    println!("ready {}", relay.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct ServePeerArgs {
    /// `0x` + 64 hex digits.
    #[arg(long)]
    secret: String,
    #[arg(long)]
    key_type: KeyType,
    #[arg(long)]
    relay: String,
    #[arg(long)]
    redis: String,
    #[arg(long)]
    registrar: String,
    #[arg(long, action = clap::ArgAction::Set, default_value_t = true)]
    e2e: bool,
}

/// Runs an rmb-peer gateway (child process); prints `ready <twin id>` once connected.
pub(crate) async fn serve_peer(args: ServePeerArgs) -> anyhow::Result<()> {
    let mut config = rmb_peer::PeerConfig::new(
        args.secret,
        args.key_type,
        vec![args.relay],
        args.redis,
        args.registrar,
    );
    config.e2e = args.e2e;
    let peer = rmb_peer::Peer::start(config).await?;
    if !peer
        .client()
        .wait_connected(1, Duration::from_secs(20))
        .await
    {
        anyhow::bail!("rmb-peer did not connect to its relay");
    }
    println!("ready {}", peer.twin_id());
    std::future::pending::<()>().await;
    Ok(())
}

/// Runs a registrar on a SQLite file (child process).
pub(crate) async fn serve_registrar(db: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = rmb_registrar::serve(listener, rmb_registrar::Config::new(db)).await?;
    println!("ready {}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// The HTTP baseline (child process): `GET /v1/accounts/` answers `body` as JSON, the
/// least an HTTP lookup service can do.
pub(crate) async fn serve_http(body: String) -> anyhow::Result<()> {
    use axum::routing::get;
    let body: &'static str = body.leak();
    let app = axum::Router::new().route(
        "/v1/accounts/",
        get(move || async move { ([("content-type", "application/json")], body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("ready {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

pub(crate) struct BenchTwin {
    pub id: u32,
    pub signer: Signer,
}

impl BenchTwin {
    /// A JWT for connecting to a relay (`sid`: session id, if any).
    pub(crate) fn token(&self, sid: Option<&str>) -> String {
        jwt::create(&self.signer, self.id, sid, rmb_core::time::now(), 3600)
    }

    /// `ws://<relay>/?<jwt>`.
    pub(crate) fn url(&self, relay: &str) -> String {
        format!("ws://{relay}/?{}", self.token(None))
    }
}

/// Registers a new twin reachable on `relays`.
pub(crate) async fn register(
    client: &RegistrarClient,
    key_type: KeyType,
    relays: &[String],
) -> anyhow::Result<BenchTwin> {
    let signer = Signer::from_seed(&rand::random(), key_type)?;
    let account = client.create_account(&signer, relays, None).await?;
    Ok(BenchTwin {
        id: account.twin_id,
        signer,
    })
}

/// `n` (sender, receiver) twin pairs, senders on `from`, receivers on `to`.
pub(crate) async fn register_pairs(
    client: &RegistrarClient,
    key_type: KeyType,
    n: usize,
    from: &[String],
    to: &[String],
) -> anyhow::Result<Vec<(BenchTwin, BenchTwin)>> {
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        pairs.push((
            register(client, key_type, from).await?,
            register(client, key_type, to).await?,
        ));
    }
    Ok(pairs)
}

/// Field number of the unknown protobuf field that carries the send time.
const CLOCK_FIELD: u32 = 100;

/// The envelopes one sender sends: each a new request (its own uid and signature),
/// since relays drop copies of an envelope they already accepted (design D1a), with
/// `size` payload bytes and a slot for the send time. The time travels in an extra
/// fixed64 field the envelope schema does not know: protobuf decoders skip it and
/// signatures do not cover it, so the sender writes it just before sending. Relays
/// forward the bytes they received, so the field reaches the receiver.
#[derive(Clone)]
pub(crate) struct Frames {
    envelope: Envelope,
    signing: Signing,
}

#[derive(Clone)]
enum Signing {
    /// Every envelope signed anew: for paths where a relay verifies signatures
    /// (federation). Costs the load generator CPU on the servers' cores (the forwarder
    /// baseline of the same run pays the same).
    Each(Box<Signer>),
    /// Signed once; each envelope then gets a random uid and the same random bytes in
    /// the tail of its signature: distinct for de-duplication at no CPU cost, valid for
    /// nobody who verifies. For paths where nobody does: one relay, or instances sharing
    /// Redis, delivering to the bench's raw WebSocket receivers.
    Once,
}

/// One frame to send and where its send-time slot (8 bytes) starts.
pub(crate) struct Frame {
    pub bytes: Vec<u8>,
    pub clock_at: usize,
}

impl Frame {
    /// Writes the send time (nanoseconds on the sender's clock) into the slot.
    pub(crate) fn stamp(&mut self, nanos: u64) {
        self.bytes[self.clock_at..self.clock_at + 8].copy_from_slice(&nanos.to_le_bytes());
    }
}

impl Frames {
    /// Envelopes each signed anew ([`Signing::Each`]).
    pub(crate) fn signed(from: &BenchTwin, to: &BenchTwin, size: usize) -> Frames {
        Frames::new(from, to, size, Signing::Each(Box::new(from.signer.clone())))
    }

    /// Envelopes that only look signed ([`Signing::Once`]).
    pub(crate) fn unverified(from: &BenchTwin, to: &BenchTwin, size: usize) -> Frames {
        Frames::new(from, to, size, Signing::Once)
    }

    fn new(from: &BenchTwin, to: &BenchTwin, size: usize, signing: Signing) -> Frames {
        let mut envelope = Envelope {
            uid: String::new(),
            timestamp: rmb_core::time::now(),
            expiration: 3600,
            source: Some(Address::twin(from.id)),
            destination: Some(Address::twin(to.id)),
            message: Some(Message::Request(Request {
                command: "bench".into(),
            })),
            payload: Some(Payload::Plain(vec![0; size])),
            ..Default::default()
        };
        envelope::sign(&mut envelope, &from.signer);
        Frames { envelope, signing }
    }

    /// A new envelope: a fresh random uid (runs that share a Redis share its memory of
    /// accepted envelopes, so a counter would repeat) and signature.
    pub(crate) fn next_frame(&mut self) -> Frame {
        let unique = rand::random::<u128>();
        self.envelope.uid = format!("{unique:032x}");
        match &self.signing {
            Signing::Each(signer) => envelope::sign(&mut self.envelope, signer),
            Signing::Once => {
                let signature = self.envelope.signature.as_mut().expect("signed once");
                let tail = signature.len() - 16;
                signature[tail..].copy_from_slice(&unique.to_le_bytes());
            }
        }
        let mut bytes = self.envelope.encode_to_vec();
        // Key: field number, wire type 1 (fixed64), as a varint.
        rmb_core::prost::encoding::encode_key(
            CLOCK_FIELD,
            rmb_core::prost::encoding::WireType::SixtyFourBit,
            &mut bytes,
        );
        let clock_at = bytes.len();
        bytes.extend_from_slice(&[0; 8]);
        Frame { bytes, clock_at }
    }
}
