//! `kiln fmt`: rewrite *.pkr.hcl / *.pkrvars.hcl files in canonical HCL style, keeping comments.
//! `--check` only reports (exit 1 if a file would change), `--diff` prints a unified diff,
//! `--recursive` descends into sub-directories (as `packer fmt -recursive`).

use crate::exit::{CmdResult, Code};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (default: the current directory)
    #[arg(default_value = ".")]
    pub paths: Vec<PathBuf>,
    /// Do not write; exit 1 if any file is not formatted
    #[arg(long)]
    pub check: bool,
    /// Print a unified diff of the changes
    #[arg(long)]
    pub diff: bool,
    /// Also format files in sub-directories
    #[arg(long)]
    pub recursive: bool,
    /// Do not write the files (implied by --check)
    #[arg(long = "no-write")]
    pub no_write: bool,
}

fn is_hcl(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    n.ends_with(".pkr.hcl") || n.ends_with(".pkrvars.hcl")
}

fn collect(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::metadata(&p)?;
        if meta.is_dir() {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if recursive && !hidden {
                collect(&p, recursive, out)?;
            }
        } else if is_hcl(&p) {
            out.push(p);
        }
    }
    Ok(())
}

pub async fn run(args: Args) -> CmdResult {
    let mut files = Vec::new();
    for p in &args.paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if let Err(e) = collect(p, args.recursive, &mut files) {
                    eprintln!("error: {}: {e}", p.display());
                    return Ok(Code::Failed);
                }
            }
            Ok(_) => files.push(p.clone()),
            Err(e) => {
                eprintln!("error: {}: {e}", p.display());
                return Ok(Code::Usage);
            }
        }
    }
    let mut failed = false;
    let mut unformatted = false;
    for f in &files {
        let src = match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                failed = true;
                continue;
            }
        };
        let out = match kiln_config::fmt::format_hcl(&src) {
            Ok(o) => o,
            Err(m) => {
                eprintln!("error: {}: {m}", f.display());
                failed = true;
                continue;
            }
        };
        if out == src {
            continue;
        }
        unformatted = true;
        println!("{}", f.display());
        if args.diff {
            print!(
                "{}",
                kiln_config::fmt::unified_diff(&f.display().to_string(), &src, &out)
            );
        }
        if !args.check && !args.no_write {
            if let Err(e) = std::fs::write(f, &out) {
                eprintln!("error: cannot write {}: {e}", f.display());
                failed = true;
            }
        }
    }
    if failed || (args.check && unformatted) {
        return Ok(Code::Failed);
    }
    Ok(Code::Ok)
}
