//! Exit codes, so shell scripts can tell failures apart.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | other error |
//! | 2 | bad usage or input (also clap's own usage errors) |
//! | 3 | registrar or relay unreachable |
//! | 4 | unknown twin |
//! | 5 | timeout: no reply in time |
//! | 6 | the remote service answered with an error |
//! | 7 | a relay refused or could not route the request |

use rmb_sdk::{BuildError, CallError, SendError};

/// An error that knows its exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    Usage(String),
    Unreachable(String),
    UnknownTwin(u32),
    Call(CallError),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unreachable(m) => f.write_str(m),
            CliError::UnknownTwin(t) => write!(f, "twin {t} is not registered"),
            CliError::Call(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {}

pub(crate) fn code_of(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<CliError>() {
        Some(CliError::Usage(_)) => 2,
        Some(CliError::Unreachable(_)) => 3,
        Some(CliError::UnknownTwin(_)) => 4,
        Some(CliError::Call(c)) => match c {
            CallError::Timeout => 5,
            CallError::Remote { .. } => 6,
            CallError::Relay(_) => 7,
            CallError::NotSent(SendError::UnknownTwin(_)) => 4,
            CallError::NotSent(SendError::Registrar(_) | SendError::Closed)
            | CallError::NotConnected => 3,
            _ => 1,
        },
        None => 1,
    }
}

pub(crate) fn hint_of(e: &anyhow::Error) -> Option<&'static str> {
    match e.downcast_ref::<CliError>()? {
        CliError::Unreachable(_) => Some("is the registrar/relay running? `rmb up` starts a local network; check --registrar and --relay"),
        CliError::UnknownTwin(_) => Some("check the twin id with `rmb twin <id>`"),
        CliError::Call(CallError::Timeout) => Some("the destination may be offline or slow; raise --timeout or check it is connected"),
        CliError::Call(CallError::Unconfirmed(_)) => Some("the request may have run: check with the destination before calling again"),
        CliError::Usage(_) => Some("see --help"),
        _ => None,
    }
}

/// Maps a client start-up failure to a CLI error with the right exit code.
pub(crate) fn from_build(e: BuildError) -> anyhow::Error {
    let text = format!("cannot start the client: {e}");
    match e {
        BuildError::Registrar(
            rmb_registrar_client::ClientError::Timeout
            | rmb_registrar_client::ClientError::Unreachable(_)
            | rmb_registrar_client::ClientError::Busy,
        ) => CliError::Unreachable(text).into(),
        BuildError::Registrar(_) => anyhow::anyhow!(text),
        _ => CliError::Usage(text).into(),
    }
}

/// Maps a registrar client failure.
pub(crate) fn from_registrar(e: rmb_registrar_client::ClientError) -> anyhow::Error {
    match e {
        rmb_registrar_client::ClientError::Timeout
        | rmb_registrar_client::ClientError::Unreachable(_)
        | rmb_registrar_client::ClientError::Busy => {
            CliError::Unreachable(format!("registrar: {e}")).into()
        }
        rmb_registrar_client::ClientError::InvalidUrl(_) => {
            CliError::Usage(format!("registrar: {e}")).into()
        }
        other => anyhow::anyhow!("registrar: {other}"),
    }
}
