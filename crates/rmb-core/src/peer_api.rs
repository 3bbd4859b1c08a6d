//! The local Redis JSON API of rmb-peer (§4): list names, the four message shapes, and
//! the error codes the peer reports.
//!
//! Field names are the short ones on the wire (`ver`, `ref`, `cmd`, ...). Decoding is
//! lenient where existing apps are (missing `ver`, `tag`, `shm`, `now` take defaults), so
//! that apps written for the original rmb-peer keep working.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Where local clients push outgoing requests.
pub const SYSTEM_LOCAL: &str = "msgbus.system.local";
/// Where local services push their replies.
pub const SYSTEM_REPLY: &str = "msgbus.system.reply";
/// Entries kept per command list (the newest ones).
pub const COMMAND_LIST_CAP: usize = 10_000;
/// The command the peer itself answers with its version.
pub const VERSION_COMMAND: &str = "rmb.version";

/// The list a service pops requests for `command` from (see [`check_command`] for the
/// commands a peer refuses to map to a list).
pub fn command_list(command: &str) -> String {
    format!("msgbus.{command}")
}

/// Commands under these prefixes name the peer's own keys (`msgbus.system.local`,
/// `msgbus.system.reply`, `msgbus.backlog.<uid>`, and the peer's bookkeeping under
/// `msgbus.system.`), so a remote twin may not send them.
pub const RESERVED_COMMAND_PREFIXES: [&str; 2] = ["system.", "backlog."];

/// Why a remote command is not turned into a list name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandRefused {
    #[error("the command is empty")]
    Empty,
    #[error("the command is {len} bytes long; at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    #[error(
        "command {0:?} is reserved: msgbus.system.* and msgbus.backlog.* are the peer's own keys"
    )]
    Reserved(String),
    #[error(
        "command {0:?} has a character a command may not have (only printable ASCII without \
         spaces or * ? [ ] \\)"
    )]
    BadCharacter(String),
}

/// Whether a remote twin's `command` may become the list `msgbus.<command>`. Refused:
/// the peer's own namespaces, empty names, names longer than the envelope rules allow
/// ([`Rules::max_command_len`](crate::rules::Rules)), and anything but printable ASCII
/// without spaces and Redis glob characters (which would turn a service's
/// `SCAN msgbus.*` or `KEYS` into another pattern). The envelope rules' own command
/// charset is narrower; this one is what is safe as a key name, checked here again so
/// the peer's keys do not depend on every receiver applying the rules. Every command
/// the original clients and services use passes (`rmb.version`, `zos.statistics.get`).
pub fn check_command(command: &str) -> Result<(), CommandRefused> {
    if command.is_empty() {
        return Err(CommandRefused::Empty);
    }
    let max = crate::rules::Rules::default().max_command_len;
    if command.len() > max {
        return Err(CommandRefused::TooLong {
            len: command.len(),
            max,
        });
    }
    if RESERVED_COMMAND_PREFIXES
        .iter()
        .any(|p| command.starts_with(p) || command == p.trim_end_matches('.'))
    {
        return Err(CommandRefused::Reserved(command.to_string()));
    }
    let allowed = |b: u8| b.is_ascii_graphic() && !matches!(b, b'*' | b'?' | b'[' | b']' | b'\\');
    if !command.bytes().all(allowed) {
        return Err(CommandRefused::BadCharacter(command.to_string()));
    }
    Ok(())
}

/// The key under which the peer keeps the [`Backlog`](crate::proto::Backlog) of a request.
pub fn backlog_key(uid: &str) -> String {
    format!("msgbus.backlog.{uid}")
}

fn version_one() -> u32 {
    1
}

/// A request from a local app, popped from [`SYSTEM_LOCAL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingRequest {
    #[serde(rename = "ver", default = "version_one")]
    pub version: u32,
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
    #[serde(rename = "cmd")]
    pub command: String,
    #[serde(rename = "exp", default)]
    pub expiration: u64,
    #[serde(rename = "dat", default)]
    pub data: String,
    #[serde(rename = "tag", default)]
    pub tags: Option<String>,
    #[serde(rename = "dst")]
    pub destinations: Vec<u32>,
    #[serde(rename = "ret")]
    pub reply_to: String,
    #[serde(rename = "shm", default)]
    pub schema: Option<String>,
    #[serde(rename = "now", default)]
    pub timestamp: u64,
}

/// A request from a remote twin, pushed to `msgbus.<cmd>` for a local service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingRequest {
    #[serde(rename = "ver", default = "version_one")]
    pub version: u32,
    /// The envelope uid; the service copies it into its reply's `ref`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The sender's address, `"<twin>"` or `"<twin>:<sid>"`.
    #[serde(rename = "src")]
    pub source: String,
    #[serde(rename = "cmd")]
    pub command: String,
    #[serde(rename = "exp")]
    pub expiration: u64,
    #[serde(rename = "dat")]
    pub data: String,
    #[serde(rename = "tag", default)]
    pub tags: Option<String>,
    #[serde(rename = "ret")]
    pub reply_to: String,
    #[serde(rename = "shm", default)]
    pub schema: Option<String>,
    #[serde(rename = "now")]
    pub timestamp: u64,
}

/// A service's reply, popped from [`SYSTEM_REPLY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingResponse {
    #[serde(rename = "ver", default = "version_one")]
    pub version: u32,
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(rename = "dat", default)]
    pub data: String,
    #[serde(rename = "dst")]
    pub destination: String,
    #[serde(rename = "shm", default)]
    pub schema: Option<String>,
    #[serde(rename = "now", default)]
    pub timestamp: u64,
    #[serde(rename = "err", default)]
    pub error: Option<JsonError>,
}

/// A reply delivered to the app's `ret` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingResponse {
    #[serde(rename = "ver", default = "version_one")]
    pub version: u32,
    /// The app's own `ref` from its request.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    #[serde(rename = "dat")]
    pub data: String,
    #[serde(rename = "src")]
    pub source: String,
    #[serde(rename = "shm", default)]
    pub schema: Option<String>,
    #[serde(rename = "now")]
    pub timestamp: u64,
    #[serde(rename = "err", default)]
    pub error: Option<JsonError>,
}

/// The `err` object of a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonError {
    pub code: u32,
    pub message: String,
}

/// Error codes the peer writes into `err.code` (§4). Relay errors arrive with code 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// An error reported by a relay (unroutable, rate limited, ...).
    Relay = 0,
    InvalidMessage = 100,
    InvalidPayload = 101,
    /// Expired or otherwise invalid envelope.
    Expired = 102,
    UnknownTwin = 103,
    BadSignature = 104,
    NoPublicKey = 105,
    E2e = 106,
    Other = 500,
}

impl ErrorCode {
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// An `err` object with this code.
    pub fn with_message(self, message: impl Into<String>) -> JsonError {
        JsonError {
            code: self.code(),
            message: message.into(),
        }
    }
}

/// Decodes the standard-alphabet base64 `dat` field.
pub fn decode_data(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(data)
}

/// Encodes bytes for the `dat` field.
pub fn encode_data(data: &[u8]) -> String {
    STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_commands_pass_and_the_peers_own_keys_do_not() {
        for ok in [
            "rmb.version",
            "zos.deployment.deploy",
            "zos.network.list_wg_ports",
            "farmerbot.powermanager.poweron",
            "calc-add",
            "a:b/c@d",
            "systems.check",
            "zos.system.version",
        ] {
            assert_eq!(check_command(ok), Ok(()), "{ok}");
        }
        for reserved in [
            "system.local",
            "system.reply",
            "system.x",
            "backlog.abc",
            "system",
        ] {
            assert_eq!(
                check_command(reserved),
                Err(CommandRefused::Reserved(reserved.into()))
            );
        }
        assert_eq!(check_command(""), Err(CommandRefused::Empty));
        let max = crate::rules::Rules::default().max_command_len;
        assert_eq!(
            check_command(&"a".repeat(max + 1)),
            Err(CommandRefused::TooLong { len: max + 1, max })
        );
        assert!(check_command(&"a".repeat(max)).is_ok());
        for bad in [
            "two words",
            "new\nline",
            "tab\t",
            "glob*",
            "q?",
            "[x]",
            "back\\slash",
            "é",
        ] {
            assert!(
                matches!(check_command(bad), Err(CommandRefused::BadCharacter(_))),
                "{bad:?}"
            );
        }
    }
}
