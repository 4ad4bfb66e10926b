//! `cargo xtask <task>`: project automation that is not part of the product.
//! Each task lives in its own module.

mod bench;
mod bootcmd_corpus;
mod config_docs;
mod corpus;
mod demo;
mod dist;
mod fuzz;
mod installed_disk;
mod packages;
mod regen_schema;
mod test;
mod test_guest;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install system packages, build the test guest, run every test tier
    Test(test::Args),
    /// Build (or reuse from cache) the Ubuntu-like autoinstall test-guest ISO
    TestGuest(test_guest::Args),
    /// Regenerate the sandbox's PVE API schema file from the official apidoc.json
    RegenSchema(regen_schema::Args),
    /// Extract the corpus boot_commands into kiln-bootcmd's test data
    BootcmdCorpus(bootcmd_corpus::Args),
    /// Snapshot the Packer template corpus into kiln-config's tests (+ golden inspect outputs)
    Corpus(corpus::Args),
    /// Write docs/configuration.md from kiln-config's typed model (--check: fail when stale)
    ConfigDocs(config_docs::Args),
    /// Install (or with --check only verify) the Debian packages the tests need, never removing any
    Packages(packages::Args),
    /// Build a Debian package of kiln (binary, man page, completions); --smoke installs and checks it
    Dist(dist::Args),
    /// Fuzz the parsers on stable Rust: --seconds N per target, --target config|bootcmd|sandbox|http
    Fuzz(fuzz::Args),
    /// Kiln side by side with Packer 1.6.6 and coreutils on this machine; writes docs/benchmarks.md
    Bench(bench::Args),
    /// First run without Proxmox: sandbox + `kiln build examples/test-guest` + a booted clone, then cleanup
    Demo(demo::Args),
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// Runs a command with inherited output; a non-zero exit is an error naming the command.
pub fn run_cmd(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    use anyhow::Context;
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        anyhow::bail!("{shown} failed: {status}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Test(a) => test::run(a),
        Task::TestGuest(a) => test_guest::run(a),
        Task::RegenSchema(a) => regen_schema::run(a),
        Task::BootcmdCorpus(a) => bootcmd_corpus::run(a),
        Task::Corpus(a) => corpus::run(a),
        Task::ConfigDocs(a) => config_docs::run(a),
        Task::Demo(a) => demo::run(a),
        Task::Bench(a) => bench::run(a),
        Task::Packages(a) => packages::run(a),
        Task::Dist(a) => dist::run(a),
        Task::Fuzz(a) => fuzz::run(a),
    }
}
