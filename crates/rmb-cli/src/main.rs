//! # rmb: the RMB command line
//!
//! Keys (`rmb key new|show`), registration (`rmb register`), looking twins up
//! (`rmb twin`), calls (`rmb call`, script-friendly: exit codes and `--json`), test
//! services (`rmb serve-echo`, `rmb listen`), and `rmb up`: a complete local network
//! (registrar, relay, two end-to-end encrypting demo twins) in one process.

mod commands;
mod exit;
mod secret;
mod up;

use clap::{Parser, Subcommand};

/// RMB command line: keys, registration, calls, and a one-command local network.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Debug logs (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local RMB network (registrar + relay + two demo twins) and make a demo call.
    Up(up::UpArgs),
    /// Create or inspect keys.
    #[command(subcommand)]
    Key(commands::KeyCommand),
    /// Create or update this secret's twin in the registrar; prints the twin id.
    Register(commands::RegisterArgs),
    /// Show what the registrar says about a twin.
    Twin(commands::TwinArgs),
    /// Call a command on a twin and print the reply.
    Call(commands::CallArgs),
    /// Serve `echo`: reply with the request's body (to test a deployment).
    ServeEcho(commands::ServeArgs),
    /// Print every request for a command as it arrives (replies with an empty body).
    Listen(commands::ListenArgs),
}

fn main() {
    let cli = Cli::parse();
    // Lost relay links are retried by the SDK; at the CLI they are noise unless debugging.
    let default = if cli.debug {
        "debug"
    } else {
        "warn,rmb_sdk::pool=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Key(cmd) => commands::key(cmd),
            Command::Register(args) => commands::register(args).await,
            Command::Twin(args) => commands::twin(args).await,
            Command::Call(args) => commands::call(args).await,
            Command::ServeEcho(args) => commands::serve_echo(args).await,
            Command::Listen(args) => commands::listen(args).await,
        }
    });
    if let Err(e) = result {
        let code = exit::code_of(&e);
        eprintln!("error: {e:#}");
        if let Some(hint) = exit::hint_of(&e) {
            eprintln!("hint: {hint}");
        }
        std::process::exit(code);
    }
}
