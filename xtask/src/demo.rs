//! `cargo xtask demo`: the README's "first run without Proxmox".
//!
//! As root on a Debian/Ubuntu machine it
//! 1. installs the missing system packages (without root it names them and exits 2),
//! 2. builds or reuses the test-guest ISO (`cargo xtask test-guest`),
//! 3. builds the `kiln` binary (debug; release with `--release` or when a release build already exists),
//! 4. generates a throwaway SSH key pair and random API credentials (passed through the environment and
//!    stdin, never on a command line, never printed),
//! 5. starts `kiln sandbox serve --netns kiln-demo-<pid>` (a PVE API on real QEMU in its own network
//!    namespace) and waits for its ready line,
//! 6. runs `kiln build` on a copy of `examples/test-guest` inside that namespace, streaming its output,
//! 7. clones the template through the sandbox API, boots the clone, waits for its IP (guest agent) and SSH,
//!    shows the file the Ansible playbook wrote,
//! 8. prints a summary (step timings, what the guest fetched, VM ids, wall time) and cleans up: VMs, the
//!    sandbox, the namespace and the temporary directory — also on failure and on Ctrl-C. On failure the
//!    directory with the logs and the sandbox state is kept and its path printed.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TEMPLATE_ID: u32 = 9000;
const CLONE_ID: u32 = 9100;
const TOKEN_ID: &str = "root@pam!demo";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Build kiln in release mode (default: debug, unless target/release/kiln already exists)
    #[arg(long)]
    release: bool,
    /// QEMU accelerator for the sandbox: auto (KVM when it works), kvm, tcg
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Keep the temporary directory (logs, sandbox state) even on success
    #[arg(long)]
    keep: bool,
}

// ---- signals: Ctrl-C / SIGTERM / SIGHUP set a flag that every wait loop checks ------------------

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

extern "C" {
    // libc's signal(2); the handler only stores into an atomic (async-signal-safe)
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

fn install_signal_handlers() {
    for sig in [1, 2, 15] {
        // SAFETY: installs a handler that only performs an atomic store.
        unsafe {
            signal(sig, on_signal);
        }
    }
}

fn check_signal() -> Result<()> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => Ok(()),
        s => Err(anyhow!(Interrupted(s))),
    }
}

#[derive(Debug)]
struct Interrupted(i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Sleep in small slices, failing as soon as a signal arrived.
fn nap(d: Duration) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        check_signal()?;
        std::thread::sleep(Duration::from_millis(100).min(d));
    }
    check_signal()
}

// ---- the run ----------------------------------------------------------------------------------------

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let root = crate::workspace_root();

    if !crate::packages::is_root() {
        let missing: Vec<&str> = crate::packages::for_demo()
            .iter()
            .filter(|n| !is_installed(n.pkg))
            .map(|n| n.pkg)
            .collect();
        eprintln!(
            "kiln demo needs root: it creates a network namespace, a bridge and QEMU tap devices inside it."
        );
        if missing.is_empty() {
            eprintln!("All system packages it uses are installed. Run it again as root: sudo cargo xtask demo");
        } else {
            eprintln!(
                "It would also install these missing packages:\n  sudo apt-get install -y --no-install-recommends {}",
                missing.join(" ")
            );
        }
        std::process::exit(2);
    }
    install_signal_handlers();

    let mut demo = Demo::new(args.keep)?;
    let res = demo.run(&root, &args, started);
    match res {
        Ok(()) => {
            demo.cleanup();
            demo.remove_dir_if_done(true);
            println!(
                "\nkiln demo finished in {}.",
                secs(started.elapsed().as_secs_f64())
            );
            Ok(())
        }
        Err(e) => {
            let interrupted =
                e.downcast_ref::<Interrupted>().is_some() || SIGNAL.load(Ordering::SeqCst) != 0;
            eprintln!(
                "\nkiln demo {} during phase '{}': {e:#}",
                if interrupted { "stopped" } else { "FAILED" },
                demo.phase
            );
            eprintln!("cleaning up …");
            demo.cleanup();
            demo.remove_dir_if_done(interrupted);
            if interrupted {
                std::process::exit(130);
            }
            eprintln!("kiln demo failed in phase '{}'", demo.phase);
            // exit here: an `Err` from main would add a backtrace under RUST_BACKTRACE=1
            std::process::exit(1)
        }
    }
}

struct Sandbox {
    child: Child,
    url: String,
    fingerprint: String,
}

/// Everything the demo created; `cleanup` (also run on drop) removes it.
struct Demo {
    dir: PathBuf,
    ns: String,
    phase: &'static str,
    keep: bool,
    password: String,
    token: String,
    sandbox: Option<Sandbox>,
    build: Option<Child>,
    vms: Vec<u32>,
    cleaned: bool,
}

impl Demo {
    fn new(keep: bool) -> Result<Demo> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("kiln-demo-{pid}"));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Demo {
            dir,
            ns: format!("kiln-demo-{pid}"),
            phase: "setup",
            keep,
            password: random_hex(16)?,
            token: random_hex(16)?,
            sandbox: None,
            build: None,
            vms: Vec::new(),
            cleaned: false,
        })
    }

    fn phase(&mut self, name: &'static str) {
        self.phase = name;
        println!("\n=== demo: {name}");
    }

    fn run(&mut self, root: &Path, args: &Args, started: Instant) -> Result<()> {
        // 1. packages
        self.phase("system packages");
        crate::packages::ensure(
            "demo",
            &crate::packages::for_demo(),
            crate::packages::Options { install: true },
        )?;
        check_signal()?;

        // 2. test guest
        self.phase("test-guest ISO");
        let t = Instant::now();
        let iso = crate::test_guest::ensure(root, false, true)?;
        let iso =
            std::fs::canonicalize(&iso).with_context(|| format!("resolving {}", iso.display()))?;
        println!(
            "test guest: {} ({:.0} s)",
            iso.display(),
            t.elapsed().as_secs_f64()
        );
        check_signal()?;

        // 3. kiln binary
        self.phase("build kiln");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let release = args.release || target.join("release/kiln").is_file();
        println!(
            "building kiln in {} mode ({})",
            if release { "release" } else { "debug" },
            if args.release {
                "--release given"
            } else if release {
                "a release build exists, an incremental rebuild is cheap"
            } else {
                "a first release build takes several minutes more than debug; use --release to choose it"
            }
        );
        let mut c = Command::new("cargo");
        c.args(["build", "-p", "kiln", "--bin", "kiln"])
            .current_dir(root);
        if release {
            c.arg("--release");
        }
        crate::run_cmd(&mut c)?;
        let kiln = target.join(if release {
            "release/kiln"
        } else {
            "debug/kiln"
        });
        check_signal()?;

        // 4. secrets and the example
        self.phase("keys and example");
        let key = self.dir.join("id_ed25519");
        run_quiet(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-demo", "-f"])
                .arg(&key),
        )
        .context("ssh-keygen (package openssh-client)")?;
        let pubkey = std::fs::read_to_string(self.dir.join("id_ed25519.pub"))?
            .trim()
            .to_string();
        let sum = run_quiet(Command::new("sha256sum").arg(&iso))?;
        let hex = sum
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let sums = self.dir.join("SHA256SUMS");
        let iso_name = iso
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        std::fs::write(&sums, format!("{hex}  {iso_name}\n"))?;
        let example = self.dir.join("test-guest");
        copy_dir(&root.join("examples/test-guest"), &example)?;
        println!(
            "throwaway SSH key {} and random API password/token (not shown)",
            key.display()
        );
        println!("example copied to {}", example.display());

        // 5. sandbox
        self.phase("start kiln sandbox");
        let state = self.dir.join("sandbox");
        std::fs::create_dir_all(&state)?;
        let sb_log = self.dir.join("sandbox.log");
        let mut c = Command::new(&kiln);
        c.args([
            "sandbox",
            "serve",
            "--netns",
            &self.ns,
            "--accel",
            &args.accel,
        ])
        .arg("--state")
        .arg(&state)
        .env("KILN_SANDBOX_PASSWORD", &self.password)
        .env("KILN_SANDBOX_TOKEN", format!("{TOKEN_ID}={}", self.token))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&sb_log)?))
        .process_group(0);
        println!(
            "$ kiln sandbox serve --netns {} --accel {} --state {}",
            self.ns,
            args.accel,
            state.display()
        );
        let mut child = c.spawn().context("starting kiln sandbox serve")?;
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = stdout {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        self.sandbox = Some(Sandbox {
            child,
            url: String::new(),
            fingerprint: String::new(),
        });
        let t0 = Instant::now();
        let ready: Value = loop {
            check_signal()?;
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => match serde_json::from_str::<Value>(line.trim()) {
                    Ok(v) if v.get("url").is_some() => break v,
                    _ => println!("sandbox: {line}"),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "the sandbox exited before it was ready; its log ({}):\n{}",
                    sb_log.display(),
                    tail(&sb_log, 30)
                ),
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the sandbox was not ready after 120 s; its log ({}):\n{}",
                    sb_log.display(),
                    tail(&sb_log, 30)
                );
            }
        };
        if let Some(sb) = self.sandbox.as_mut() {
            sb.url = ready["url"].as_str().unwrap_or_default().to_string();
            sb.fingerprint = ready["fingerprint"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        println!(
            "sandbox ready in {:.1} s: {} (fingerprint {}), network namespace {}",
            t0.elapsed().as_secs_f64(),
            ready["url"].as_str().unwrap_or_default(),
            ready["fingerprint"].as_str().unwrap_or_default(),
            self.ns
        );

        // 6. kiln build
        self.phase("kiln build");
        let build_log = self.dir.join("build.log");
        let (url, fingerprint) = match &self.sandbox {
            Some(sb) => (sb.url.clone(), sb.fingerprint.clone()),
            None => bail!("no sandbox"),
        };
        let (reader, writer) = std::io::pipe()?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns])
            .arg(&kiln)
            .arg("build")
            .args(["-var", &format!("proxmox_url={url}")])
            .args(["-var", &format!("ssh_public_key={pubkey}")])
            .args(["-var", &format!("ssh_private_key_file={}", key.display())])
            .args(["-var", &format!("iso_url={}", iso.display())])
            .args(["-var", &format!("iso_checksum=file:{}", sums.display())])
            .args(["-var", &format!("vm_id={TEMPLATE_ID}")])
            .arg(&example)
            .env("PROXMOX_PASSWORD", &self.password)
            .env("PROXMOX_FINGERPRINT", &fingerprint)
            .env_remove("PROXMOX_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer))
            .process_group(0);
        println!(
            "$ ip netns exec {} kiln build -var proxmox_url={url} -var ssh_public_key=… -var ssh_private_key_file=… -var iso_url={} -var iso_checksum=file:… {}",
            self.ns,
            iso.display(),
            example.display()
        );
        let t_build = Instant::now();
        self.build = Some(c.spawn().context("starting kiln build")?);
        drop(c); // closes our copies of the pipe's write end
        let mut log = std::fs::File::create(&build_log)?;
        let (ltx, lrx) = mpsc::channel::<String>();
        let streamer = std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                println!("{line}");
                let _ = writeln!(log, "{line}");
                let _ = ltx.send(line);
            }
        });
        let code = loop {
            check_signal()?;
            let done = match self.build.as_mut() {
                Some(b) => b.try_wait()?,
                None => bail!("no build"),
            };
            if let Some(st) = done {
                self.build = None;
                break st.code().unwrap_or(-1);
            }
            if t_build.elapsed() > Duration::from_secs(3600) {
                bail!("kiln build still running after an hour");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // a grandchild (e.g. an ssh control master) may keep the pipe open: do not wait for EOF forever
        let mut lines: Vec<String> = Vec::new();
        let t_drain = Instant::now();
        while t_drain.elapsed() < Duration::from_secs(10) {
            match lrx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => lines.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) if streamer.is_finished() => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        lines.extend(lrx.try_iter());
        let build_secs = t_build.elapsed().as_secs_f64();
        if code != 0 {
            bail!(
                "kiln build exited with {code} after {}; its output is in {}",
                secs(build_secs),
                build_log.display()
            );
        }
        let template: u32 = lines
            .iter()
            .find_map(|l| {
                l.split_once("A template was created: ")
                    .and_then(|(_, id)| id.trim().parse().ok())
            })
            .ok_or_else(|| anyhow!("kiln build did not report 'A template was created: ID'"))?;
        self.vms.push(template);

        // 7. clone, boot, SSH
        self.phase("clone and boot");
        let t_clone = Instant::now();
        let r = self.api(
            "POST",
            &format!("/nodes/pve/qemu/{template}/clone"),
            &[
                ("newid", &CLONE_ID.to_string()),
                ("name", "kiln-demo-clone"),
            ],
        )?;
        self.vms.push(CLONE_ID);
        self.wait_task(&r, Duration::from_secs(300), "clone")?;
        println!("cloned template {template} to VM {CLONE_ID} (linked clone)");
        // as on PVE, a clone's cloud-init drive configures the NIC only when told to
        let r = self.api(
            "POST",
            &format!("/nodes/pve/qemu/{CLONE_ID}/config"),
            &[("ipconfig0", "ip=dhcp")],
        )?;
        self.wait_task(&r, Duration::from_secs(60), "clone config")?;
        let r = self.api(
            "POST",
            &format!("/nodes/pve/qemu/{CLONE_ID}/status/start"),
            &[],
        )?;
        self.wait_task(&r, Duration::from_secs(120), "clone start")?;
        println!("VM {CLONE_ID} started; waiting for its IP address from the guest agent …");
        let ip = self.wait_ip(CLONE_ID, Duration::from_secs(600))?;
        println!(
            "VM {CLONE_ID} has IP {ip} ({:.0} s after the clone); waiting for SSH and cloud-init …",
            t_clone.elapsed().as_secs_f64()
        );
        let shown = self.ssh_until(
            &key,
            &ip,
            "cloud-init status --wait >/dev/null 2>&1; echo \"$(hostname): cloud-init $(cloud-init status | tr -d '\\n')\"; echo '--- /etc/kiln-playbook:'; cat /etc/kiln-playbook",
            Duration::from_secs(400),
        )?;
        println!("{shown}");
        let clone_secs = t_clone.elapsed().as_secs_f64();

        // 8. summary
        self.phase("summary");
        println!(
            "{}",
            self.summary(&lines, template, build_secs, clone_secs, &ip, started)
        );
        Ok(())
    }

    fn summary(
        &self,
        lines: &[String],
        template: u32,
        build_secs: f64,
        clone_secs: f64,
        ip: &str,
        started: Instant,
    ) -> String {
        let mut s = String::from("kiln demo summary\n");
        s += &format!("  kiln build             {}\n", secs(build_secs));
        let steps: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.contains("Step timings:"))
            .skip(1)
            .take_while(|l| !l.contains("Build '"))
            .map(|l| l.split_once(": ").map(|(_, r)| r).unwrap_or(l).trim())
            .filter(|l| !l.is_empty())
            .collect();
        if steps.is_empty() {
            s += "  (kiln printed no step timings)\n";
        } else {
            s += "  build steps:\n";
            for st in steps {
                s += &format!("    {st}\n");
            }
        }
        let fetched: Vec<&str> = lines
            .iter()
            .filter_map(|l| {
                l.find("VM fetched ")
                    .or_else(|| l.find("VM asked for "))
                    .map(|i| &l[i..])
            })
            .collect();
        s += "  the guest fetched from kiln's HTTP server:\n";
        if fetched.is_empty() {
            s += "    (nothing logged)\n";
        }
        for f in fetched {
            s += &format!("    {f}\n");
        }
        let events: Vec<Value> = std::fs::read_to_string(self.dir.join("sandbox/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let requests = events.iter().filter(|e| e["event"] == "request").count();
        let keys = events
            .iter()
            .filter(|e| e["event"] == "key" && e["vmid"] == template)
            .count();
        s += &format!(
            "  sandbox: {requests} API requests handled, {keys} keys typed into VM {template}\n"
        );
        s += &format!("  template VM id         {template}\n");
        s += &format!(
            "  clone VM id            {CLONE_ID} (IP {ip}; clone → SSH with the playbook's file: {})\n",
            secs(clone_secs)
        );
        s += &format!(
            "  total wall time        {}",
            secs(started.elapsed().as_secs_f64())
        );
        s
    }

    /// A PVE API call with the demo's token, from inside the namespace. The token goes to curl on
    /// stdin (a config file), never on its command line.
    fn api(&self, method: &str, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let url = match &self.sandbox {
            Some(sb) => sb.url.clone(),
            None => bail!("the sandbox is not running"),
        };
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            "curl",
            "-sk",
            "-i",
            "--max-time",
            "60",
            "-K",
            "-",
            "-X",
            method,
        ]);
        for (k, v) in params {
            c.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        c.arg(format!("{url}{path}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().context("starting curl")?;
        if let Some(mut stdin) = child.stdin.take() {
            writeln!(
                stdin,
                "header = \"Authorization: PVEAPIToken={TOKEN_ID}={}\"",
                self.token
            )?;
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let status_line = head.lines().next().unwrap_or_default().trim().to_string();
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code != 200 {
            bail!(
                "{method} {path}: {}{}",
                if status_line.is_empty() {
                    "no answer".to_string()
                } else {
                    status_line
                },
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_str(body).with_context(|| format!("{method} {path}: answer is not JSON"))
    }

    /// Waits for the task whose UPID is `r["data"]` (no-op when the call returned no task).
    fn wait_task(&self, r: &Value, limit: Duration, what: &str) -> Result<()> {
        let Some(upid) = r["data"].as_str().filter(|u| u.starts_with("UPID:")) else {
            return Ok(());
        };
        let node = upid.split(':').nth(1).unwrap_or("pve");
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let v = self.api("GET", &format!("/nodes/{node}/tasks/{upid}/status"), &[])?;
            if v["data"]["status"] == "stopped" {
                let exit = v["data"]["exitstatus"].as_str().unwrap_or_default();
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(());
                }
                bail!("{what}: task failed: {exit}");
            }
            nap(Duration::from_millis(500))?;
        }
        bail!("{what}: task did not finish within {} s", limit.as_secs())
    }

    fn wait_ip(&self, vmid: u32, limit: Duration) -> Result<String> {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < limit {
            match self.api(
                "GET",
                &format!("/nodes/pve/qemu/{vmid}/agent/network-get-interfaces"),
                &[],
            ) {
                Ok(v) => {
                    for i in v["data"]["result"].as_array().into_iter().flatten() {
                        if i["name"] == "lo" {
                            continue;
                        }
                        for a in i["ip-addresses"].as_array().into_iter().flatten() {
                            if a["ip-address-type"] == "ipv4" {
                                if let Some(ip) = a["ip-address"].as_str() {
                                    return Ok(ip.to_string());
                                }
                            }
                        }
                    }
                }
                Err(e) => last = e.to_string(),
            }
            nap(Duration::from_secs(3))?;
        }
        bail!(
            "VM {vmid} reported no IPv4 address through the guest agent within {} s (last answer: {last})",
            limit.as_secs()
        )
    }

    fn ssh_until(&self, key: &Path, ip: &str, script: &str, limit: Duration) -> Result<String> {
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < limit {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.ns, "ssh", "-i"])
                .arg(key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                    "-o",
                    "ConnectTimeout=5",
                    "-o",
                    "BatchMode=yes",
                    &format!("packer@{ip}"),
                    script,
                ])
                .stdin(Stdio::null())
                .process_group(0)
                .output()
                .context("starting ssh")?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                return Ok(text.trim_end().to_string());
            }
            last = text.trim().to_string();
            nap(Duration::from_secs(3))?;
        }
        bail!(
            "SSH to packer@{ip} did not succeed within {} s: {last}",
            limit.as_secs()
        )
    }

    /// Stops everything the demo started. Idempotent; never fails (it reports what it could not do).
    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // a running build: let kiln cancel and clean up its own VM
        if let Some(mut b) = self.build.take() {
            println!("stopping kiln build (it removes its VM) …");
            signal_pid(b.id(), "-INT");
            if !wait_child(&mut b, Duration::from_secs(120)) {
                let _ = b.kill();
                let _ = b.wait();
            }
        }
        if self.sandbox.is_some() {
            for vmid in self.vms.clone().into_iter().rev() {
                let base = format!("/nodes/pve/qemu/{vmid}");
                if let Ok(v) = self.api("GET", &format!("{base}/status/current"), &[]) {
                    if v["data"]["status"] == "running" {
                        if let Ok(r) = self.api("POST", &format!("{base}/status/stop"), &[]) {
                            let _ = self.wait_task_quiet(&r, Duration::from_secs(60));
                        }
                    }
                    match self.api("DELETE", &base, &[]) {
                        Ok(r) => {
                            let _ = self.wait_task_quiet(&r, Duration::from_secs(60));
                            println!("deleted VM {vmid}");
                        }
                        Err(e) => eprintln!("warning: could not delete VM {vmid}: {e}"),
                    }
                }
            }
        }
        if let Some(mut sb) = self.sandbox.take() {
            // the outer `kiln sandbox serve` forwards SIGTERM and deletes the namespace it created
            signal_pid(sb.child.id(), "-TERM");
            if wait_child(&mut sb.child, Duration::from_secs(30)) {
                println!("stopped the sandbox");
            } else {
                eprintln!("warning: the sandbox did not stop within 30 s; killing it");
                let _ = sb.child.kill();
                let _ = sb.child.wait();
            }
        }
        if netns_exists(&self.ns) {
            let pids =
                run_quiet(Command::new("ip").args(["netns", "pids", &self.ns])).unwrap_or_default();
            for p in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", p]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
        if netns_exists(&self.ns) {
            eprintln!(
                "warning: network namespace {} is still there: ip netns del {}",
                self.ns, self.ns
            );
        } else {
            println!("network namespace {} is gone", self.ns);
        }
    }

    fn wait_task_quiet(&self, r: &Value, limit: Duration) -> Result<()> {
        let Some(upid) = r["data"].as_str().filter(|u| u.starts_with("UPID:")) else {
            return Ok(());
        };
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let v = self.api("GET", &format!("/nodes/pve/tasks/{upid}/status"), &[])?;
            if v["data"]["status"] == "stopped" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    fn remove_dir_if_done(&mut self, remove: bool) {
        if remove && !self.keep {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => println!("removed {}", self.dir.display()),
                Err(e) => eprintln!("warning: could not remove {}: {e}", self.dir.display()),
            }
        } else {
            eprintln!(
                "logs kept in {} (build.log, sandbox.log, sandbox/events.jsonl, sandbox/ state); remove it with: rm -rf {}",
                self.dir.display(),
                self.dir.display()
            );
        }
        self.keep = true; // nothing more to remove on drop
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.cleanup();
    }
}

// ---- helpers -------------------------------------------------------------------------------------------

fn secs(s: f64) -> String {
    if s >= 60.0 {
        format!(
            "{}m{:02}s",
            (s / 60.0).floor() as u64,
            (s % 60.0).round() as u64
        )
    } else {
        format!("{s:.1}s")
    }
}

fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(hex::encode(b))
}

/// Runs a command, returning its stdout; its output is included in the error on failure.
fn run_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn signal_pid(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

fn tail(p: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let rel = entry.path().strip_prefix(from)?;
        if rel.as_os_str() == "manifest.json" {
            continue;
        }
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}
