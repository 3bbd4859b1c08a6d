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

/// The list a service pops requests for `command` from.
pub fn command_list(command: &str) -> String {
    format!("msgbus.{command}")
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
