//! `cargo xtask fuzz --seconds N [--target T]…`: fuzzing on stable Rust.
//!
//! Builds `kiln-fuzz` (release) and runs one worker process per target for N seconds, restarting
//! it after an abort (the process died: allocation failure, stack overflow) or a hang (an input
//! ran > 5 s; the worker exits 3). Findings land in `target/fuzz/<target>/{crashes,hangs}/`;
//! the summary gives executions, panics, hangs and aborts per target and the exit code is 1 when
//! any target found something. Targets run one after the other (the machine is shared).

use anyhow::{bail, Context, Result};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TARGETS: &[&str] = &["config", "bootcmd", "sandbox", "http"];

#[derive(clap::Args)]
pub struct Args {
    /// Seconds per target
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run (default: all): config, bootcmd, sandbox, http
    #[arg(long = "target")]
    targets: Vec<String>,
    /// RNG seed of the first worker (each restart adds one)
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Default)]
struct Tally {
    execs: u64,
    panics: u64,
    hangs: u64,
    aborts: u64,
    restarts: u64,
}

pub fn run(a: Args) -> Result<()> {
    let root = crate::workspace_root();
    let targets: Vec<String> = if a.targets.is_empty() {
        TARGETS.iter().map(|s| s.to_string()).collect()
    } else {
        a.targets.clone()
    };
    for t in &targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!(
                "unknown fuzz target \"{t}\" (targets: {})",
                TARGETS.join(", ")
            );
        }
    }
    crate::run_cmd(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "kiln-fuzz",
    ]))?;
    let bin = root.join("target/release/kiln-fuzz");
    let mut rows = Vec::new();
    let mut found = false;
    for t in &targets {
        let out = root.join("target/fuzz").join(t);
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        eprintln!("fuzz {t}: {} s", a.seconds);
        let tally = run_target(&bin, t, &out, a.seconds, a.seed)?;
        found |= tally.panics + tally.hangs + tally.aborts > 0;
        rows.push((t.clone(), tally, out));
    }
    println!(
        "\n{:<8} {:>12} {:>8} {:>6} {:>7} {:>9}  findings",
        "target", "executions", "panics", "hangs", "aborts", "restarts"
    );
    for (t, x, out) in &rows {
        println!(
            "{:<8} {:>12} {:>8} {:>6} {:>7} {:>9}  {}",
            t,
            x.execs,
            x.panics,
            x.hangs,
            x.aborts,
            x.restarts,
            if x.panics + x.hangs + x.aborts > 0 {
                out.display().to_string()
            } else {
                "-".into()
            }
        );
    }
    if found {
        bail!("fuzzing found panics, hangs or aborts: replay them with `target/release/kiln-fuzz replay --target T FILE`");
    }
    Ok(())
}

fn read_stats(out: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(out.join("stats")).unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn run_target(bin: &Path, target: &str, out: &Path, seconds: u64, seed: u64) -> Result<Tally> {
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut seed = seed;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs();
        if left == 0 {
            break;
        }
        let _ = std::fs::remove_file(out.join("stats"));
        let status = Command::new(bin)
            .args(["worker", "--target", target, "--seconds", &left.to_string()])
            .arg("--out")
            .arg(out)
            .args(["--seed", &seed.to_string()])
            .status()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (e, p) = read_stats(out);
        tally.execs += e;
        tally.panics += p;
        match (status.code(), status.signal()) {
            (Some(0), _) => break,
            (Some(3), _) => tally.hangs += 1,
            (code, sig) => {
                // the process died on the input in `current`
                tally.aborts += 1;
                let data = std::fs::read(out.join("current")).unwrap_or_default();
                let dir = out.join("crashes");
                std::fs::create_dir_all(&dir)?;
                let name = format!("abort-{seed}");
                std::fs::write(dir.join(&name), &data)?;
                eprintln!(
                    "fuzz {target}: worker died (exit {code:?}, signal {sig:?}); input saved as {}",
                    dir.join(name).display()
                );
            }
        }
        tally.restarts += 1;
        seed += 1;
    }
    Ok(tally)
}
