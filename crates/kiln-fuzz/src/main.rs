//! `kiln-fuzz`: fuzzing on stable Rust (no nightly, no libFuzzer). One process = one worker
//! that generates inputs for one target until its time is up; `cargo xtask fuzz` runs workers
//! and restarts them after an abort or a hang.
//!
//! ```text
//! kiln-fuzz worker --target config --seconds 600 --out target/fuzz/config --seed 1 [--seeds DIR]
//! kiln-fuzz replay --target config FILE...     # run inputs once (exit 1 on a panic)
//! kiln-fuzz targets
//! ```
//!
//! The worker
//! - writes every input to `OUT/current` before running it, so an abort (allocation failure,
//!   stack overflow) that kills the process leaves the culprit for the driver;
//! - runs the target under `catch_unwind`: a panic is saved to `OUT/crashes/panic-<hash>` (and
//!   its message to `…msg`) and fuzzing goes on;
//! - has a watchdog thread: an input running longer than 5 s is a hang, saved to
//!   `OUT/hangs/hang-<hash>`, and the worker exits with code 3;
//! - caps its address space (4 GiB) so that a runaway allocation aborts instead of taking the
//!   machine's memory;
//! - writes `executions panics` to `OUT/stats` every second and on exit.

mod gen;
mod targets;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use gen::Rng;

/// An input running longer than this is a hang.
const HANG: Duration = Duration::from_secs(5);
/// Exit code of a worker that found a hang.
const EXIT_HANG: u8 = 3;

fn usage() -> ExitCode {
    eprintln!(
        "usage: kiln-fuzz worker --target T --seconds N --out DIR [--seed N] [--seeds DIR]\n       kiln-fuzz replay --target T FILE...\n       kiln-fuzz targets\ntargets: {}",
        targets::NAMES.join(", ")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let opt = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match cmd.as_str() {
        "targets" => {
            for t in targets::NAMES {
                println!("{t}");
            }
            ExitCode::SUCCESS
        }
        "worker" => {
            let (Some(target), Some(secs), Some(out)) =
                (opt("--target"), opt("--seconds"), opt("--out"))
            else {
                return usage();
            };
            let Ok(secs) = secs.parse::<u64>() else {
                return usage();
            };
            let seed = opt("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
            let seeds = opt("--seeds").map(PathBuf::from);
            match worker(
                &target,
                Duration::from_secs(secs),
                Path::new(&out),
                seed,
                seeds.as_deref(),
            ) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("kiln-fuzz: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "replay" => {
            let Some(target) = opt("--target") else {
                return usage();
            };
            let files: Vec<&String> = args[1..]
                .iter()
                .filter(|a| !a.starts_with("--") && **a != target)
                .collect();
            let Some(mut t) = targets::Target::new(&target, None) else {
                return usage();
            };
            let mut bad = 0;
            for f in files {
                let Ok(data) = std::fs::read(f) else {
                    eprintln!("{f}: cannot read");
                    bad += 1;
                    continue;
                };
                let started = Instant::now();
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(&data))) {
                    Ok(()) => println!("{f}: ok in {:?}", started.elapsed()),
                    Err(_) => {
                        println!("{f}: PANIC");
                        bad += 1;
                    }
                }
            }
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        _ => usage(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// FNV-1a, for crash file names.
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

fn limit_memory() {
    use nix::sys::resource::{setrlimit, Resource};
    let cap = 4u64 << 30;
    if let Err(e) = setrlimit(Resource::RLIMIT_AS, cap, cap) {
        eprintln!("kiln-fuzz: cannot cap the address space ({e}); continuing without");
    }
}

fn worker(
    target: &str,
    time: Duration,
    out: &Path,
    seed: u64,
    seeds: Option<&Path>,
) -> std::io::Result<u8> {
    let Some(mut t) = targets::Target::new(target, seeds) else {
        return Err(std::io::Error::other(format!(
            "unknown target \"{target}\" (targets: {})",
            targets::NAMES.join(", ")
        )));
    };
    std::fs::create_dir_all(out.join("crashes"))?;
    std::fs::create_dir_all(out.join("hangs"))?;
    limit_memory();

    // panics are expected findings: keep the message, print nothing
    let last_panic = Arc::new(Mutex::new(String::new()));
    {
        let lp = last_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut m) = lp.lock() {
                *m = info.to_string();
            }
        }));
    }

    let current = out.join("current");
    let stats = out.join("stats");
    let execs = Arc::new(AtomicU64::new(0));
    let panics = Arc::new(AtomicU64::new(0));
    let started_at = Arc::new(AtomicU64::new(0));
    let write_stats = {
        let (execs, panics, stats) = (execs.clone(), panics.clone(), stats.clone());
        move || {
            let _ = std::fs::write(
                &stats,
                format!(
                    "{} {}\n",
                    execs.load(Ordering::Relaxed),
                    panics.load(Ordering::Relaxed)
                ),
            );
        }
    };
    write_stats();
    {
        // watchdog: hangs and the periodic stats file
        let (started_at, current, out, write_stats) = (
            started_at.clone(),
            current.clone(),
            out.to_path_buf(),
            write_stats.clone(),
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            write_stats();
            let s = started_at.load(Ordering::Relaxed);
            if s != 0 && now_ms().saturating_sub(s) > HANG.as_millis() as u64 {
                let data = std::fs::read(&current).unwrap_or_default();
                let p = out.join("hangs").join(format!("hang-{:016x}", hash(&data)));
                let _ = std::fs::write(&p, &data);
                eprintln!("kiln-fuzz: HANG (> {:?}): saved {}", HANG, p.display());
                std::process::exit(EXIT_HANG as i32);
            }
        });
    }

    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        let input = t.generate(&mut rng);
        {
            let mut f = std::fs::File::create(&current)?;
            f.write_all(&input)?;
        }
        started_at.store(now_ms(), Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.run(&input)));
        started_at.store(0, Ordering::Relaxed);
        execs.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            panics.fetch_add(1, Ordering::Relaxed);
            let name = format!("panic-{:016x}", hash(&input));
            let msg = last_panic.lock().map(|m| m.clone()).unwrap_or_default();
            let dir = out.join("crashes");
            std::fs::write(dir.join(&name), &input)?;
            std::fs::write(dir.join(format!("{name}.msg")), &msg)?;
            eprintln!("kiln-fuzz: PANIC {name}: {msg}");
        }
    }
    write_stats();
    Ok(0)
}
