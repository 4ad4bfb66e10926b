//! End-to-end: `kiln build examples/test-guest` against `kiln sandbox serve` (real QEMU, TCG) with
//! the test-guest ISO, inside a network namespace this test creates. Gated by `KILN_E2E=1`; then
//! every missing prerequisite is a failure.
//!
//! One test function runs the scenarios in sequence (they share the namespace and the 2 cores):
//! 1. wrong password → exit 1, clear message, nothing created;
//! 2. failed create task (sandbox fault injection) → exit 1, no VM, no generated ISO;
//! 3. the full build → exit 0, the seed's sequence in the sandbox's events.jsonl and kiln's output,
//!    HTTP port closed; its SSH session goes through a bastion (a second sshd in the namespace: its
//!    log shows kiln's login and the direct-tcpip channels to the guest's port 22), `vm_name =
//!    "x-{{ timestamp }}"` reaches PVE rendered, `cloud_init_disable_upgrade_packages` is `ciupgrade: 0`
//!    in the template's config, and the shell-local post-processor wrote its note; then a linked clone of the template boots, cloud-init runs again, and SSH
//!    shows the file the Ansible playbook wrote;
//!    Then (3b) `proxmox-clone` (examples/test-guest-clone): a linked clone of a VM that is not a
//!    template is refused (exit 1, nothing created); a linked clone of template 9000 is provisioned
//!    and templated (9200, steps connect → clone_vm → … → template, no ISO/create/boot command), and
//!    a clone of 9200 boots with the playbook's file and the clone build's mark;
//! 4. SIGINT during the guest wait → exit 130, no VM, no generated ISO, no listening port;
//! 5. a boot command the guest never acts on → exit 1 with the "nothing fetched" diagnosis, no VM.
//!
//! No scenario may print a secret (API password, token, SSH private key).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_testguest::secrets::{private_key_secrets, scan, Secret};

const PASSWORD: &str = "E2e-Sandbox-Pw-7f3a";
const TOKEN_ID: &str = "root@pam!e2e";
const TOKEN_SECRET: &str = "5b1e0c2a-e2e0-4d7c-9a61-kiln0e2e0000";

fn kiln() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn sh(cmd: &mut Command) -> (bool, String) {
    match cmd.output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// A network namespace, deleted (with every process still in it) on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("kiln-bld-{}", std::process::id());
        let (ok, out) = sh(Command::new("ip").args(["netns", "add", &name]));
        assert!(ok, "ip netns add {name}: {out}");
        sh(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Netns(name)
    }
    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
    fn listening_ports(&self) -> String {
        sh(self.exec().args(["ss", "-ltnH"])).1
    }
    /// A host firewall that drops incoming connections by default (loopback, replies and DHCP
    /// excepted), as on a hardened build host: the guest reaches kiln's HTTP server only through the
    /// rule `-open-firewall` adds for the build.
    fn drop_incoming(&self) {
        let rules: [&[&str]; 4] = [
            &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
            &[
                "-A",
                "INPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
            &["-A", "INPUT", "-p", "udp", "--dport", "67", "-j", "ACCEPT"],
            &["-P", "INPUT", "DROP"],
        ];
        for r in rules {
            let (ok, out) = sh(self.exec().arg("iptables").args(r));
            assert!(ok, "iptables {r:?}: {out}");
        }
    }
    /// iptables-save and ip6tables-save without comments and packet counters.
    fn ruleset(&self) -> String {
        let mut all = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            let (ok, out) = sh(self.exec().arg(tool));
            assert!(ok, "{tool}: {out}");
            for l in out.lines().filter(|l| !l.starts_with('#')) {
                let l = match l.find(" [") {
                    Some(i) if l.starts_with(':') => &l[..i],
                    _ => l,
                };
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let (_, pids) = sh(Command::new("ip").args(["netns", "pids", &self.0]));
        for p in pids.split_whitespace() {
            sh(Command::new("kill").args(["-TERM", p]));
        }
        std::thread::sleep(Duration::from_millis(500));
        let (_, pids) = sh(Command::new("ip").args(["netns", "pids", &self.0]));
        for p in pids.split_whitespace() {
            sh(Command::new("kill").args(["-KILL", p]));
        }
        sh(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

/// `kiln sandbox serve` in the namespace; stopped on drop.
struct Sandbox {
    child: Child,
    state: PathBuf,
    url: String,
    fingerprint: String,
}

impl Sandbox {
    fn start(ns: &Netns, state: &Path, port: u16, extra: &[&str]) -> Sandbox {
        std::fs::create_dir_all(state).ok();
        let mut cmd = ns.exec();
        cmd.arg(kiln())
            .args(["sandbox", "serve", "--accel", "tcg", "--state"])
            .arg(state)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--password",
                PASSWORD,
            ])
            .args(["--token", &format!("{TOKEN_ID}={TOKEN_SECRET}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(must(
                std::fs::File::create(state.with_extension("stderr")),
                "sandbox stderr file",
            )));
        let mut child = must(cmd.spawn(), "start kiln sandbox serve");
        let stdout = child.stdout.take();
        let mut line = String::new();
        if let Some(out) = stdout {
            let mut r = BufReader::new(out);
            must(r.read_line(&mut line), "read the sandbox's ready line");
        }
        let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            let err = std::fs::read_to_string(state.with_extension("stderr")).unwrap_or_default();
            panic!("sandbox ready line {line:?}: {e}\n{err}")
        });
        Sandbox {
            child,
            state: state.to_path_buf(),
            url: v["url"].as_str().unwrap_or_default().to_string(),
            fingerprint: v["fingerprint"].as_str().unwrap_or_default().to_string(),
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A PVE API call with the token, from inside the namespace.
    fn api(&self, ns: &Netns, method: &str, path: &str, params: &[(&str, &str)]) -> Value {
        let mut c = ns.exec();
        c.args([
            "curl",
            "-sk",
            "-X",
            method,
            "-H",
            &format!("Authorization: PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}"),
        ]);
        for (k, v) in params {
            c.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        c.arg(format!("{}{path}", self.url));
        let (_, out) = sh(&mut c);
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    fn wait_task(&self, ns: &Netns, upid: &str, limit: Duration) -> String {
        let node = upid.split(':').nth(1).unwrap_or("pve");
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let v = self.api(
                ns,
                "GET",
                &format!("/nodes/{node}/tasks/{upid}/status"),
                &[],
            );
            if v["data"]["status"] == "stopped" {
                return v["data"]["exitstatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("task {upid} did not finish in {limit:?}");
    }

    fn vm_ids(&self, ns: &Netns) -> Vec<u64> {
        let v = self.api(ns, "GET", "/cluster/resources", &[("type", "vm")]);
        v["data"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["vmid"].as_u64()).collect())
            .unwrap_or_default()
    }

    fn isos(&self, ns: &Netns) -> Vec<String> {
        let v = self.api(
            ns,
            "GET",
            "/nodes/pve/storage/local/content",
            &[("content", "iso")],
        );
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["volid"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        sh(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fixture {
    dir: PathBuf,
    key: PathBuf,
    pubkey: String,
    sums: PathBuf,
    iso: PathBuf,
}

fn fixture(dir: &Path) -> Fixture {
    let iso = must(kiln_testguest_iso(), "test-guest ISO");
    let key = dir.join("id_ed25519");
    let (ok, out) = sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-e2e", "-f"])
        .arg(&key));
    assert!(ok, "ssh-keygen (openssh-client): {out}");
    let pubkey = must(
        std::fs::read_to_string(dir.join("id_ed25519.pub")),
        "public key",
    )
    .trim()
    .to_string();
    let real = must(std::fs::canonicalize(&iso), "canonicalize ISO");
    let (ok, sum) = sh(Command::new("sha256sum").arg(&real));
    assert!(ok, "sha256sum: {sum}");
    let hex = sum
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let sums = dir.join("SHA256SUMS");
    must(
        std::fs::write(&sums, format!("{hex}  guest.iso\n")),
        "write SHA256SUMS",
    );
    Fixture {
        dir: dir.to_path_buf(),
        key,
        pubkey,
        sums,
        iso: real,
    }
}

fn kiln_testguest_iso() -> Result<PathBuf, String> {
    kiln_testguest::iso_path().map_err(|e| e.to_string())
}

/// Start `kiln build` in the namespace; output (stdout+stderr) goes to `log`.
fn start_build(
    ns: &Netns,
    sb: &Sandbox,
    fx: &Fixture,
    password: &str,
    extra: &[String],
    log: &Path,
) -> Child {
    let out = must(std::fs::File::create(log), "build log");
    let err = must(out.try_clone(), "build log");
    let mut c = ns.exec();
    c.arg(kiln())
        .args(["build", "-timestamp-ui", "-open-firewall=iptables"])
        .args(["-var", &format!("proxmox_url={}", sb.url)])
        .args(["-var", &format!("ssh_public_key={}", fx.pubkey)])
        .args([
            "-var",
            &format!("ssh_private_key_file={}", fx.key.display()),
        ])
        .args(["-var", &format!("iso_url={}", fx.iso.display())])
        .args(["-var", &format!("iso_checksum=file:{}", fx.sums.display())])
        .args(extra)
        .arg(workspace().join("examples/test-guest"))
        .env("PROXMOX_PASSWORD", password)
        .env("PROXMOX_FINGERPRINT", &sb.fingerprint)
        .env_remove("PROXMOX_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    must(c.spawn(), "start kiln build")
}

fn wait_exit(child: &mut Child, limit: Duration, log: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code().unwrap_or(-1);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "kiln build still running after {limit:?}; output:\n{}",
                read(log)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn assert_no_secrets(what: &str, text: &str, fx: &Fixture) {
    let key = read(&fx.key);
    let key_body: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    for s in [PASSWORD, TOKEN_SECRET].iter().copied().chain(key_body) {
        assert!(
            !text.contains(s),
            "{what}: a secret appears in kiln's output"
        );
    }
}

/// Index of the first line containing `needle` at or after `from`.
fn pos(lines: &[&str], needle: &str, from: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
        .unwrap_or_else(|| {
            panic!(
                "output has no line with {needle:?} after line {from}:\n{}",
                lines.join("\n")
            )
        })
}

fn event_pos(ev: &[Value], from: usize, what: &str, f: impl Fn(&Value) -> bool) -> usize {
    ev.iter()
        .enumerate()
        .skip(from)
        .find(|(_, e)| f(e))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("events.jsonl: no {what} after event #{from}"))
}

fn req(e: &Value, method: &str, path_end: &str) -> bool {
    e["event"] == "request"
        && e["method"] == method
        && e["path"].as_str().is_some_and(|p| p.ends_with(path_end))
}

fn prerequisites() {
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("ansible-playbook", "ansible"),
        ("ssh-keygen", "openssh-client"),
        ("ssh", "openssh-client"),
        ("curl", "curl"),
        ("ss", "iproute2"),
        ("dnsmasq", "dnsmasq-base"),
    ] {
        let (ok, _) = sh(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
        assert!(
            ok,
            "prerequisite missing: {tool} (apt-get install -y {pkg})"
        );
    }
    let (_, id) = sh(Command::new("id").arg("-u"));
    assert_eq!(
        id.trim(),
        "0",
        "the end-to-end build test needs root (network namespaces, QEMU taps)"
    );
}

fn step_timings(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.contains("Step timings:"))
        .take_while(|l| !l.contains("Build '"))
        .map(|l| l.split_once(": ").map(|(_, r)| r).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kiln build examples/test-guest-clone` (a `proxmox-clone` source) in the namespace.
fn start_clone_build(
    ns: &Netns,
    sb: &Sandbox,
    fx: &Fixture,
    password: &str,
    extra: &[String],
    log: &Path,
) -> Child {
    let out = must(std::fs::File::create(log), "build log");
    let err = must(out.try_clone(), "build log");
    let mut c = ns.exec();
    c.arg(kiln())
        .args(["build", "-timestamp-ui"])
        .args(["-var", &format!("proxmox_url={}", sb.url)])
        .args([
            "-var",
            &format!("ssh_private_key_file={}", fx.key.display()),
        ])
        .args(extra)
        .arg(workspace().join("examples/test-guest-clone"))
        .env("PROXMOX_PASSWORD", password)
        .env("PROXMOX_FINGERPRINT", &sb.fingerprint)
        .env_remove("PROXMOX_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    must(c.spawn(), "start kiln build (proxmox-clone)")
}

/// Clone template `src` to `newid` through the API (as a user would), boot it with DHCP from
/// cloud-init, and run `cmd` over SSH as `packer` until its output contains `until`.
fn boot_clone_and_run(
    ns: &Netns,
    sb: &Sandbox,
    fx: &Fixture,
    src: u32,
    newid: u32,
    cmd: &str,
    until: &str,
) -> String {
    let r = sb.api(
        ns,
        "POST",
        &format!("/nodes/pve/qemu/{src}/clone"),
        &[
            ("newid", &newid.to_string()),
            ("name", &format!("kiln-clone-{newid}")),
        ],
    );
    let upid = r["data"]
        .as_str()
        .unwrap_or_else(|| panic!("clone {src} → {newid}: {r}"))
        .to_string();
    assert!(sb
        .wait_task(ns, &upid, Duration::from_secs(120))
        .starts_with("OK"));
    let r = sb.api(
        ns,
        "POST",
        &format!("/nodes/pve/qemu/{newid}/config"),
        &[("ipconfig0", "ip=dhcp")],
    );
    if let Some(u) = r["data"].as_str() {
        assert!(sb
            .wait_task(ns, u, Duration::from_secs(60))
            .starts_with("OK"));
    }
    let r = sb.api(
        ns,
        "POST",
        &format!("/nodes/pve/qemu/{newid}/status/start"),
        &[],
    );
    if let Some(u) = r["data"].as_str() {
        assert!(sb
            .wait_task(ns, u, Duration::from_secs(120))
            .starts_with("OK"));
    }
    let mut ip = String::new();
    let t0 = Instant::now();
    while ip.is_empty() && t0.elapsed() < Duration::from_secs(400) {
        let v = sb.api(
            ns,
            "GET",
            &format!("/nodes/pve/qemu/{newid}/agent/network-get-interfaces"),
            &[],
        );
        for i in v["data"]["result"].as_array().cloned().unwrap_or_default() {
            if i["name"] == "lo" {
                continue;
            }
            for a in i["ip-addresses"].as_array().cloned().unwrap_or_default() {
                if a["ip-address-type"] == "ipv4" {
                    ip = a["ip-address"].as_str().unwrap_or_default().to_string();
                }
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        !ip.is_empty(),
        "clone {newid} never reported an IP through the guest agent"
    );
    let mut out = String::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(240) {
        let (ok, o) = sh(ns.exec().args(["ssh", "-i"]).arg(&fx.key).args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            &format!("packer@{ip}"),
            cmd,
        ]));
        out = o;
        if ok && out.contains(until) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let r = sb.api(
        ns,
        "POST",
        &format!("/nodes/pve/qemu/{newid}/status/stop"),
        &[],
    );
    if let Some(u) = r["data"].as_str() {
        sb.wait_task(ns, u, Duration::from_secs(60));
    }
    out
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn e2e_kiln_build_on_sandbox() {
    kiln_testguest::require_e2e();
    prerequisites();
    let tmp = must(tempfile::tempdir(), "temp dir");
    let fx = fixture(tmp.path());
    let ns = Netns::new();
    ns.drop_incoming();
    let firewall = ns.ruleset();
    let t_all = Instant::now();

    // ---- 1. wrong password --------------------------------------------------------------
    let sb = Sandbox::start(&ns, &fx.dir.join("sb"), 8006, &[]);
    let log = fx.dir.join("wrong-password.log");
    let mut c = start_build(&ns, &sb, &fx, "not-the-password", &[], &log);
    let code = wait_exit(&mut c, Duration::from_secs(120), &log);
    let out = read(&log);
    println!("--- wrong password (exit {code}) ---\n{out}");
    assert_eq!(code, 1, "wrong password must exit 1");
    assert!(
        out.contains("rejected the login") && out.contains("401"),
        "no clear 401 message:\n{out}"
    );
    assert!(
        sb.vm_ids(&ns).is_empty(),
        "a VM was created despite the failed login"
    );
    assert!(
        !out.contains("not-the-password"),
        "the wrong password was printed"
    );
    assert_no_secrets("wrong password", &out, &fx);
    // the same with Packer's -machine-readable output (scanned with everything at the end)
    let log_mr = fx.dir.join("wrong-password-machine-readable.log");
    let mr = ["-machine-readable".to_string()];
    let mut c = start_build(&ns, &sb, &fx, "not-the-password", &mr, &log_mr);
    let code = wait_exit(&mut c, Duration::from_secs(120), &log_mr);
    assert_eq!(
        code,
        1,
        "wrong password (-machine-readable): {}",
        read(&log_mr)
    );

    // ---- 2. failed create task (fault injection), on a second sandbox without network -------
    {
        let sb2 = Sandbox::start(
            &ns,
            &fx.dir.join("sb-fault"),
            8007,
            &[
                "--network",
                "off",
                "--fail-task",
                "qmcreate:1:unable to create VM 9000 - injected fault",
            ],
        );
        let log = fx.dir.join("create-fault.log");
        let mut c = start_build(&ns, &sb2, &fx, PASSWORD, &[], &log);
        let code = wait_exit(&mut c, Duration::from_secs(300), &log);
        let out = read(&log);
        println!("--- failed create task (exit {code}) ---\n{out}");
        assert_eq!(code, 1);
        assert!(
            out.contains("Error creating VM") && out.contains("injected fault"),
            "unclear create error:\n{out}"
        );
        assert!(
            sb2.vm_ids(&ns).is_empty(),
            "VM left behind after a failed create"
        );
        let isos = sb2.isos(&ns);
        assert!(
            !isos.iter().any(|i| i.contains("kiln-")),
            "generated ISO left behind: {isos:?}"
        );
        assert_no_secrets("create fault", &out, &fx);
        assert!(
            out.contains("Opened HTTP port"),
            "-open-firewall did not open:\n{out}"
        );
        assert_eq!(
            ns.ruleset(),
            firewall,
            "firewall rules left behind by the failed build"
        );
    }

    // ---- 3. the full build ------------------------------------------------------------------
    let log = fx.dir.join("build.log");
    // the SSH session goes through a jump host: a second sshd in the namespace (ssh_bastion_*)
    let bastion = must(
        kiln_guest::testsupport::TestSshd::start_in_netns(&ns.0),
        "bastion sshd",
    );
    must(bastion.authorize_key(&fx.pubkey), "bastion key");
    let note = fx.dir.join("post-processor-note.txt");
    let bastion_args: Vec<String> = [
        "ssh_bastion_host=127.0.0.1".to_string(),
        format!("ssh_bastion_port={}", bastion.port()),
        format!(
            "ssh_bastion_username={}",
            kiln_guest::testsupport::TEST_USER
        ),
        format!("ssh_bastion_private_key_file={}", fx.key.display()),
        format!("build_note={}", note.display()),
    ]
    .into_iter()
    .flat_map(|v| ["-var".to_string(), v])
    .collect();
    let t_build = Instant::now();
    let mut c = start_build(&ns, &sb, &fx, PASSWORD, &bastion_args, &log);
    let code = wait_exit(&mut c, Duration::from_secs(1500), &log);
    let build_time = t_build.elapsed();
    let out = read(&log);
    println!(
        "--- full build (exit {code}, {:.0} s) ---\n{out}",
        build_time.as_secs_f64()
    );
    assert_eq!(code, 0, "kiln build failed");
    assert_no_secrets("full build", &out, &fx);
    // the namespace drops incoming connections: the guest could only fetch its seed through the
    // rule -open-firewall added, and that rule is gone again
    assert!(out.contains("Opened HTTP port"), "{out}");
    assert!(out.contains("Closed HTTP port"), "{out}");
    assert_eq!(
        ns.ruleset(),
        firewall,
        "firewall rules left behind by the build"
    );
    let lines: Vec<&str> = out.lines().collect();
    let a = pos(&lines, "VM fetched /user-data", 0);
    pos(&lines, "VM fetched /meta-data", 0);
    let b = pos(&lines, "Connected to SSH", a);
    let c2 = pos(&lines, "status: done", b); // `cloud-init status --wait`
    let d = pos(&lines, "PLAY RECAP", c2); // the ansible playbook
    pos(&lines, "failed=0", d);
    let e = pos(&lines, "Stopping VM", d);
    let f = pos(&lines, "Converting VM to template", e);
    let g = pos(&lines, "Stopped HTTP server on port", f);
    pos(&lines, "A template was created: 9000", g);
    let port = lines[g]
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let listening = ns.listening_ports();
    assert!(
        !listening.contains(&format!(":{port} ")),
        "kiln's HTTP port {port} still open:\n{listening}"
    );

    let ev = sb.events();
    let is_vm =
        |e: &Value, action: &str| e["event"] == "vm" && e["vmid"] == 9000 && e["action"] == action;
    let i1 = event_pos(&ev, 0, "VM created", |e| is_vm(e, "created"));
    let i2 = event_pos(&ev, i1, "VM started", |e| is_vm(e, "started"));
    let i3 = event_pos(&ev, i2, "keys typed", |e| {
        e["event"] == "key" && e["vmid"] == 9000
    });
    let nkeys = ev
        .iter()
        .filter(|e| e["event"] == "key" && e["vmid"] == 9000)
        .count();
    assert!(nkeys >= 50, "only {nkeys} keys typed");
    let i4 = event_pos(&ev, i3, "IP from the agent", |e| {
        req(e, "GET", "/qemu/9000/agent/network-get-interfaces") && e["status"] == 200
    });
    let i5 = event_pos(&ev, i4, "shutdown", |e| {
        req(e, "POST", "/qemu/9000/status/shutdown")
    });
    let i6 = event_pos(&ev, i5, "CD-ROM removed", |e| {
        req(e, "POST", "/qemu/9000/config")
            && e["params"]["delete"]
                .as_str()
                .is_some_and(|d| d.split(',').any(|x| x == "ide2"))
    });
    event_pos(&ev, i6, "template", |e| is_vm(e, "template"));
    // vm_name = "x-{{ timestamp }}" reached PVE rendered (Unix seconds), not verbatim
    let created = event_pos(&ev, 0, "create request", |e| {
        req(e, "POST", "/nodes/pve/qemu")
            && (e["params"]["vmid"] == "9000" || e["params"]["vmid"] == 9000)
    });
    let vm_name = ev[created]["params"]["name"].as_str().unwrap_or_default();
    println!("create request name: {vm_name}");
    assert!(
        vm_name
            .strip_prefix("x-")
            .is_some_and(|t| t.len() >= 10 && t.bytes().all(|b| b.is_ascii_digit())),
        "vm_name not rendered: {:?}",
        ev[created]["params"]
    );
    // cloud_init_disable_upgrade_packages = true is ciupgrade: 0 in the template's config
    let cfg = sb.api(&ns, "GET", "/nodes/pve/qemu/9000/config", &[]);
    println!("template config ciupgrade: {}", cfg["data"]["ciupgrade"]);
    assert!(
        cfg["data"]["ciupgrade"] == 0 || cfg["data"]["ciupgrade"] == "0",
        "ciupgrade is not 0 in the template's config: {}",
        cfg["data"]
    );
    // the SSH session went through the bastion: it authenticated kiln's key and opened
    // direct-tcpip channels to the guest's port 22
    let blog = bastion.log_text();
    let tunnels: Vec<&str> = blog
        .lines()
        .filter(|l| l.contains("server_request_direct_tcpip") && l.ends_with("port 22"))
        .collect();
    println!(
        "bastion: {} direct-tcpip channels to port 22, first: {:?}",
        tunnels.len(),
        tunnels.first()
    );
    assert!(
        blog.contains(&format!(
            "Accepted publickey for {}",
            kiln_guest::testsupport::TEST_USER
        )),
        "kiln never logged in on the bastion:\n{blog}"
    );
    assert!(
        !tunnels.is_empty(),
        "no direct-tcpip channel to the guest's SSH port through the bastion:\n{blog}"
    );
    drop(bastion);
    // the shell-local post-processor ran (with Packer's environment) and wrote its note
    pos(&lines, "shell-local post-processor: ", 0);
    let note_text = read(&note);
    println!("shell-local note: {}", note_text.trim());
    assert!(
        note_text.contains("proxmox-iso"),
        "shell-local post-processor note: {note_text:?}"
    );
    let isos = sb.isos(&ns);
    assert!(
        !isos.iter().any(|i| i.contains("kiln-")),
        "generated ISO not deleted: {isos:?}"
    );
    let manifest = read(&workspace().join("examples/test-guest/manifest.json"));
    assert!(
        manifest.contains("\"artifact_id\": \"9000\""),
        "manifest: {manifest}"
    );
    // kept for the secrets scan at the end
    let _ = std::fs::write(fx.dir.join("manifest.json"), &manifest);
    let _ = std::fs::remove_file(workspace().join("examples/test-guest/manifest.json"));

    // the clone boots, cloud-init runs again, the playbook's file is there
    let t_clone = Instant::now();
    let r = sb.api(
        &ns,
        "POST",
        "/nodes/pve/qemu/9000/clone",
        &[("newid", "9100"), ("name", "kiln-clone")],
    );
    let upid = r["data"]
        .as_str()
        .unwrap_or_else(|| panic!("clone: {r}"))
        .to_string();
    assert!(sb
        .wait_task(&ns, &upid, Duration::from_secs(120))
        .starts_with("OK"));
    // as on PVE, a clone's cloud-init drive configures the NIC only when told to
    let r = sb.api(
        &ns,
        "POST",
        "/nodes/pve/qemu/9100/config",
        &[("ipconfig0", "ip=dhcp")],
    );
    if let Some(u) = r["data"].as_str() {
        assert!(
            sb.wait_task(&ns, u, Duration::from_secs(60))
                .starts_with("OK"),
            "clone config"
        );
    }
    let r = sb.api(&ns, "POST", "/nodes/pve/qemu/9100/status/start", &[]);
    if let Some(u) = r["data"].as_str() {
        assert!(
            sb.wait_task(&ns, u, Duration::from_secs(120))
                .starts_with("OK"),
            "clone start"
        );
    }
    let mut ip = String::new();
    let t0 = Instant::now();
    while ip.is_empty() && t0.elapsed() < Duration::from_secs(400) {
        let v = sb.api(
            &ns,
            "GET",
            "/nodes/pve/qemu/9100/agent/network-get-interfaces",
            &[],
        );
        for i in v["data"]["result"].as_array().cloned().unwrap_or_default() {
            if i["name"] == "lo" {
                continue;
            }
            for a in i["ip-addresses"].as_array().cloned().unwrap_or_default() {
                if a["ip-address-type"] == "ipv4" {
                    ip = a["ip-address"].as_str().unwrap_or_default().to_string();
                }
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        !ip.is_empty(),
        "the clone never reported an IP through the guest agent"
    );
    let mut ssh_out = String::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(240) {
        let (ok, o) = sh(ns.exec().args(["ssh", "-i"]).arg(&fx.key).args([
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "BatchMode=yes",
            &format!("packer@{ip}"),
            "cloud-init status --wait; test -f /var/lib/cloud/instance/boot-finished && echo cloud-init-ran-again; cat /etc/kiln-playbook",
        ]));
        ssh_out = o;
        if ok && ssh_out.contains("built-by-kiln") {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    println!(
        "--- clone 9100 at {ip} ({:.0} s) ---\n{ssh_out}",
        t_clone.elapsed().as_secs_f64()
    );
    assert!(
        ssh_out.contains("status: done"),
        "cloud-init on the clone: {ssh_out}"
    );
    assert!(
        ssh_out.contains("cloud-init-ran-again"),
        "cloud-init did not run again on the clone: {ssh_out}"
    );
    assert!(
        ssh_out.contains("built-by-kiln"),
        "the playbook's file is missing on the clone: {ssh_out}"
    );
    let r = sb.api(&ns, "POST", "/nodes/pve/qemu/9100/status/stop", &[]);
    if let Some(u) = r["data"].as_str() {
        sb.wait_task(&ns, u, Duration::from_secs(60));
    }

    // ---- 3b. proxmox-clone of the kiln-built template ----------------------------------------
    // a linked clone of a VM that is not a template: refused before anything is created
    let log = fx.dir.join("clone-not-template.log");
    let extra: Vec<String> = ["-var", "clone_vm_id=9100", "-var", "vm_id=9201"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut child = start_clone_build(&ns, &sb, &fx, PASSWORD, &extra, &log);
    let code = wait_exit(&mut child, Duration::from_secs(120), &log);
    let out = read(&log);
    println!("--- proxmox-clone of a non-template, linked (exit {code}) ---\n{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is not a template") && out.contains("full_clone = true"),
        "{out}"
    );
    assert!(
        !sb.vm_ids(&ns).contains(&9201),
        "a refused clone left VM 9201"
    );
    // the real thing: linked clone of template 9000, provision, template 9200
    let t_cb = Instant::now();
    let log = fx.dir.join("clone-build.log");
    let mut child = start_clone_build(&ns, &sb, &fx, PASSWORD, &[], &log);
    let code = wait_exit(&mut child, Duration::from_secs(900), &log);
    let out = read(&log);
    println!(
        "--- kiln build proxmox-clone ({:.0} s, exit {code}) ---\n{out}",
        t_cb.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "proxmox-clone build failed:\n{out}");
    let steps = step_timings(&out);
    for s in [
        "connect",
        "clone_vm",
        "start_vm",
        "wait_guest",
        "provision",
        "shutdown",
        "finalize",
        "template",
    ] {
        assert!(
            steps.contains(s),
            "step {s} missing from the step list:\n{steps}"
        );
    }
    for s in ["iso", "create_vm", "boot_command", "http_server"] {
        assert!(
            !steps.lines().any(|l| l.trim_start().starts_with(s)),
            "a proxmox-clone build ran step {s}:\n{steps}"
        );
    }
    assert!(out.contains("linked clone"), "{out}");
    assert!(out.contains("A template was created: 9200"), "{out}");
    assert_no_secrets("proxmox-clone build", &out, &fx);
    let conf = sb.api(&ns, "GET", "/nodes/pve/qemu/9200/config", &[]);
    assert_eq!(conf["data"]["template"].as_u64(), Some(1), "{conf}");
    // its clone boots with both builds' marks
    let t_c2 = Instant::now();
    let out = boot_clone_and_run(
        &ns,
        &sb,
        &fx,
        9200,
        9300,
        "cloud-init status --wait; cat /etc/kiln-playbook /etc/kiln-clone-mark",
        "customised-by-kiln-clone",
    );
    println!(
        "--- clone 9300 of the proxmox-clone template ({:.0} s) ---\n{out}",
        t_c2.elapsed().as_secs_f64()
    );
    assert!(
        out.contains("built-by-kiln"),
        "the playbook's file is missing: {out}"
    );
    assert!(
        out.contains("customised-by-kiln-clone"),
        "the proxmox-clone provisioner's mark is missing: {out}"
    );

    // ---- 4. SIGINT during the guest wait ------------------------------------------------------
    let log = fx.dir.join("sigint.log");
    let extra: Vec<String> = ["-var", "vm_id=9001", "-var", "template_name=kiln-sigint"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut c = start_build(&ns, &sb, &fx, PASSWORD, &extra, &log);
    let t0 = Instant::now();
    while !read(&log).contains("Waiting for the guest's IP address") {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "never reached the guest wait:\n{}",
            read(&log)
        );
        assert!(
            c.try_wait().ok().flatten().is_none(),
            "build ended early:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    // `ip netns exec` execs kiln: the child's pid is kiln's
    sh(Command::new("kill").args(["-INT", &c.id().to_string()]));
    let code = wait_exit(&mut c, Duration::from_secs(120), &log);
    let out = read(&log);
    println!("--- SIGINT (exit {code}) ---\n{out}");
    assert_eq!(code, 130, "Ctrl-C must exit 130");
    assert!(
        out.contains("Cancelling build after receiving interrupt") && out.contains("Deleting VM"),
        "{out}"
    );
    assert!(
        !sb.vm_ids(&ns).contains(&9001),
        "VM 9001 left behind after SIGINT"
    );
    assert!(
        !sb.isos(&ns).iter().any(|i| i.contains("kiln-")),
        "generated ISO left behind after SIGINT"
    );
    let listening = ns.listening_ports();
    assert!(
        !listening
            .lines()
            .any(|l| (8800..=8899).any(|p| l.contains(&format!(":{p} ")))),
        "HTTP port left open:\n{listening}"
    );
    assert_no_secrets("sigint", &out, &fx);
    assert_eq!(
        ns.ruleset(),
        firewall,
        "firewall rules left behind after SIGINT"
    );

    // ---- 5. a boot command the guest never acts on ---------------------------------------------
    let log = fx.dir.join("bad-boot.log");
    let extra: Vec<String> = [
        "-var",
        "vm_id=9002",
        "-var",
        "template_name=kiln-badboot",
        "-var",
        "boot_command_suffix= nothing-to-see",
        "-var",
        "ssh_timeout=100s",
        "-http-diag-after",
        "40",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut c = start_build(&ns, &sb, &fx, PASSWORD, &extra, &log);
    let code = wait_exit(&mut c, Duration::from_secs(400), &log);
    let out = read(&log);
    println!("--- boot command never acted on (exit {code}) ---\n{out}");
    assert_eq!(code, 1);
    assert!(
        out.contains("has not fetched anything from kiln's HTTP server"),
        "no diagnosis:\n{out}"
    );
    assert!(
        out.contains("kiln port open") && out.contains("boot command was not applied"),
        "{out}"
    );
    assert!(out.contains("Timeout waiting for SSH"), "{out}");
    assert!(!sb.vm_ids(&ns).contains(&9002), "VM 9002 left behind");
    assert_eq!(
        ns.ruleset(),
        firewall,
        "firewall rules left behind by the failed boot"
    );
    assert!(
        !sb.isos(&ns).iter().any(|i| i.contains("kiln-")),
        "generated ISO left behind"
    );
    assert_no_secrets("bad boot command", &out, &fx);

    // ---- secrets scan over every artefact: build logs (plain and -machine-readable), the
    // sandboxes' events.jsonl and logs, the manifest — the private key file itself excepted
    let template = read(&workspace().join("examples/test-guest/test-guest.pkr.hcl"));
    let hash = template
        .split("variable \"password_hash\"")
        .nth(1)
        .and_then(|t| t.split("default = \"").nth(1))
        .and_then(|t| t.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        hash.starts_with("$6$"),
        "var.password_hash default not found"
    );
    let mut secrets = vec![
        Secret::new("sandbox password", PASSWORD),
        Secret::new("API token secret", TOKEN_SECRET),
        Secret::new("wrong password", "not-the-password"),
        Secret::new("var.password_hash (sensitive)", hash),
    ];
    secrets.extend(private_key_secrets("SSH private key", &fx.key));
    let report = scan(std::slice::from_ref(&fx.dir), &secrets, &["id_ed25519"]);
    println!("{report}");
    assert!(report.files >= 5, "too few artefacts scanned: {report}");
    assert!(report.hits.is_empty(), "{report}");

    println!(
        "\n=== e2e summary: full build {:.0} s, all scenarios {:.0} s ===\nstep timings of the full build:\n{}",
        build_time.as_secs_f64(),
        t_all.elapsed().as_secs_f64(),
        step_timings(&read(&fx.dir.join("build.log")))
    );
}
