//! `kiln inspect`: variables (sensitive values masked), locals, builds with their resolved
//! settings, provisioners and post-processors in order.

use crate::cmd::validate::{print_diags, TemplateArgs};
use crate::exit::{CmdResult, Code};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub template: TemplateArgs,
}

pub async fn run(args: Args) -> CmdResult {
    let opts = match args.template.load_options() {
        Ok(o) => o,
        Err(m) => {
            eprintln!("error: {m}");
            return Ok(Code::Usage);
        }
    };
    if !args.template.path.exists() {
        eprintln!(
            "error: {}: no such file or directory",
            args.template.path.display()
        );
        return Ok(Code::Usage);
    }
    match kiln_config::load(&args.template.path, &opts) {
        Ok(loaded) => {
            print_diags(&loaded.warnings, true);
            print!("{}", kiln_config::inspect::render(&loaded.plan));
            Ok(Code::Ok)
        }
        Err(e) => {
            print_diags(&e.warnings, false);
            print_diags(&e.errors, false);
            eprintln!("The configuration is invalid: {} error(s).", e.errors.len());
            Ok(Code::Failed)
        }
    }
}
