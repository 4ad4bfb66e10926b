//! `kiln validate`: load a template directory or file, report every error (file:line:col with
//! the source line) and warning. Offline: nothing is downloaded.

use crate::exit::{CmdResult, Code};
use std::path::PathBuf;

/// Template selection and variable values, shared by `validate`, `inspect` (and `build`).
#[derive(clap::Args, Debug, Clone)]
pub struct TemplateArgs {
    /// Template directory (all *.pkr.hcl + *.auto.pkrvars.hcl) or a single .pkr.hcl file
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Set a variable: -var name=value (repeatable; later wins)
    #[arg(long = "var", value_name = "NAME=VALUE", allow_hyphen_values = true)]
    pub vars: Vec<String>,
    /// Load variable values from a file (repeatable; later wins over earlier)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Only these builds (`proxmox-iso.ubuntu`, globs with *), comma-separated
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// All builds except these, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub except: Vec<String>,
}

impl TemplateArgs {
    /// Build the loader options; a malformed `-var` is a usage error.
    pub fn load_options(&self) -> Result<kiln_config::LoadOptions, String> {
        let mut opts = kiln_config::LoadOptions::default();
        for v in &self.vars {
            match v.split_once('=') {
                Some((k, val)) if !k.trim().is_empty() => {
                    opts.vars.push((k.trim().to_string(), val.to_string()))
                }
                _ => return Err(format!("-var \"{v}\": expected NAME=VALUE")),
            }
        }
        opts.var_files = self.var_files.clone();
        opts.only = self.only.clone();
        opts.except = self.except.clone();
        Ok(opts)
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Print one line per diagnostic (file:line:col: message) instead of the annotated report
    #[arg(long)]
    pub short: bool,
    /// Do not print warnings
    #[arg(long)]
    pub no_warnings: bool,
}

/// Print diagnostics with miette (annotated source lines) or one per line.
pub fn print_diags(diags: &[kiln_config::Diag], short: bool) {
    for d in diags {
        if short {
            eprintln!("{}", d.one_line());
        } else {
            eprintln!("{:?}", miette::Report::new(d.clone()));
        }
    }
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
            if !args.no_warnings {
                print_diags(&loaded.warnings, args.short);
            }
            let n = loaded.plan.runs.len();
            println!(
                "The configuration is valid ({n} build{}).",
                if n == 1 { "" } else { "s" }
            );
            Ok(Code::Ok)
        }
        Err(e) => {
            if !args.no_warnings {
                print_diags(&e.warnings, args.short);
            }
            print_diags(&e.errors, args.short);
            let n = e.errors.len();
            eprintln!(
                "The configuration is invalid: {n} error{}.",
                if n == 1 { "" } else { "s" }
            );
            Ok(Code::Failed)
        }
    }
}
