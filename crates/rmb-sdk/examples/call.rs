//! Calls a command on a twin and prints the reply: `call <twin> <command> [body]`.
//!
//! Reads `RMB_REGISTRAR`, `RMB_RELAY` (comma-separated ws:// or wss:// URLs),
//! `RMB_MNEMONIC` and `RMB_KEY_TYPE` (default sr25519). See the crate docs.

use std::time::Duration;

use rmb_sdk::{Client, KeyType};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let mut args = std::env::args().skip(1);
    let usage = "usage: call <twin> <command> [body]";
    let twin: u32 = args.next().ok_or(usage)?.parse()?;
    let command = args.next().ok_or(usage)?;
    let body = args.next().unwrap_or_default();
    let key_type: KeyType = std::env::var("RMB_KEY_TYPE")
        .unwrap_or_else(|_| "sr25519".into())
        .parse()?;
    let relays = env("RMB_RELAY")?;
    let client = Client::builder(env("RMB_MNEMONIC")?, key_type)
        .registrar(env("RMB_REGISTRAR")?)
        .relays(relays.split(',').map(str::trim))
        .build()
        .await?;
    let reply = client
        .request(twin, command)
        .payload(body)
        .timeout(Duration::from_secs(30))
        .call()
        .await?;
    println!("{}", String::from_utf8_lossy(&reply.payload));
    Ok(())
}
