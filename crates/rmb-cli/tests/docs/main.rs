//! The documentation is tested: every fenced block in `README.md` and `docs/*.md` that
//! shows commands, JSON, TOML or HTTP is checked against the code, and the README's
//! tour is run for real.
//!
//! Conventions for doc writers (the info string is the text after the opening fence):
//!
//! - ` ```json ` — must parse. ` ```json <type> ` must also deserialize into that type and
//!   keep every field it shows (a misspelt field fails): `peer-request`,
//!   `peer-incoming-request`, `peer-reply`, `peer-incoming-reply` (rmb_core::peer_api,
//!   PROTOCOL.md §4), `registrar-account`, `registrar-accounts`, `registrar-create`,
//!   `registrar-update`, `registrar-error` (rmb_registrar_client::wire). Unknown types fail.
//! - ` ```toml ` — must parse as TOML.
//! - ` ```http ` — a request (`METHOD /path HTTP/1.1`, headers, blank line, body)
//!   followed by its response (`HTTP/1.1 <status> <reason>`, headers, blank line, JSON
//!   body). Each file's exchanges are replayed in order against a fresh registrar whose
//!   time window accepts any timestamp; status, listed headers and body must match
//!   exactly, except `created_at`/`updated_at` (any number) and `…` inside a string
//!   (any text).
//! - ` ```sh ` / `shell` / `bash` / `console` — every `rmb …` command must use a real
//!   subcommand and real flags (checked against `rmb <subcommand> --help`); `rmb-peer`,
//!   `rmb-relay` and `rmb-registrar` commands must use flags their clap definitions
//!   declare. Flag tables (rows starting with a flag) in docs/relay.md, docs/rmb-peer.md
//!   and docs/registrar.md name real flags, and every flag of those binaries is
//!   mentioned in its page.
//! - ` ```rust excerpt=<path> ` — the lines must appear, in order, in that file (which
//!   the workspace compiles). Other ` ```rust ` blocks fail: say where the code lives.
//! - ` ```sh tour ` and ` ```python tour ` (README only) — run in order against a real
//!   `rmb up` network on free ports, in a temp directory where `.rmb-up` is its data
//!   dir. `127.0.0.1:8080`, `127.0.0.1:8081` and `127.0.0.1:6379` are replaced by the
//!   actual registrar, relay and Redis addresses. `rmb …` lines run the real binary and
//!   must succeed; `rmb-peer …` starts the peer (in-process, from its flags); the
//!   SDK example line runs the example's calls in-process; setup lines (`scripts/demo`,
//!   `cargo install`, `pip install`, `redis-server`) are done by the harness, and any
//!   other line fails. A trailing `# → text` comment (or, in Python, a `# → text` line)
//!   means the output must contain `text` (whitespace runs compared as one space).
//!   The Python step is skipped with a note when python3 or redis-py is missing, like
//!   crates/rmb-peer/tests/examples.rs.
//! - Other blocks (` ```text `, bare fences for diagrams) are not checked.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmb_core::peer_api::{IncomingRequest, IncomingResponse, OutgoingRequest, OutgoingResponse};
use rmb_core::KeyType;
use rmb_registrar_client::wire::{AccountJson, CreateRequest, ErrorBody, UpdateRequest};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub(crate) const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

mod architecture;
mod blocks;
mod checkers;
mod data;
mod excerpts;
mod http;
mod shell;
mod tour;

use architecture::*;
use blocks::*;
use data::*;
use excerpts::*;
use http::*;
use shell::*;
use tour::*;
