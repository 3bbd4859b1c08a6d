//! Every subcommand but `up`.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, Subcommand};
use rmb_core::{E2eKey, KeyType, Signer};
use rmb_registrar_client::RegistrarClient;
use rmb_sdk::{CallError, Client};

use crate::exit::{self, CliError};
use crate::secret::{NetworkArgs, SecretArgs};

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Print a new random mnemonic (or write it to a file readable only by you).
    New {
        /// Words in the mnemonic: 12, 15, 18, 21 or 24.
        #[arg(long, default_value_t = 12)]
        words: usize,
        /// Key type to show the public key for.
        #[arg(short, long, default_value = "sr25519")]
        key_type: KeyType,
        /// Write the mnemonic to this file (mode 0600, never overwritten) instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Print the public data of a secret: signing key and e2e key.
    Show(SecretArgs),
}

pub(crate) fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::New {
            words,
            key_type,
            out,
        } => {
            let mnemonic = rmb_core::identity::generate_mnemonic(words)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let signer = Signer::from_secret(&mnemonic, key_type)?;
            match out {
                Some(path) => {
                    write_private(&path, &mnemonic)?;
                    eprintln!(
                        "wrote a new {words}-word mnemonic to {} (mode 0600)",
                        path.display()
                    );
                }
                None => println!("{}", *mnemonic),
            }
            eprintln!(
                "{key_type} public key: {}",
                hex::encode(signer.public_key())
            );
            Ok(())
        }
        KeyCommand::Show(secret) => {
            let text = secret.secret()?;
            let signer = Signer::from_secret(&text, secret.key_type)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let pk = signer.public_key();
            println!("key type:        {}", secret.key_type);
            println!("public key hex:  {}", hex::encode(pk));
            println!("public key b64:  {}", STANDARD.encode(pk));
            match E2eKey::from_secret(&text) {
                Ok(e2e) => println!("e2e key (rmb_enc_key): {}", hex::encode(e2e.public_key())),
                Err(e) => println!("e2e key (rmb_enc_key): none ({e})"),
            }
            Ok(())
        }
    }
}

/// Writes a secret to a new file only its owner can read.
pub(crate) fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot create {} (it must not exist yet): {e}",
            path.display()
        ))
    })?;
    writeln!(file, "{text}")?;
    Ok(())
}

#[derive(Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Registrar base URL.
    #[arg(long, env = "RMB_REGISTRAR", default_value = "http://127.0.0.1:8080")]
    registrar: String,
    /// A relay hostname (`host` or `host:port`) the twin is reachable on; repeat.
    #[arg(long = "relay", required = true)]
    relays: Vec<String>,
}

pub(crate) async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let text = args.secret.secret()?;
    let signer = Signer::from_secret(&text, args.secret.key_type)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let e2e = E2eKey::from_secret(&text).ok().map(|k| k.public_key());
    let client = RegistrarClient::new(&args.registrar).map_err(exit::from_registrar)?;
    let twin = client
        .ensure_account(&signer, &args.relays, e2e)
        .await
        .map_err(exit::from_registrar)?;
    println!("{}", twin.twin_id);
    eprintln!(
        "twin {} registered on relays {:?}{}",
        twin.twin_id,
        twin.relays,
        if e2e.is_some() {
            " with an e2e key"
        } else {
            ""
        }
    );
    Ok(())
}

#[derive(Args)]
pub(crate) struct TwinArgs {
    /// The twin id.
    twin: u32,
    /// Registrar base URL.
    #[arg(long, env = "RMB_REGISTRAR", default_value = "http://127.0.0.1:8080")]
    registrar: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn twin(args: TwinArgs) -> anyhow::Result<()> {
    let client = RegistrarClient::new(&args.registrar).map_err(exit::from_registrar)?;
    let twin = client
        .get_twin(args.twin)
        .await
        .map_err(exit::from_registrar)?
        .ok_or(CliError::UnknownTwin(args.twin))?;
    let e2e = twin.rmb_enc_key.map(hex::encode);
    if args.json {
        let value = serde_json::json!({
            "twin_id": twin.twin_id,
            "public_key": STANDARD.encode(twin.public_key),
            "relays": twin.relays,
            "rmb_enc_key": e2e,
        });
        println!("{value}");
    } else {
        println!("twin        {}", twin.twin_id);
        println!("public key  {}", hex::encode(twin.public_key));
        println!("relays      {}", twin.relays.join(", "));
        println!(
            "e2e key     {}",
            e2e.unwrap_or_else(|| "none (messages to it are not encrypted)".into())
        );
    }
    Ok(())
}

#[derive(Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    network: NetworkArgs,
    /// Destination twin id.
    #[arg(long)]
    dst: u32,
    /// Command to call.
    #[arg(long)]
    cmd: String,
    /// Request body: text (usually JSON), or @FILE to send a file's bytes.
    #[arg(long, default_value = "")]
    data: String,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print a JSON object (reply or error) instead of the bare reply.
    #[arg(long)]
    json: bool,
}

/// Builds a client for the CLI. Callers keep the registrar record as it is; servers
/// (`serve-echo`, `listen`) make sure it lists the relays they connect to.
///
/// A caller connects as its own session (`rmb-call-<random>`): a twin's default session
/// is usually held by its long-running rmb-peer or service, and a second connection to
/// the same session would replace it at the relay.
async fn client(
    secret: &SecretArgs,
    network: &NetworkArgs,
    update: bool,
) -> anyhow::Result<Client> {
    let text = secret.secret()?;
    let session = (!update).then(|| format!("rmb-call-{:08x}", rand::random::<u32>()));
    let client = Client::builder(text.as_str(), secret.key_type)
        .registrar(network.registrar.clone())
        .relays(network.relays.clone())
        .session(session)
        .no_update(!update)
        .build()
        .await
        .map_err(exit::from_build)?;
    if !client.wait_connected(1, Duration::from_secs(10)).await {
        client.shutdown();
        return Err(CliError::Unreachable(format!(
            "no relay answered: {}",
            network.relays.join(", ")
        ))
        .into());
    }
    Ok(client)
}

pub(crate) async fn call(args: CallArgs) -> anyhow::Result<()> {
    let body = match args.data.strip_prefix('@') {
        Some(path) => {
            std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {path}: {e}")))?
        }
        None => args.data.clone().into_bytes(),
    };
    let client = client(&args.secret, &args.network, false).await?;
    let started = Instant::now();
    let result = client
        .call(args.dst, &args.cmd, body, Duration::from_secs(args.timeout))
        .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    client.shutdown();
    match result {
        Ok(reply) => {
            let reply = reply.payload;
            if args.json {
                let reply_value = serde_json::from_slice::<serde_json::Value>(&reply)
                    .unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&reply).into_owned())
                    });
                println!(
                    "{}",
                    serde_json::json!({"twin": args.dst, "cmd": args.cmd, "reply": reply_value, "ms": ms})
                );
            } else {
                std::io::stdout().write_all(&reply)?;
                if !reply.ends_with(b"\n") {
                    println!();
                }
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                let (code, message) = match &e {
                    CallError::Remote { code, message } => (*code, message.clone()),
                    other => (0, other.to_string()),
                };
                println!(
                    "{}",
                    serde_json::json!({"twin": args.dst, "cmd": args.cmd, "error": {"code": code, "message": message}})
                );
            }
            Err(CliError::Call(e).into())
        }
    }
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    network: NetworkArgs,
}

pub(crate) async fn serve_echo(args: ServeArgs) -> anyhow::Result<()> {
    let client = client(&args.secret, &args.network, true).await?;
    client.handle("echo", |req| async move { Ok(req.payload) });
    eprintln!(
        "serving `echo` as twin {} on {} (Ctrl-C stops)",
        client.twin_id(),
        args.network.relays.join(", ")
    );
    tokio::signal::ctrl_c().await?;
    client.shutdown();
    Ok(())
}

#[derive(Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    network: NetworkArgs,
    /// The command to listen for.
    #[arg(long)]
    cmd: String,
}

pub(crate) async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let client = client(&args.secret, &args.network, true).await?;
    client.handle(args.cmd.clone(), |req| async move {
        let line = serde_json::json!({
            "uid": req.uid,
            "src": req.source.to_string(),
            "cmd": req.command,
            "data": String::from_utf8_lossy(&req.payload),
        });
        println!("{line}");
        Ok(Vec::new())
    });
    eprintln!(
        "listening for `{}` as twin {} (Ctrl-C stops)",
        args.cmd,
        client.twin_id()
    );
    tokio::signal::ctrl_c().await?;
    client.shutdown();
    Ok(())
}
