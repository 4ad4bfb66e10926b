//! `cargo xtask test-guest`

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("test-guest: not implemented yet")
}
