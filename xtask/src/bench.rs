//! `cargo xtask bench`: kiln measured side by side with the tools it replaces, on this machine.
//!
//! One command, one run, one table (printed, and written to `docs/benchmarks.md` unless `--smoke`):
//! 1. the machine: cores, accelerator (KVM or TCG), load average before and after;
//! 2. the same template built on one `kiln sandbox` by Packer 1.6.6 (JSON) and by kiln (HCL2): wall
//!    time, CPU time and peak RSS of each tool (`wait4` rusage of the child), phase times taken from
//!    the sandbox's event log, the guest's serial log and the tool's output, and the wall ratio;
//!    kiln's overhead = its wall time minus the guest's own work, every second named;
//! 3. ISO upload through kiln's client (`kiln-pve` example `upload`) vs `curl` to the same sandbox, 1 GiB;
//!    ISO verification: kiln's streamed hash (`kiln-iso` example `verify`) vs `sha256sum`, 1 GiB;
//! 4. `kiln validate` of every corpus template.
//!
//! `--reps N` repeats the measurements (min and median are reported). It is not a test and not part of
//! CI; `--smoke` runs the parts without QEMU on small data and writes nothing. Needs root (network
//! namespace), QEMU, Packer 1.6.6 and the test guest, like `cargo xtask demo`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Repetitions of every measurement (min and median are reported)
    #[arg(long, default_value_t = 1)]
    reps: u32,
    /// Quick check without QEMU: small file, no builds, prints only (docs/benchmarks.md untouched)
    #[arg(long)]
    smoke: bool,
    /// Skip the Packer/kiln builds (no QEMU); the rest is measured and written
    #[arg(long)]
    no_builds: bool,
    /// QEMU accelerator of the sandbox: tcg (default, what CI and the tests use) or kvm
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    accel: String,
}

/// Output lines with the second they arrived at.
type TimedLines = Arc<Mutex<Vec<(f64, String)>>>;

/// What `wait4` says about a finished child.
#[derive(Clone, Debug, Default)]
struct Usage {
    wall: f64,
    cpu: f64,
    max_rss_mib: f64,
    code: i32,
}

/// Run `cmd` to its end; each output line goes to `lines` with its time since `t0`.
fn measured(cmd: &mut Command, t0: Instant, lines: Option<TimedLines>) -> Result<Usage> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null());
    if lines.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
    let mut readers = Vec::new();
    if let Some(lines) = &lines {
        let outs: Vec<Box<dyn std::io::Read + Send>> = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for out in outs {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut v) = lines.lock() {
                        v.push((t0.elapsed().as_secs_f64(), l));
                    }
                }
            }));
        }
    }
    let pid = child.id() as nix::libc::pid_t;
    let mut status: nix::libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child `pid`.
    #[allow(unsafe_code)]
    let (r, ru) = unsafe {
        let mut ru: nix::libc::rusage = std::mem::zeroed();
        let r = nix::libc::wait4(pid, &mut status, 0, &mut ru);
        (r, ru)
    };
    if r != pid {
        bail!("wait4 for {shown}: {}", std::io::Error::last_os_error());
    }
    let wall = start.elapsed().as_secs_f64();
    for r in readers {
        let _ = r.join();
    }
    let tv = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if nix::libc::WIFEXITED(status) {
        nix::libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(Usage {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_mib: ru.ru_maxrss as f64 / 1024.0,
        code,
    })
}

fn min_median(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (s[0], s[s.len() / 2])
}

/// A table row `| a | b | … |`.
fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let reps = args.reps.max(1);
    let mut md = String::new();
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kvm = kvm_works();
    if args.accel == "kvm" && !kvm {
        bail!("--accel kvm: /dev/kvm cannot create a VM on this machine; use --accel tcg");
    }
    let accel = args.accel.as_str();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "not installed".into());

    // One cargo invocation: built separately, the binary and the examples unify features differently
    // and each invocation rebuilt most of the release graph.
    eprintln!("bench: building kiln (release) and the verify and upload examples");
    let mut build = Command::new("cargo");
    build
        .args(["build", "--release", "-p", "kiln", "--bin", "kiln"])
        .args(["-p", "kiln-iso", "--example", "verify"])
        .current_dir(&root);
    if !args.smoke && !args.no_builds {
        build.args(["-p", "kiln-pve", "--example", "upload"]);
    }
    crate::run_cmd(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let kiln = target.join("release/kiln");
    let verify = target.join("release/examples/verify");
    let work = target.join("bench");
    std::fs::create_dir_all(&work)?;

    md.push_str("# kiln benchmarks\n\nWritten by `cargo xtask bench` (do not edit by hand; run it again).\n\n");
    md.push_str(&format!(
        "Machine: {cores} cores, accelerator **{accel}** (KVM usable here: {}), {qemu}; load average at the start `{}`, repetitions {reps} (min / median).\n\n",
        if kvm { "yes" } else { "no" },
        load0.trim()
    ));

    // ---- builds: Packer 1.6.6 (JSON) and kiln (HCL2), same template, one sandbox ----
    if !args.smoke && !args.no_builds {
        md.push_str(&builds(&root, &kiln, &work, reps, accel, 1024)?);
    } else {
        md.push_str(
            "## Packer 1.6.6 vs kiln, same build\n\nnot run (`--smoke` / `--no-builds`).\n\n",
        );
    }

    // ---- verification ----
    let size_mib: u64 = if args.smoke { 64 } else { 1024 };
    let data = work.join(format!("data-{size_mib}m.bin"));
    make_data(&data, size_mib << 20)?;
    let (mut k, mut s, mut krss, mut srss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut digests = (String::new(), String::new());
    for _ in 0..reps {
        let out = Arc::new(Mutex::new(Vec::new()));
        let u = measured(
            Command::new(&verify).arg(&data),
            Instant::now(),
            Some(out.clone()),
        )?;
        digests.0 = first_word(&out);
        k.push(u.wall);
        krss.push(u.max_rss_mib);
        let out = Arc::new(Mutex::new(Vec::new()));
        let u = measured(
            Command::new("sha256sum").arg(&data),
            Instant::now(),
            Some(out.clone()),
        )?;
        digests.1 = first_word(&out);
        s.push(u.wall);
        srss.push(u.max_rss_mib);
    }
    if digests.0 != digests.1 || digests.0.len() != 64 {
        bail!(
            "kiln and sha256sum disagree on {}: {:?}",
            data.display(),
            digests
        );
    }
    let mib = size_mib as f64;
    let (kmin, kmed) = min_median(&k);
    let (smin, smed) = min_median(&s);
    let ratio = (mib / kmed) / (mib / smed);
    md.push_str(&format!(
        "## ISO verification (SHA-256 of a {size_mib} MiB file, page cache warm)\n\n"
    ));
    md.push_str(
        "| tool | wall s (min / median) | MiB/s (median) | peak RSS MiB |\n|---|---|---|---|\n",
    );
    md.push_str(&row(&[
        "kiln (`kiln_iso::hash_file`)".into(),
        format!("{kmin:.2} / {kmed:.2}"),
        format!("{:.0}", mib / kmed),
        format!("{:.1}", min_median(&krss).1),
    ]));
    md.push('\n');
    md.push_str(&row(&[
        "`sha256sum`".into(),
        format!("{smin:.2} / {smed:.2}"),
        format!("{:.0}", mib / smed),
        format!("{:.1}", min_median(&srss).1),
    ]));
    md.push_str(&format!(
        "\n\nkiln / sha256sum throughput: **{ratio:.2}×** (goal ≥ 1.0×{}).\n\n",
        if ratio >= 1.0 {
            ", met".to_string()
        } else {
            goal_miss(ratio, 1.0)
        }
    ));

    // ---- validate of the corpus ----
    let corpus = root.join("crates/kiln-config/tests/corpus");
    let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(&corpus)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pkr.hcl"))
        .filter_map(|e| e.path().parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut totals = Vec::new();
    let mut per = Vec::new();
    let mut outcome = (0, 0);
    for rep in 0..reps {
        let t = Instant::now();
        for d in &dirs {
            let u = measured(
                Command::new(&kiln).arg("validate").arg(d),
                Instant::now(),
                None,
            )?;
            per.push(u.wall * 1000.0);
            if rep == 0 {
                if u.code == 0 {
                    outcome.0 += 1
                } else {
                    outcome.1 += 1
                }
            }
        }
        totals.push(t.elapsed().as_secs_f64());
    }
    let (tmin, tmed) = min_median(&totals);
    let (pmin, pmed) = min_median(&per);
    md.push_str(&format!(
        "## `kiln validate` of the corpus\n\n{} template directories ({} valid as they stand, {} need variables or are refused): whole corpus {tmin:.2} / {tmed:.2} s (min / median), one template {pmin:.0} / {pmed:.0} ms.\n\n",
        dirs.len(), outcome.0, outcome.1
    ));
    let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    md.push_str(&format!(
        "Load average at the end `{}`. The machine is shared: other work ran at the same time.\n",
        load1.trim()
    ));
    println!("{md}");
    if !args.smoke {
        let doc = root.join("docs/benchmarks.md");
        let mut keep = String::new();
        // hand-written sections below the marker survive a new run
        if let Ok(old) = std::fs::read_to_string(&doc) {
            if let Some(i) = old.find(MANUAL_MARKER) {
                keep = old[i..].to_string();
            }
        }
        std::fs::write(&doc, format!("{md}\n{keep}"))
            .with_context(|| format!("write {}", doc.display()))?;
        eprintln!("bench: wrote {}", doc.display());
    }
    Ok(())
}

/// Everything from this line on in docs/benchmarks.md is kept by `cargo xtask bench`.
const MANUAL_MARKER: &str = "<!-- measured by hand: kept by cargo xtask bench -->";

fn goal_miss(ratio: f64, goal: f64) -> String {
    format!(", missed by {:.0} %", (goal - ratio) / goal * 100.0)
}

fn first_word(lines: &Arc<Mutex<Vec<(f64, String)>>>) -> String {
    lines
        .lock()
        .ok()
        .and_then(|v| {
            v.first()
                .and_then(|(_, l)| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default()
}

/// A file of `len` pseudo-random bytes (xorshift; written once, kept under target/bench).
fn make_data(path: &Path, len: u64) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Seconds since the epoch of an RFC 3339 time as the sandbox writes it (`2026-12-02T07:01:02.123Z`).
fn epoch(ts: &str) -> Option<f64> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let time = time.split(['+']).next()?;
    let mut t = time.split(':');
    let (h, mi, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // days from civil (Howard Hinnant)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + s)
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One build's measurements.
struct Build {
    tool: &'static str,
    usage: Usage,
    /// name → seconds since the tool started
    marks: Vec<(String, f64)>,
}

impl Build {
    fn at(&self, name: &str) -> Option<f64> {
        self.marks.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }
}

const PASSWORD_HASH: &str =
    "$6$kilntestsalt$X/WzK8sWB0DR2TE60aKAjJDzTFdfy/AqS1FVyWmUG7NYygw.U/FpvbHimW49HC7u6oWwEzF96YrAsZHcPnCM50";

const BOOT: &str = "e<down><down><down><end> autoinstall net.ifnames=0 biosdevname=0 fsck.mode=skip cloud-config-url=/dev/null ds=nocloud-net\\;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/<f10>";

fn builds(
    root: &Path,
    kiln: &Path,
    work: &Path,
    reps: u32,
    accel: &str,
    data_mib: u64,
) -> Result<String> {
    for (tool, pkg) in [
        ("packer", "packer"),
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ssh-keygen", "openssh-client"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} not found: install the Debian package {pkg} (cargo xtask test installs everything)");
        }
    }
    let iso = std::fs::canonicalize(crate::test_guest::ensure(root, false, true)?)?;
    let sha = {
        let o = Command::new("sha256sum").arg(&iso).output()?;
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let dir = work.join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("http"))?;
    let key = dir.join("id_ed25519");
    crate::run_cmd(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-bench", "-f"])
            .arg(&key),
    )?;
    let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))?
        .trim()
        .to_string();
    std::fs::write(dir.join("http/user-data"), user_data(&pubkey))?;
    std::fs::write(dir.join("http/meta-data"), "instance-id: kiln-bench\n")?;

    let ns = format!("kiln-bench-{}", std::process::id());
    let password = format!("bench-{:x}", (now_epoch() * 1e6) as u64);
    let state = dir.join("sandbox");
    std::fs::create_dir_all(&state)?;
    let sb_log = std::fs::File::create(dir.join("sandbox.log"))?;
    let mut sb = Command::new(kiln)
        .args(["sandbox", "serve", "--netns", &ns, "--accel", accel])
        .arg("--state")
        .arg(&state)
        .env("KILN_SANDBOX_PASSWORD", &password)
        .env("KILN_SANDBOX_TOKEN", format!("root@pam!bench={password}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(sb_log))
        .spawn()
        .context("starting kiln sandbox serve")?;
    let guard = SandboxGuard {
        pid: sb.id(),
        ns: ns.clone(),
    };
    let mut ready = String::new();
    let mut out = BufReader::new(
        sb.stdout
            .take()
            .ok_or_else(|| anyhow!("no sandbox stdout"))?,
    );
    let t = Instant::now();
    let url = loop {
        ready.clear();
        if out.read_line(&mut ready)? == 0 {
            bail!(
                "the sandbox exited before it was ready (log: {})",
                dir.join("sandbox.log").display()
            );
        }
        if let Ok(v) = serde_json::from_str::<Value>(ready.trim()) {
            if let Some(u) = v["url"].as_str() {
                break u.to_string();
            }
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the sandbox was not ready after 120 s");
        }
    };
    std::thread::spawn(move || for _ in out.lines() {});

    let upload_md = upload(kiln, work, &ns, &url, &password, reps, data_mib)?;

    let mut packer_runs = Vec::new();
    let mut kiln_runs = Vec::new();
    for rep in 0..reps {
        let vm_p = 9000 + rep * 2;
        let vm_k = 9001 + rep * 2;
        // Packer 1.6.6, JSON, its defaults
        let tmpl =
            std::fs::read_to_string(root.join("crates/kiln-sandbox/tests/packer/proxmox.json"))?
                .replace("@URL@", &url)
                .replace("@PASSWORD@", &password)
                .replace("@ISO@", &format!("file://{}", iso.display()))
                .replace("@SHA256@", &sha)
                .replace("@HTTP@", &dir.join("http").display().to_string())
                .replace("@KEY@", &key.display().to_string())
                .replace("\"vm_id\": 9000", &format!("\"vm_id\": {vm_p}"))
                .replace("kiln-packer-template", &format!("bench-packer-{rep}"));
        let tp = dir.join(format!("packer-{rep}.json"));
        std::fs::write(&tp, tmpl)?;
        eprintln!(
            "bench: Packer 1.6.6 build {} of {reps} (VM {vm_p})",
            rep + 1
        );
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns, "packer", "build"])
            .arg(&tp)
            .current_dir(&dir)
            .env("CHECKPOINT_DISABLE", "1")
            .env("PACKER_CACHE_DIR", dir.join("packer_cache"))
            .env("HOME", &dir)
            .env_remove("PACKER_KEY_INTERVAL");
        packer_runs.push(one_build(
            "Packer 1.6.6",
            &mut c,
            &state,
            vm_p,
            &dir.join(format!("packer-{rep}.log")),
        )?);
        // kiln, the same build in HCL2
        let hcl = dir.join(format!("kiln-{rep}"));
        std::fs::create_dir_all(&hcl)?;
        std::fs::write(
            hcl.join("bench.pkr.hcl"),
            kiln_template(&url, &iso, &sha, &dir.join("http"), &key, vm_k, rep),
        )?;
        eprintln!("bench: kiln build {} of {reps} (VM {vm_k})", rep + 1);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns])
            .arg(kiln)
            .arg("build")
            .arg(&hcl)
            .current_dir(&dir)
            .env("PROXMOX_PASSWORD", &password)
            .env_remove("PROXMOX_TOKEN")
            .env_remove("PACKER_KEY_INTERVAL");
        kiln_runs.push(one_build(
            "kiln",
            &mut c,
            &state,
            vm_k,
            &dir.join(format!("kiln-{rep}.log")),
        )?);
    }
    drop(guard);
    Ok(format!(
        "{}{upload_md}",
        build_report(&packer_runs, &kiln_runs)
    ))
}

struct SandboxGuard {
    pid: u32,
    ns: String,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        for _ in 0..300 {
            if !Path::new(&format!("/proc/{}", self.pid)).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new("/run/netns").join(&self.ns).exists() {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }
}

/// Run one build and collect its marks from the tool's output, the event log and the serial log.
fn one_build(
    tool: &'static str,
    cmd: &mut Command,
    state: &Path,
    vmid: u32,
    log: &Path,
) -> Result<Build> {
    let t0 = Instant::now();
    let e0 = now_epoch();
    let lines = Arc::new(Mutex::new(Vec::new()));
    // the guest's serial log, timestamped as it grows
    let serial = state.join(format!("run/{vmid}/serial0.log"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(String, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (stop, seen, serial) = (stop.clone(), seen.clone(), serial.clone());
        std::thread::spawn(move || {
            let wanted = [
                ("guest: GRUB menu", "GRUB menu on the console"),
                ("guest: installer started", "TESTGUEST-INSTALLER-START"),
                ("guest: seed fetched over HTTP", "TESTGUEST-SEED-FETCHED"),
                ("guest: install complete", "TESTGUEST-INSTALL-COMPLETE"),
                ("guest: agent started", "QEMU Guest Agent"),
                ("guest: sshd started", "OpenBSD Secure Shell server"),
            ];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read(&serial)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if let Ok(mut s) = seen.lock() {
                    for (name, needle) in wanted {
                        if !s.iter().any(|(n, _)| n == name) && text.contains(needle) {
                            s.push((name.to_string(), t0.elapsed().as_secs_f64()));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let usage = measured(cmd, t0, Some(lines.clone()))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let lines = lines.lock().map(|v| v.clone()).unwrap_or_default();
    let mut f = std::fs::File::create(log)?;
    for (t, l) in &lines {
        let _ = writeln!(f, "{t:8.2} {l}");
    }
    if usage.code != 0 {
        bail!(
            "{tool} build failed (exit {}); its output: {}",
            usage.code,
            log.display()
        );
    }
    let mut marks: Vec<(String, f64)> = seen.lock().map(|v| v.clone()).unwrap_or_default();
    // the sandbox's event log (VM start, keys, agent answers, power-off, template)
    let events = std::fs::read_to_string(state.join("events.jsonl")).unwrap_or_default();
    let vm = vmid.to_string();
    let mut first = |name: &str, pred: &dyn Fn(&Value) -> bool| {
        if marks.iter().any(|(n, _)| n == name) {
            return;
        }
        for l in events.lines() {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                continue;
            };
            let Some(t) = v["time"].as_str().and_then(epoch) else {
                continue;
            };
            if t < e0 - 1.0 {
                continue;
            }
            if pred(&v) {
                marks.push((name.to_string(), t - e0));
                return;
            }
        }
    };
    let is_vm = |v: &Value| {
        v["vmid"].as_u64().map(|x| x.to_string()) == Some(vm.clone())
            || v["path"].as_str().is_some_and(|p| {
                p.contains(&format!("/qemu/{vm}/")) || p.ends_with(&format!("/qemu/{vm}"))
            })
    };
    first("sandbox: VM started", &|v| {
        v["event"] == "vm" && v["action"] == "started" && is_vm(v)
    });
    first("sandbox: first key", &|v| v["event"] == "key" && is_vm(v));
    first("sandbox: agent's first answer", &|v| {
        v["event"] == "request"
            && v["status"] == 200
            && v["path"].as_str().is_some_and(|p| p.contains("/agent/"))
            && is_vm(v)
    });
    first("sandbox: shutdown requested", &|v| {
        v["event"] == "request"
            && v["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/status/shutdown"))
            && is_vm(v)
    });
    first("sandbox: VM powered off", &|v| {
        v["event"] == "vm" && (v["action"] == "stopped" || v["action"] == "shutdown") && is_vm(v)
    });
    first("sandbox: template", &|v| {
        v["event"] == "vm" && v["action"] == "template" && is_vm(v)
    });
    // last key
    let mut last_key = None;
    for l in events.lines() {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if v["event"] == "key" && is_vm(&v) {
            if let Some(t) = v["time"].as_str().and_then(epoch) {
                if t >= e0 - 1.0 {
                    last_key = Some(t - e0);
                }
            }
        }
    }
    if let Some(t) = last_key {
        marks.push(("sandbox: last key".into(), t));
    }
    // the tool's own view: SSH connected (both print "Connected to SSH!")
    if let Some((t, _)) = lines.iter().find(|(_, l)| l.contains("Connected to SSH")) {
        marks.push(("tool: connected to SSH".into(), *t));
    }
    marks.sort_by(|a, b| a.1.total_cmp(&b.1));
    Ok(Build { tool, usage, marks })
}

fn build_report(p: &[Build], k: &[Build]) -> String {
    let mut md = String::from("## Packer 1.6.6 vs kiln, same build\n\n");
    md.push_str(
        "The test guest's template of `crates/kiln-sandbox/tests/packer/proxmox.json` (130-key boot command, \
         autoinstall over HTTP, one shell provisioner, template), built by Packer 1.6.6 with its defaults and \
         by kiln from the same template in HCL2, one after the other on one `kiln sandbox`.\n\n",
    );
    let med = |v: &[Build], f: &dyn Fn(&Build) -> Option<f64>| -> (f64, f64) {
        let xs: Vec<f64> = v.iter().filter_map(f).collect();
        min_median(&xs)
    };
    md.push_str("| | Packer 1.6.6 (min / median) | kiln (min / median) | kiln / Packer (median) |\n|---|---|---|---|\n");
    let mut line = |name: &str, f: &dyn Fn(&Build) -> Option<f64>, unit: &str| {
        let (pm, pd) = med(p, f);
        let (km, kd) = med(k, f);
        md.push_str(&format!(
            "| {name} | {pm:.2} / {pd:.2} {unit} | {km:.2} / {kd:.2} {unit} | {:.2} |\n",
            kd / pd
        ));
    };
    line("wall time", &|b| Some(b.usage.wall), "s");
    line("CPU time (user + system)", &|b| Some(b.usage.cpu), "s");
    line("peak RSS", &|b| Some(b.usage.max_rss_mib), "MiB");
    let span = |a: &'static str, z: &'static str| move |b: &Build| Some(b.at(z)? - b.at(a)?);
    line(
        "start → VM started (ISO, create, start)",
        &|b| b.at("sandbox: VM started"),
        "s",
    );
    line(
        "VM started → first key (boot_wait)",
        &span("sandbox: VM started", "sandbox: first key"),
        "s",
    );
    line(
        "typing (first → last key)",
        &span("sandbox: first key", "sandbox: last key"),
        "s",
    );
    line(
        "last key → agent's first answer (install, reboot)",
        &span("sandbox: last key", "sandbox: agent's first answer"),
        "s",
    );
    line(
        "agent answer → connected to SSH",
        &span("sandbox: agent's first answer", "tool: connected to SSH"),
        "s",
    );
    line(
        "SSH → shutdown request (provisioning)",
        &span("tool: connected to SSH", "sandbox: shutdown requested"),
        "s",
    );
    line(
        "shutdown request → powered off",
        &span("sandbox: shutdown requested", "sandbox: VM powered off"),
        "s",
    );
    line(
        "powered off → template",
        &span("sandbox: VM powered off", "sandbox: template"),
        "s",
    );
    line(
        "template → tool exits",
        &|b| Some(b.usage.wall - b.at("sandbox: template")?),
        "s",
    );
    let (_, pw) = med(p, &|b| Some(b.usage.wall));
    let (_, kw) = med(k, &|b| Some(b.usage.wall));
    let r = kw / pw;
    md.push_str(&format!(
        "\nWall ratio kiln / Packer: **{r:.2}** (goal ≤ 0.75{}).\n\n",
        if r <= 0.75 { ", met".to_string() } else { format!(", missed by {:.2}: both wait for the same guest, whose install dominates under TCG", r - 0.75) }
    ));
    for b in k.first().into_iter().chain(p.first()) {
        md.push_str(&format!(
            "Timeline of one {} build (s since the tool started):\n\n",
            b.tool
        ));
        for (n, t) in &b.marks {
            md.push_str(&format!("- {t:7.2} {n}\n"));
        }
        md.push_str(&format!("- {:7.2} tool exits\n\n", b.usage.wall));
    }
    if let Some(b) = k.first() {
        md.push_str(&overhead(b, p.first()));
    }
    md
}

/// kiln's overhead: its wall time minus the guest's own work, every second named.
fn overhead_items(b: &Build) -> Vec<(String, f64)> {
    let at = |n: &str| b.at(n);
    let mut items: Vec<(String, f64)> = Vec::new();
    let mut add = |name: &str, v: Option<f64>| {
        if let Some(v) = v {
            items.push((name.to_string(), v.max(0.0)));
        }
    };
    add(
        "before the VM starts (ISO upload and checksum, create, start)",
        at("sandbox: VM started"),
    );
    add(
        "boot_wait beyond the guest's GRUB menu",
        (|| Some(at("sandbox: first key")? - at("guest: GRUB menu")?))(),
    );
    add(
        "typing the boot command",
        (|| Some(at("sandbox: last key")? - at("sandbox: first key")?))(),
    );
    add(
        "agent running → kiln sees its first answer",
        (|| Some(at("sandbox: agent's first answer")? - at("guest: agent started")?))(),
    );
    add(
        "sshd running → kiln connected",
        (|| {
            Some(
                at("tool: connected to SSH")?
                    - at("guest: sshd started")?.max(at("sandbox: agent's first answer")?),
            )
        })(),
    );
    add(
        "power-off → template → exit",
        (|| Some(b.usage.wall - at("sandbox: VM powered off")?))(),
    );
    items
}

/// kiln's overhead (its first build), with the same items of Packer's first build beside it: a row
/// where both tools spend the same time is the guest's, not the tool's.
fn overhead(b: &Build, packer: Option<&Build>) -> String {
    let items = overhead_items(b);
    let theirs = packer.map(overhead_items).unwrap_or_default();
    let total: f64 = items.iter().map(|(_, v)| v).sum();
    let mut md = String::from("### kiln's overhead\n\nkiln's wall time minus what the guest does on its own (from the sandbox's event log and the guest's serial log), Packer's first build beside it:\n\n| where | kiln s | Packer s |\n|---|---|---|\n");
    for (n, v) in &items {
        let p = theirs
            .iter()
            .find(|(m, _)| m == n)
            .map_or("–".to_string(), |(_, v)| format!("{v:.2}"));
        md.push_str(&format!("| {n} | {v:.2} | {p} |\n"));
    }
    let ptotal: f64 = theirs.iter().map(|(_, v)| v).sum();
    md.push_str(&format!(
        "| **total** | **{total:.2}** | {ptotal:.2} |\n\nGoal ≤ 3 s{}. kiln CPU {:.2} s (goal ≤ 1 s{}), peak RSS {:.1} MiB (goal ≤ 40 MB{}).\n\n",
        if total <= 3.0 { ", met".to_string() } else { format!(", missed by {:.1} s (the rows above say where)", total - 3.0) },
        b.usage.cpu,
        if b.usage.cpu <= 1.0 { ", met".to_string() } else { format!(", missed by {:.2} s", b.usage.cpu - 1.0) },
        b.usage.max_rss_mib,
        if b.usage.max_rss_mib * 1.048576 <= 40.0 { ", met".to_string() } else { ", missed".to_string() },
    ));
    md
}

fn user_data(pubkey: &str) -> String {
    format!(
        "#cloud-config\nautoinstall:\n  version: 1\n  identity:\n    hostname: kiln-bench\n    username: ubuntu\n    password: '{PASSWORD_HASH}'\n  ssh:\n    install-server: true\n    allow-pw: true\n    authorized-keys:\n      - {pubkey}\n  storage:\n    layout:\n      name: direct\n  user-data:\n    users:\n      - name: packer\n        passwd: '{PASSWORD_HASH}'\n        lock_passwd: false\n        shell: /bin/bash\n        sudo: ALL=(ALL) NOPASSWD:ALL\n        ssh_authorized_keys:\n          - {pubkey}\n"
    )
}

/// The HCL2 twin of `crates/kiln-sandbox/tests/packer/proxmox.json`.
fn kiln_template(
    url: &str,
    iso: &Path,
    sha: &str,
    http: &Path,
    key: &Path,
    vmid: u32,
    rep: u32,
) -> String {
    format!(
        r#"source "proxmox-iso" "bench" {{
  proxmox_url              = "{url}"
  insecure_skip_tls_verify = true
  username                 = "root@pam"
  node                     = "pve"
  vm_id                    = {vmid}
  vm_name                  = "kiln-bench-build"
  template_name            = "bench-kiln-{rep}"
  template_description     = "built by kiln on kiln sandbox"
  memory                   = 2048
  cores                    = 2
  sockets                  = 1
  os                       = "l26"
  scsi_controller          = "virtio-scsi-pci"
  qemu_agent               = true
  boot                     = "order=scsi0;ide2;net0"
  boot_iso {{
    type             = "ide"
    iso_url          = "file://{iso}"
    iso_checksum     = "sha256:{sha}"
    iso_storage_pool = "local"
    unmount          = true
  }}
  disks {{
    type         = "scsi"
    disk_size    = "4G"
    storage_pool = "local-lvm"
    format       = "raw"
    cache_mode   = "none"
  }}
  network_adapters {{
    model  = "virtio"
    bridge = "vmbr0"
  }}
  http_directory       = "{http}"
  boot_wait            = "10s"
  boot_command         = ["{boot}"]
  ssh_username         = "packer"
  ssh_private_key_file = "{key}"
  ssh_timeout          = "20m"
}}

build {{
  sources = ["source.proxmox-iso.bench"]
  provisioner "shell" {{
    inline = ["uname -a", "echo provisioned-by-kiln | sudo tee /etc/kiln-provisioned"]
  }}
}}
"#,
        iso = iso.display(),
        http = http.display(),
        key = key.display(),
        boot = BOOT.replace('\\', "\\\\"),
    )
}

/// ISO upload to the sandbox's `…/storage/local/upload`: kiln's client (`kiln-pve` example `upload`)
/// vs `curl -F`, the same 1 GiB file, inside the sandbox's network namespace.
fn upload(
    kiln: &Path,
    work: &Path,
    ns: &str,
    url: &str,
    password: &str,
    reps: u32,
    mib: u64,
) -> Result<String> {
    let data = work.join(format!("data-{mib}m.bin"));
    make_data(&data, mib << 20)?;
    let example = kiln.with_file_name("examples").join("upload");
    let (mut k, mut c, mut krss, mut crss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // An upload takes seconds: at least three of each, alternating which client goes first.
    let reps = reps.max(3);
    for rep in 0..reps {
        let order = if rep % 2 == 0 {
            ["kiln", "curl"]
        } else {
            ["curl", "kiln"]
        };
        for who in order {
            let name = work.join(format!("up-{who}-{rep}-{}.iso", std::process::id()));
            let _ = std::fs::remove_file(&name);
            std::fs::hard_link(&data, &name).or_else(|_| std::fs::copy(&data, &name).map(drop))?;
            // the previous upload's 1 GiB of dirty pages is written back now, not during the next one
            crate::run_cmd(&mut Command::new("sync"))?;
            let out = Arc::new(Mutex::new(Vec::new()));
            let u = if who == "kiln" {
                measured(
                    Command::new("ip")
                        .args(["netns", "exec", ns])
                        .arg(&example)
                        .args([url, "pve", "local"])
                        .arg(&name)
                        .env("PROXMOX_PASSWORD", password),
                    Instant::now(),
                    Some(out.clone()),
                )?
            } else {
                measured(
                    Command::new("ip")
                        .args(["netns", "exec", ns, "curl", "-sk", "--noproxy", "*", "-H"])
                        .arg(format!(
                            "Authorization: PVEAPIToken=root@pam!bench={password}"
                        ))
                        .args(["-F", "content=iso", "-F"])
                        .arg(format!("filename=@{}", name.display()))
                        .arg(format!("{url}/nodes/pve/storage/local/upload")),
                    Instant::now(),
                    Some(out.clone()),
                )?
            };
            let _ = std::fs::remove_file(&name);
            let text: String = out
                .lock()
                .map(|v| {
                    v.iter()
                        .map(|(_, l)| l.clone())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            if u.code != 0 || !text.contains("UPID:") {
                bail!("{who} upload failed (exit {}): {text}", u.code);
            }
            if who == "kiln" {
                k.push(u.wall);
                krss.push(u.max_rss_mib)
            } else {
                c.push(u.wall);
                crss.push(u.max_rss_mib)
            }
        }
    }
    let m = mib as f64;
    let (kmin, kmed) = min_median(&k);
    let (cmin, cmed) = min_median(&c);
    let ratio = (m / kmed) / (m / cmed);
    let mut md = format!("## ISO upload ({mib} MiB to the sandbox's `storage/local/upload`, HTTPS on loopback in its namespace; {reps} of each, alternating, `sync` before each)\n\n");
    md.push_str(
        "| client | wall s (min / median) | MiB/s (median) | peak RSS MiB |\n|---|---|---|---|\n",
    );
    md.push_str(&format!(
        "| kiln (`kiln_pve::Client::upload`) | {kmin:.2} / {kmed:.2} | {:.0} | {:.1} |\n",
        m / kmed,
        min_median(&krss).1
    ));
    md.push_str(&format!(
        "| `curl -F` | {cmin:.2} / {cmed:.2} | {:.0} | {:.1} |\n",
        m / cmed,
        min_median(&crss).1
    ));
    md.push_str(&format!(
        "\nkiln / curl throughput **{ratio:.2}×** (goal ≥ 0.9×{}); kiln's peak RSS stays {:.1} MiB for a {mib} MiB file (streamed, flat).\n\n",
        if ratio >= 0.9 { ", met".to_string() } else { goal_miss(ratio, 0.9) },
        min_median(&krss).1
    ));
    Ok(md)
}

/// KVM is usable when /dev/kvm answers `KVM_GET_API_VERSION` with 12 and creates a VM (a device node
/// alone is not enough: nested virtualisation may be off).
fn kvm_works() -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return false;
    };
    const KVM_GET_API_VERSION: nix::libc::c_ulong = 0xAE00;
    const KVM_CREATE_VM: nix::libc::c_ulong = 0xAE01;
    // SAFETY: both ioctls take no pointer argument; the fd is open for the whole call.
    #[allow(unsafe_code)]
    unsafe {
        if nix::libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _, 0) != 12 {
            return false;
        }
        let vm = nix::libc::ioctl(f.as_raw_fd(), KVM_CREATE_VM as _, 0);
        if vm < 0 {
            return false;
        }
        nix::libc::close(vm);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_epoch() {
        assert_eq!(epoch("1970-01-01T00:00:00Z"), Some(0.0));
        let t = epoch("2026-12-02T07:01:02.5Z").unwrap_or_default();
        assert!((t - 1_796_194_862.5).abs() < 1e-3, "{t}");
        assert_eq!(epoch("garbage"), None);
    }

    #[test]
    fn min_and_median() {
        assert_eq!(min_median(&[3.0, 1.0, 2.0]), (1.0, 2.0));
        assert!(min_median(&[]).0.is_nan());
    }
}
