//! `kiln validate`

use crate::exit::{CmdResult, Code};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub async fn run(_args: Args) -> CmdResult {
    eprintln!("kiln validate: not implemented yet");
    Ok(Code::Usage)
}
