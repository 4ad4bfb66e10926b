//! `kiln`: a thin command line over the library crates. Each subcommand lives in `cmd/<name>.rs`
//! with its own clap `Args` and a `run` function; this file only parses, sets up logging and maps
//! results to the exit-code contract (see `exit.rs`).

mod cmd;
mod exit;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build Proxmox VE VM templates from installer ISOs (Packer HCL2 compatible)"
)]
struct Cli {
    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// parsed once per process: the size of the largest variant does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Check that a template directory or file is valid
    Validate(cmd::validate::Args),
    /// Show variables, locals, sources and provisioners of a template
    Inspect(cmd::inspect::Args),
    /// Rewrite HCL files in canonical style, keeping comments
    Fmt(cmd::fmt::Args),
    /// Build the templates' sources into Proxmox VE VM templates
    Build(cmd::build::Args),
    /// List or prune the install cache's base templates (kiln build --cache-install)
    Cache(cmd::cache::Args),
    /// Check version pins, fetch and verify ISOs, install Ansible Galaxy requirements
    Init(cmd::init::Args),
    /// Open, close or show the HTTP server's port in the host firewall
    Port(cmd::port::Args),
    /// Run a Proxmox-VE-API-compatible server on real QEMU guests
    Sandbox(cmd::sandbox::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    #[command(hide = true)]
    Manpage,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version with exit 0 and usage errors with exit 2
            let code = if e.use_stderr() {
                exit::Code::Usage
            } else {
                exit::Code::Ok
            };
            let _ = e.print();
            return code.into();
        }
    };
    if matches!(
        cli.command,
        Command::Validate(_)
            | Command::Inspect(_)
            | Command::Fmt(_)
            | Command::Completions { .. }
            | Command::Manpage
    ) {
        default_sigpipe();
    }
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "kiln", &mut std::io::stdout());
            return exit::Code::Ok.into();
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => exit::Code::Ok.into(),
                Err(e) => {
                    eprintln!("error: writing the man page: {e}");
                    exit::Code::Failed.into()
                }
            };
        }
        _ => {}
    }
    init_logging(cli.verbose);
    // reqwest is built without a default crypto provider: install ring once, before any client.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::Code::Failed.into();
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Validate(a) => cmd::validate::run(a).await,
            Command::Inspect(a) => cmd::inspect::run(a).await,
            Command::Fmt(a) => cmd::fmt::run(a).await,
            Command::Build(a) => cmd::build::run(a).await,
            Command::Cache(a) => cmd::cache::run(a).await,
            Command::Init(a) => cmd::init::run(a).await,
            Command::Port(a) => cmd::port::run(a).await,
            Command::Sandbox(a) => cmd::sandbox::run(a).await,
            Command::Completions { .. } | Command::Manpage => Ok(exit::Code::Ok),
        }
    });
    match result {
        Ok(code) => code.into(),
        Err(report) => {
            eprintln!("{report:?}");
            exit::Code::Failed.into()
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,kiln=debug",
        _ => "debug,kiln=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Commands that only print (validate, inspect, fmt, completions, manpage) end quietly when their reader
/// goes away (`kiln inspect . | head`), as Unix tools do, instead of panicking in `println!` on EPIPE.
/// Not for `build`, `init`, `port` or `sandbox`: those must run their cleanup whatever happens to stdout.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: called at start-up on the main thread before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
