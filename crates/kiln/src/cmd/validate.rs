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

    /// The loader options for a template path that exists; otherwise says why on stderr and
    /// returns the usage exit code (a malformed `-var`, a missing path).
    pub fn prepare(&self) -> Result<kiln_config::LoadOptions, Code> {
        let opts = self.load_options().map_err(|m| {
            eprintln!("error: {m}");
            Code::Usage
        })?;
        if !self.path.exists() {
            eprintln!("error: {}: no such file or directory", self.path.display());
            return Err(Code::Usage);
        }
        Ok(opts)
    }
}

/// Raw arguments: Packer-style single-dash flags (`-var x=1`, `-var-file=f`) are accepted too.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Flags (`-var x=1` or `--var x=1`, `-var-file F`, `-only`, `-except`, `--short`) and the
    /// template directory or file; see `kiln validate --help`
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub argv: Vec<String>,
}

/// The real flags of `kiln validate`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "kiln validate",
    about = "Check that a template directory or file is valid (offline)"
)]
pub struct Flags {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Print one line per diagnostic (file:line:col: message) instead of the annotated report
    #[arg(long)]
    pub short: bool,
    /// Do not print warnings
    #[arg(long = "no-warnings")]
    pub no_warnings: bool,
    /// Only check the HCL syntax of the files (nothing is evaluated)
    #[arg(long = "syntax-only")]
    pub syntax_only: bool,
}

/// Long flags that may be written Packer-style with one dash.
const LONG: &[&str] = &[
    "var",
    "var-file",
    "only",
    "except",
    "short",
    "no-warnings",
    "syntax-only",
    "help",
];

/// `-var-file=x` → `--var-file=x` for the known long flags; everything else unchanged.
pub fn normalise_flags(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            let name = a
                .strip_prefix('-')
                .filter(|r| !r.starts_with('-'))
                .map(|r| r.split('=').next().unwrap_or(r));
            match name {
                Some(n) if LONG.contains(&n) => format!("-{a}"),
                _ => a.clone(),
            }
        })
        .collect()
}

/// Parse raw arguments into `T` (after [`normalise_flags`]); `Err` carries the exit code after
/// clap printed help or the usage error.
pub fn parse_flags<T: clap::Parser>(name: &str, argv: &[String]) -> Result<T, Code> {
    let args = std::iter::once(name.to_string()).chain(normalise_flags(argv));
    T::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            Code::Usage
        } else {
            Code::Ok
        }
    })
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
    let args: Flags = match parse_flags("kiln validate", &args.argv) {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let opts = match args.template.prepare() {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    if args.syntax_only {
        return match kiln_config::check_syntax(&args.template.path) {
            Ok(_) => {
                println!("Syntax-only check passed. Everything looks okay.");
                Ok(Code::Ok)
            }
            Err(e) => {
                print_diags(&e.errors, args.short);
                Ok(Code::Failed)
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packer_style_flags() {
        let argv: Vec<String> = [
            "-var",
            "a=1",
            "-var-file=x.pkrvars.hcl",
            "--only",
            "p.x",
            "-short",
            "dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f: Flags = parse_flags("kiln validate", &argv).unwrap();
        assert_eq!(f.template.vars, vec!["a=1".to_string()]);
        assert_eq!(f.template.var_files, vec![PathBuf::from("x.pkrvars.hcl")]);
        assert_eq!(f.template.only, vec!["p.x".to_string()]);
        assert!(f.short);
        assert_eq!(f.template.path, PathBuf::from("dir"));
    }
}
