//! One module per subcommand. Each has `Args` (clap) and `async fn run(Args) -> CmdResult`.
pub mod build;
pub mod cache;
pub mod fmt;
pub mod init;
pub mod inspect;
pub mod port;
pub mod sandbox;
pub mod validate;

use std::path::Path;

/// The HTTP port a template's builds start from (`http_port_min` of its first proxmox-iso source), for
/// commands that default to "the template's port" (`kiln port`).
pub fn template_http_port(dir: &Path) -> miette::Result<u16> {
    let loaded = kiln_config::load(dir, &kiln_config::LoadOptions::default())
        .map_err(miette::Report::new)?;
    let ports: Vec<u16> = loaded
        .plan
        .runs
        .iter()
        .map(|r| r.config.http_port_min)
        .collect();
    match ports.first() {
        Some(&p) => {
            if ports.iter().any(|&q| q != p) {
                eprintln!("note: the template's sources use different http_port_min values {ports:?}; using {p}");
            }
            Ok(p)
        }
        None => Err(miette::miette!(
            help = "pass --port N",
            "{} has no proxmox-iso source, so it names no HTTP port",
            dir.display()
        )),
    }
}
