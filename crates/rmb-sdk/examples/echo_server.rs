//! Serves `echo` (the request body back) until Ctrl-C.
//!
//! Reads `RMB_REGISTRAR`, `RMB_RELAY` (comma-separated ws:// or wss:// URLs),
//! `RMB_MNEMONIC` and `RMB_KEY_TYPE` (default sr25519). See the crate docs.

use rmb_sdk::{Client, KeyType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let key_type: KeyType = std::env::var("RMB_KEY_TYPE")
        .unwrap_or_else(|_| "sr25519".into())
        .parse()?;
    let relays = env("RMB_RELAY")?;
    let client = Client::builder(env("RMB_MNEMONIC")?, key_type)
        .registrar(env("RMB_REGISTRAR")?)
        .relays(relays.split(',').map(str::trim))
        .build()
        .await?;
    client.handle("echo", |req| async move {
        tracing::info!(from = %req.source, bytes = req.payload.len(), "echo");
        Ok(req.payload)
    });
    println!("serving echo as twin {}", client.twin_id());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
