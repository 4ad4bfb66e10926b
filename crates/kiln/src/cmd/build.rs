//! `kiln build [flags] DIR|FILE`: build the template's `proxmox-iso` sources.
//!
//! Packer's flag names are accepted in both spellings: `-var x=1` (Packer style, single dash) and
//! `--var x=1`. To allow that, clap hands this command its arguments raw (`argv`); `run`
//! rewrites single-dash long flags to double-dash ones and parses them with [`Flags`].

use crate::exit::{CmdResult, Code};
use clap::Parser;
use kiln_build::pipeline::StdinAsker;
use kiln_build::{BuildOptions, Masker, OnError, Ui, UiOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Flags (Packer style `-var x=1` or `--var x=1`; see `kiln build -h`) and the template
    /// directory or file
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub argv: Vec<String>,
}

/// The real flags of `kiln build`.
#[derive(Parser, Debug)]
#[command(
    name = "kiln build",
    about = "Build the template's proxmox-iso sources into Proxmox VE templates"
)]
pub struct Flags {
    /// Template directory (all *.pkr.hcl + *.auto.pkrvars.hcl) or a single .pkr.hcl file
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Set a variable: -var name=value (repeatable; later wins)
    #[arg(long = "var", value_name = "NAME=VALUE", allow_hyphen_values = true)]
    pub vars: Vec<String>,
    /// Load variable values from a file (repeatable)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Only these builds (`proxmox-iso.ubuntu`, globs with *), comma-separated
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// All builds except these, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub except: Vec<String>,
    /// Replace an existing template with the same vm_id or name
    #[arg(long)]
    pub force: bool,
    /// kiln: only check the configuration against Proxmox VE (node, storage pools and their
    /// content types, bridges, iso_file, vm_id, privileges); create and upload nothing
    #[arg(long)]
    pub preflight: bool,
    /// What to do when a build fails: cleanup (default), abort (keep the VM), ask
    #[arg(long = "on-error", default_value = "cleanup")]
    pub on_error: String,
    /// How many builds run at once (0 = all)
    #[arg(long = "parallel-builds", default_value_t = 0)]
    pub parallel_builds: usize,
    /// Prefix every output line with a timestamp
    #[arg(long = "timestamp-ui")]
    pub timestamp_ui: bool,
    /// Packer's machine-readable output (timestamp,target,type,data…)
    #[arg(long = "machine-readable")]
    pub machine_readable: bool,
    /// Accepted for Packer compatibility (colour is not used)
    #[arg(long = "color", default_value = "true", num_args = 0..=1, default_missing_value = "true")]
    pub color: String,
    /// Accepted for Packer compatibility; use -on-error=ask to stop at failures
    #[arg(long)]
    pub debug: bool,
    /// More log output (also accepted before `build`)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// kiln: say "nothing fetched from the HTTP server" after this many seconds
    #[arg(long = "http-diag-after", value_name = "SECONDS")]
    pub http_diag_after: Option<u64>,
    /// kiln: open the HTTP server's port in the host firewall for the build and close it afterwards
    /// (auto, iptables, nftables, ufw, nixos; see `kiln port`)
    #[arg(
        long = "open-firewall",
        value_name = "BACKEND",
        num_args = 0..=1,
        default_missing_value = "auto",
        require_equals = true,
        env = "KILN_OPEN_FIREWALL"
    )]
    pub open_firewall: Option<String>,
    /// kiln: cached install layers — reuse the installed system of an earlier build with the same
    /// install inputs (a hidden base template on PVE, `kiln cache ls|prune`), or keep this one's
    #[arg(long = "cache-install")]
    pub cache_install: bool,
}

/// Long flag names that may be written with a single dash.
const LONG: &[&str] = &[
    "var",
    "var-file",
    "only",
    "except",
    "force",
    "preflight",
    "on-error",
    "parallel-builds",
    "timestamp-ui",
    "machine-readable",
    "color",
    "debug",
    "http-diag-after",
    "open-firewall",
    "cache-install",
    "help",
];

/// `-var` → `--var`, `-on-error=abort` → `--on-error=abort`; everything else unchanged.
pub fn normalize_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut rest_is_positional = false;
    for a in argv {
        if rest_is_positional {
            out.push(a.clone());
            continue;
        }
        if a == "--" {
            rest_is_positional = true;
            out.push(a.clone());
            continue;
        }
        if let Some(body) = a.strip_prefix('-').filter(|b| !b.starts_with('-')) {
            let name = body.split('=').next().unwrap_or_default();
            if LONG.contains(&name) {
                out.push(format!("-{a}"));
                continue;
            }
        }
        out.push(a.clone());
    }
    out
}

pub async fn run(args: Args) -> CmdResult {
    let argv = normalize_argv(&args.argv);
    let flags = match Flags::try_parse_from(std::iter::once("kiln build".to_string()).chain(argv)) {
        Ok(f) => f,
        Err(e) => {
            let code = if e.use_stderr() {
                Code::Usage
            } else {
                Code::Ok
            };
            let _ = e.print();
            return Ok(code);
        }
    };
    let on_error: OnError = match flags.on_error.parse() {
        Ok(o) => o,
        Err(m) => {
            eprintln!("error: {m}");
            return Ok(Code::Usage);
        }
    };
    let open_firewall = match flags
        .open_firewall
        .as_deref()
        .map(str::parse::<kiln_firewall::Choice>)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("error: --open-firewall: {e}");
            return Ok(Code::Usage);
        }
    };
    let template = crate::cmd::validate::TemplateArgs {
        path: flags.path.clone(),
        vars: flags.vars.clone(),
        var_files: flags.var_files.clone(),
        only: flags.only.clone(),
        except: flags.except.clone(),
    };
    let opts = match template.prepare() {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let loaded = match kiln_config::load(&flags.path, &opts) {
        Ok(l) => l,
        Err(e) => {
            crate::cmd::validate::print_diags(&e.warnings, false);
            crate::cmd::validate::print_diags(&e.errors, false);
            let n = e.errors.len();
            eprintln!(
                "The configuration is invalid: {n} error{}.",
                if n == 1 { "" } else { "s" }
            );
            return Ok(Code::Failed);
        }
    };
    crate::cmd::validate::print_diags(&loaded.warnings, true);
    let plan = loaded.plan;
    if plan.runs.is_empty() {
        eprintln!(
            "error: nothing to build: no proxmox-iso source is selected (check -only/-except)"
        );
        return Ok(Code::Failed);
    }
    let masker = Arc::new(Masker::new());
    for s in &plan.sensitive_values {
        masker.add(s);
    }
    let ui = Ui::stdout(
        UiOptions {
            timestamp: flags.timestamp_ui,
            machine_readable: flags.machine_readable,
        },
        masker,
    );
    let cancel = CancellationToken::new();
    let sig = kiln_build::signals::cancel_on_signals(cancel.clone());
    let bopts = BuildOptions {
        on_error,
        force: flags.force,
        parallel_builds: flags.parallel_builds,
        http_diag_after: flags.http_diag_after.map(Duration::from_secs),
        open_firewall,
        cache_install: flags.cache_install,
    };
    if flags.preflight {
        let ok = kiln_build::preflight_plan(&plan, &bopts, &ui, cancel.clone()).await;
        sig.abort();
        return Ok(if cancel.is_cancelled() {
            Code::Interrupted
        } else if ok {
            Code::Ok
        } else {
            Code::Failed
        });
    }
    let summary =
        kiln_build::build_plan(&plan, &bopts, &ui, cancel.clone(), Arc::new(StdinAsker)).await;
    sig.abort();
    if summary.cancelled {
        return Ok(Code::Interrupted);
    }
    Ok(if summary.all_ok() {
        Code::Ok
    } else {
        Code::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn packer_style_flags_are_normalised() {
        assert_eq!(
            normalize_argv(&v(&[
                "-var",
                "a=1",
                "-on-error=abort",
                "-force",
                "--only",
                "x",
                "-v",
                "dir"
            ])),
            v(&[
                "--var",
                "a=1",
                "--on-error=abort",
                "--force",
                "--only",
                "x",
                "-v",
                "dir"
            ])
        );
        assert_eq!(normalize_argv(&v(&["--", "-force"])), v(&["--", "-force"]));
    }

    #[test]
    fn flags_parse_both_spellings() {
        let f = Flags::try_parse_from(std::iter::once("kiln build".to_string()).chain(
            normalize_argv(&v(&[
                "-var",
                "a=1",
                "--var-file",
                "x.pkrvars.hcl",
                "-parallel-builds=2",
                "-timestamp-ui",
                "-cache-install",
                "tpl",
            ])),
        ));
        let f = f.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.vars, v(&["a=1"]));
        assert_eq!(f.parallel_builds, 2);
        assert!(f.timestamp_ui);
        assert!(f.cache_install);
        assert_eq!(f.path, PathBuf::from("tpl"));
    }
}
