//! Where a command gets the twin's secret: `--mnemonic`, `--mnemonic-file` or the
//! `RMB_MNEMONIC` environment variable, so it never has to appear on a command line.

use clap::Args;
use rmb_core::KeyType;
use zeroize::Zeroizing;

use crate::exit::CliError;

#[derive(Args, Debug, Clone)]
pub(crate) struct SecretArgs {
    /// The twin's secret: BIP-39 words or 0x + 64 hex digits. Prefer --mnemonic-file or
    /// RMB_MNEMONIC: a command line is visible to other users.
    #[arg(short, long, env = "RMB_MNEMONIC", hide_env_values = true)]
    pub mnemonic: Option<String>,
    /// Read the secret from this file.
    #[arg(long, env = "RMB_MNEMONIC_FILE", conflicts_with = "mnemonic")]
    pub mnemonic_file: Option<std::path::PathBuf>,
    /// Key type of the secret.
    #[arg(short, long, env = "RMB_KEY_TYPE", default_value = "sr25519")]
    pub key_type: KeyType,
}

impl SecretArgs {
    pub(crate) fn secret(&self) -> anyhow::Result<Zeroizing<String>> {
        if let Some(m) = &self.mnemonic {
            return Ok(Zeroizing::new(m.clone()));
        }
        if let Some(path) = &self.mnemonic_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the secret from {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(Zeroizing::new(text.trim().to_string()));
        }
        Err(CliError::Usage(
            "no secret given: use --mnemonic-file FILE, RMB_MNEMONIC, or --mnemonic (create one with `rmb key new`)".into(),
        )
        .into())
    }
}

/// Where to reach the network.
#[derive(Args, Debug, Clone)]
pub(crate) struct NetworkArgs {
    /// Registrar base URL.
    #[arg(long, env = "RMB_REGISTRAR", default_value = "http://127.0.0.1:8080")]
    pub registrar: String,
    /// Relay URL (ws:// or wss://); repeat for several.
    #[arg(
        long = "relay",
        env = "RMB_RELAY",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8081"
    )]
    pub relays: Vec<String>,
}
