//! `kiln inspect`: variables (sensitive values masked), locals, builds with their resolved
//! settings, provisioners and post-processors in order.

use crate::cmd::validate::{parse_flags, print_diags, TemplateArgs};
use crate::exit::{CmdResult, Code};

/// Raw arguments (Packer-style single-dash flags accepted, as for `validate`).
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Flags (`-var x=1`, `-var-file F`, `-only`, `-except`) and the template directory or file
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub argv: Vec<String>,
}

/// The real flags of `kiln inspect`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "kiln inspect",
    about = "Show variables, locals, sources and provisioners of a template"
)]
pub struct Flags {
    #[command(flatten)]
    pub template: TemplateArgs,
}

pub async fn run(args: Args) -> CmdResult {
    let args: Flags = match parse_flags("kiln inspect", &args.argv) {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let opts = match args.template.prepare() {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    match kiln_config::load(&args.template.path, &opts) {
        Ok(loaded) => {
            print_diags(&loaded.warnings, true);
            print!("{}", kiln_config::inspect::render(&loaded.plan));
            print!("{}", install_cache(&loaded.plan));
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

/// The install-cache section: each `proxmox-iso` build's key and base name (whether a base with
/// that key exists is only known to `kiln build --cache-install`, which asks PVE).
pub fn install_cache(plan: &kiln_config::BuildPlan) -> String {
    let root = std::path::absolute(&plan.root).unwrap_or_else(|_| plan.root.clone());
    let mut out = String::from("\nInstall cache (kiln build --cache-install; off unless given):\n");
    if plan.runs.is_empty() {
        out.push_str("  (no builds)\n");
    }
    for run in &plan.runs {
        let name = run.full_name();
        if run.source_type == kiln_config::model::keys::CLONE {
            out.push_str(&format!(
                "  {name}: not applicable (a proxmox-clone build installs nothing)\n"
            ));
            continue;
        }
        match kiln_build::cache::compute_key(run, &root, &|_| None) {
            Ok(k) => out.push_str(&format!(
                "  {name}: key {}, base template {}\n",
                k.display(),
                k.base_name()
            )),
            Err(e) => out.push_str(&format!("  {name}: key known at build time only ({e})\n")),
        }
    }
    out
}
