//! End-to-end sandbox tests (KILN_E2E=1): disks via qemu-img, real QEMU guests in a network namespace,
//! the real Packer 1.6.6 build, and the 1 GiB streaming upload.
//!
//! Tests that need a network namespace re-execute this test binary inside `ip netns exec` (network
//! namespaces are per thread; the whole inner process must live in it): the outer test creates
//! `kiln-sb-<pid>-<tag>`, runs `<this binary> --exact <test> --nocapture` with `KILN_SB_INNER=1`, and
//! deletes the namespace on drop.

mod common;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn guest_iso() -> PathBuf {
    kiln_testguest::iso_path().unwrap_or_else(|e| panic!("{e}"))
}

fn require_tool(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} not found: install the Debian package '{package}' (cargo xtask test installs it)"
    );
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("kiln-sb-{}-{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip (iproute2)");
        assert!(st.success(), "ip netns add {name} failed (needs root)");
        let ns = Netns(name);
        let st = Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(st.success());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Run `test` of this binary inside a fresh network namespace; panics if it fails.
fn run_inner(test: &str, tag: &str, timeout: Duration) {
    let ns = Netns::create(tag);
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([
            "--exact",
            test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_SB_INNER", "1")
        .spawn()
        .expect("ip netns exec");
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            assert!(st.success(), "{test} failed inside netns {} ({st})", ns.0);
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn inner() -> bool {
    std::env::var("KILN_SB_INNER").ok().as_deref() == Some("1")
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn disks_template_clone_resize_destroy() {
    kiln_testguest::require_e2e();
    require_tool("qemu-img", "qemu-utils");
    let env = start().await;
    // Packer 1.6.6 style: allocate first, then reference the volume
    let r = env
        .call(
            "POST",
            "/nodes/pve/storage/local-lvm/content",
            &[
                ("filename", "vm-100-disk-0"),
                ("size", "1G"),
                ("vmid", "100"),
            ],
        )
        .await;
    assert_eq!(r.body["data"], "local-lvm:vm-100-disk-0", "{}", r.raw);
    let st = env
        .task(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                (
                    "scsi0",
                    "media=disk,size=1G,file=local-lvm:vm-100-disk-0,iothread=false,format=raw",
                ),
                ("virtio0", "local-lvm:0.5,discard=on"),
                ("ide3", "local-lvm:cloudinit"),
                ("bios", "ovmf"),
                ("machine", "q35"),
                ("net0", "virtio,bridge=vmbr0"),
                ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1"),
                ("boot", "order=scsi0;virtio0"),
            ],
        )
        .await;
    assert_eq!(st, "OK");
    let c = env.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(c["virtio0"], "local-lvm:vm-100-disk-1,discard=on,size=512M");
    assert_eq!(c["ide3"], "local-lvm:vm-100-cloudinit,media=cdrom");
    assert!(
        c["efidisk0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-100-disk-2,efitype=4m,pre-enrolled-keys=1,size="),
        "{}",
        c["efidisk0"]
    );
    let list = env
        .get("/nodes/pve/storage/local-lvm/content?vmid=100")
        .await;
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    // resize
    assert_eq!(
        env.task(
            "PUT",
            "/nodes/pve/qemu/100/resize",
            &[("disk", "virtio0"), ("size", "+512M")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        env.get("/nodes/pve/qemu/100/config").await["virtio0"],
        "local-lvm:vm-100-disk-1,discard=on,size=1G"
    );
    // a referenced volume cannot be deleted
    let r = env
        .call(
            "DELETE",
            "/nodes/pve/storage/local-lvm/content/local-lvm:vm-100-disk-1",
            &[],
        )
        .await;
    assert_eq!(r.status, 500);
    // template: base- names
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/template", &[]).await,
        "OK"
    );
    let c = env.get("/nodes/pve/qemu/100/config").await;
    assert!(
        c["scsi0"]
            .as_str()
            .unwrap()
            .contains("file=local-lvm:base-100-disk-0")
            || c["scsi0"]
                .as_str()
                .unwrap()
                .starts_with("local-lvm:base-100-disk-0"),
        "{}",
        c["scsi0"]
    );
    assert!(c["virtio0"]
        .as_str()
        .unwrap()
        .starts_with("local-lvm:base-100-disk-1"));
    // disks of a template cannot change
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("scsi1", "local-lvm:1")],
        )
        .await;
    assert_eq!(r.status, 500);
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/100/resize",
            &[("disk", "virtio0"), ("size", "+1G")],
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "you can't resize a template")
    );
    // full clone and linked clone
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/100/clone",
            &[("newid", "101"), ("full", "1"), ("name", "full")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/100/clone",
            &[("newid", "102"), ("name", "linked")]
        )
        .await,
        "OK"
    );
    let full = env.get("/nodes/pve/qemu/101/config").await;
    assert!(
        full["virtio0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-101-disk-"),
        "{}",
        full["virtio0"]
    );
    assert_eq!(full["ide3"], "local-lvm:vm-101-cloudinit,media=cdrom");
    assert_ne!(full["net0"], c["net0"]);
    let list = env
        .get("/nodes/pve/storage/local-lvm/content?vmid=101")
        .await;
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    // destroy everything; volumes go with the VMs
    for id in ["102", "101", "100"] {
        assert_eq!(
            env.task(
                "DELETE",
                &format!("/nodes/pve/qemu/{id}"),
                &[("purge", "1")]
            )
            .await,
            "OK"
        );
    }
    assert_eq!(
        env.get("/nodes/pve/storage/local-lvm/content").await,
        json!([])
    );
    env.sb.shutdown().await;
}

fn vmhwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// 1 GiB multipart upload through `curl` (a separate process), so this process's peak RSS is the
/// server's. Prints peak RSS and MB/s; asserts the peak stays far below the file size.
#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_1gib_keeps_memory_flat() {
    kiln_testguest::require_e2e();
    require_tool("curl", "curl");
    let env = start().await;
    let src = env.dir.path().join("big.iso");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).unwrap();
        let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        for _ in 0..1024 {
            f.write_all(&block).unwrap();
        }
    }
    let sha = {
        let out = Command::new("sha256sum")
            .arg(&src)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    let before = vmhwm_kib();
    let t0 = Instant::now();
    let url = env.url("/nodes/pve/storage/local/upload");
    let out = tokio::process::Command::new("curl")
        .args([
            "-sk",
            "--noproxy",
            "*",
            "-H",
            &format!("Authorization: {}", env.token_header()),
        ])
        .args([
            "-F",
            "content=iso",
            "-F",
            "checksum-algorithm=sha256",
            "-F",
            &format!("checksum={sha}"),
        ])
        .arg("-F")
        .arg(format!("filename=@{}", src.display()))
        .arg(&url)
        .output()
        .await
        .expect("curl");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&out.stdout)));
    let upid = body["data"].as_str().expect("UPID").to_string();
    assert_eq!(env.wait_task(&upid).await, "OK");
    let secs = t0.elapsed().as_secs_f64();
    let after = vmhwm_kib();
    let mbps = 1024.0 / secs;
    println!(
        "upload 1 GiB: {secs:.1} s, {mbps:.0} MiB/s; sandbox VmHWM before {} MiB, after {} MiB",
        before / 1024,
        after / 1024
    );
    let list = env.get("/nodes/pve/storage/local/content").await;
    assert_eq!(list[0]["size"], 1u64 << 30);
    assert!(
        after < before + 128 * 1024,
        "peak RSS grew by {} MiB during a 1 GiB upload",
        (after - before) / 1024
    );
    env.sb.shutdown().await;
}

const PASSWORD_HASH: &str =
    "$6$kilntestsalt$X/WzK8sWB0DR2TE60aKAjJDzTFdfy/AqS1FVyWmUG7NYygw.U/FpvbHimW49HC7u6oWwEzF96YrAsZHcPnCM50";

fn user_data(pubkey: &str) -> String {
    format!(
        r#"#cloud-config
autoinstall:
  version: 1
  identity:
    hostname: kiln-packer
    username: ubuntu
    password: '{PASSWORD_HASH}'
  ssh:
    install-server: true
    allow-pw: true
    authorized-keys:
      - {pubkey}
  storage:
    layout:
      name: direct
  user-data:
    users:
      - name: packer
        passwd: '{PASSWORD_HASH}'
        lock_passwd: false
        shell: /bin/bash
        sudo: ALL=(ALL) NOPASSWD:ALL
        ssh_authorized_keys:
          - {pubkey}
"#
    )
}

/// Real Packer 1.6.6 builds a template against the sandbox with the test guest.
#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn packer_1_6_6_builds_a_template() {
    kiln_testguest::require_e2e();
    if !inner() {
        for (t, p) in [
            ("packer", "packer"),
            ("ip", "iproute2"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("dnsmasq", "dnsmasq-base"),
            ("ssh-keygen", "openssh-client"),
            ("qemu-img", "qemu-utils"),
        ] {
            require_tool(t, p);
        }
        assert!(
            guest_iso().exists(),
            "test-guest ISO missing at {}: run `cargo xtask test-guest`",
            guest_iso().display()
        );
        run_inner(
            "packer_1_6_6_builds_a_template",
            "packer",
            Duration::from_secs(1800),
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(packer_inner());
}

async fn packer_inner() {
    let t0 = Instant::now();
    let env = start_with(|c| {
        c.network = true;
        c.accel = kiln_sandbox::qemu::Accel::Tcg;
    })
    .await;
    let dir = env.dir.path().to_path_buf();
    // ssh key + http directory
    let key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(dir.join("id_ed25519.pub"))
        .unwrap()
        .trim()
        .to_string();
    let http = dir.join("http");
    std::fs::create_dir_all(&http).unwrap();
    std::fs::write(http.join("user-data"), user_data(&pubkey)).unwrap();
    std::fs::write(http.join("meta-data"), "instance-id: kiln-packer-1\n").unwrap();
    let iso = guest_iso().canonicalize().unwrap();
    let sha = {
        let out = Command::new("sha256sum").arg(&iso).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    // the template (kept in the repo; paths/URL filled in)
    let tmpl_src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/packer/proxmox.json"),
    )
    .unwrap();
    let tmpl = tmpl_src
        .replace("@URL@", &env.sb.url)
        .replace("@PASSWORD@", PASSWORD)
        .replace("@ISO@", &format!("file://{}", iso.display()))
        .replace("@SHA256@", &sha)
        .replace("@HTTP@", &http.display().to_string())
        .replace("@KEY@", &key.display().to_string());
    let tmpl_path = dir.join("proxmox.json");
    std::fs::write(&tmpl_path, tmpl).unwrap();
    let out = tokio::process::Command::new("packer")
        .arg("build")
        .arg(&tmpl_path)
        .current_dir(&dir)
        .env("CHECKPOINT_DISABLE", "1")
        .env("PACKER_CACHE_DIR", dir.join("packer_cache"))
        .env("HOME", &dir)
        // Packer's own key pace (5 ms): the test guest must keep up like Ubuntu's GRUB on PVE
        .env_remove("PACKER_KEY_INTERVAL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("packer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let secs = t0.elapsed().as_secs_f64();
    println!("packer e2e: {secs:.0} s");
    if !stdout.contains("Build 'proxmox' finished") {
        // help debugging: serial console of the guest
        let serial = dir.join("state/run/9000/serial0.log");
        let s = std::fs::read_to_string(&serial).unwrap_or_default();
        println!(
            "---- serial (last 4000 bytes) ----\n{}",
            &s[s.len().saturating_sub(4000)..]
        );
        panic!("packer build did not finish (exit {:?})", out.status.code());
    }
    assert!(out.status.success());
    let c = env.get("/nodes/pve/qemu/9000/config").await;
    assert_eq!(c["template"], 1, "{c}");
    assert_eq!(c["name"], "kiln-packer-template");
    assert!(
        c["scsi0"].as_str().unwrap().contains("base-9000-disk-0"),
        "{}",
        c["scsi0"]
    );
    let ev = env.events();
    let keys: Vec<&serde_json::Value> = ev.iter().filter(|e| e["event"] == "key").collect();
    assert!(
        keys.len() >= 100 && keys.iter().all(|k| k["ok"] == true),
        "Packer typed {} keys (want ≥ 100, all accepted)",
        keys.len()
    );
    // no key lost: the installer logs the kernel command line GRUB booted, which must be the
    // whole boot command (GRUB turns `\;` into `;`)
    let serial =
        std::fs::read_to_string(dir.join("state/run/9000/serial0.log")).unwrap_or_default();
    let cmdline = serial
        .lines()
        .find_map(|l| {
            l.split_once("] cmdline: ")
                .map(|(_, c)| c.trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "packer: {} keys typed; the guest's kernel command line: {cmdline}",
        keys.len()
    );
    let want = "--- autoinstall net.ifnames=0 biosdevname=0 fsck.mode=skip cloud-config-url=/dev/null ds=nocloud-net;s=http://";
    let seed = cmdline
        .split_once(want)
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let addr_ok = seed.strip_suffix('/').is_some_and(|a| {
        a.split_once(':').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok() && port.parse::<u16>().is_ok()
        })
    });
    assert!(addr_ok, "keys lost: the guest booted with {cmdline:?}");
    println!("packer build: {secs:.0} s");

    // full clone of the template, boot it, and drive the real guest agent through the API
    let st = env
        .task(
            "POST",
            "/nodes/pve/qemu/9000/clone",
            &[("newid", "9001"), ("name", "from-template"), ("full", "1")],
        )
        .await;
    assert_eq!(st, "OK");
    let cc = env.get("/nodes/pve/qemu/9001/config").await;
    assert!(
        cc["scsi0"]
            .as_str()
            .unwrap()
            .contains("local-lvm:vm-9001-disk-0"),
        "{}",
        cc["scsi0"]
    );
    // the clone boots from its disk only
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/9001/config",
            &[("delete", "ide2"), ("boot", "order=scsi0")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/9001/status/start", &[])
            .await,
        "OK"
    );
    let t1 = Instant::now();
    loop {
        let r = env
            .call("POST", "/nodes/pve/qemu/9001/agent/ping", &[])
            .await;
        if r.status == 200 {
            assert_eq!(r.body, json!({"data": {"result": {}}}));
            break;
        }
        assert_eq!(r.reason, "QEMU guest agent is not running");
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "agent of the clone never answered"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    println!(
        "clone: agent answered after {:.0} s",
        t1.elapsed().as_secs_f64()
    );
    let nics = env
        .get("/nodes/pve/qemu/9001/agent/network-get-interfaces")
        .await;
    assert!(
        nics["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "lo"),
        "{nics}"
    );
    let os = env.get("/nodes/pve/qemu/9001/agent/get-osinfo").await;
    assert!(os["result"]["kernel-release"].is_string(), "{os}");
    let info = env.get("/nodes/pve/qemu/9001/agent/info").await;
    assert!(info["result"]["supported_commands"].is_array(), "{info}");
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu/9001/agent",
            &[("command", "get-host-name")],
        )
        .await;
    assert_eq!(
        r.body["data"]["result"]["host-name"], "kiln-packer",
        "{}",
        r.raw
    );
    // exec (command as repeated form key) + exec-status (decoded output, 0/1 booleans)
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu/9001/agent/exec",
            &[("command", "cat"), ("command", "/etc/kiln-provisioned")],
        )
        .await;
    let pid = r.body["data"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("exec: {}", r.raw));
    let mut status = json!(null);
    for _ in 0..50 {
        status = env
            .get(&format!("/nodes/pve/qemu/9001/agent/exec-status?pid={pid}"))
            .await;
        if status["exited"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status["exited"], 1, "{status}");
    assert_eq!(status["exitcode"], 0, "{status}");
    assert_eq!(status["out-data"], "provisioned-by-packer\n", "{status}");
    // file-write (plain text, PVE base64-encodes it) + file-read
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu/9001/agent/file-write",
            &[("file", "/tmp/kiln.txt"), ("content", "hello from the API")],
        )
        .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"data": null})),
        "{}",
        r.raw
    );
    let fr = env
        .get("/nodes/pve/qemu/9001/agent/file-read?file=/tmp/kiln.txt")
        .await;
    assert_eq!(fr["content"], "hello from the API");
    // shutdown through the agent
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/9001/status/shutdown",
            &[("timeout", "120")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        env.get("/nodes/pve/qemu/9001/status/current").await["status"],
        "stopped"
    );
    assert_eq!(
        env.task("DELETE", "/nodes/pve/qemu/9001", &[("purge", "1")])
            .await,
        "OK"
    );
    println!(
        "packer e2e + clone/agent checks: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    env.sb.shutdown().await;
}

/// A VM on real QEMU (no network): status from QMP, sendkey validation, agent errors, busy-VM lock
/// timeout, shutdown timeout / forceStop, refusals while running.
#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_vm_lifecycle_locks_and_errors() {
    kiln_testguest::require_e2e();
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let iso = guest_iso();
    assert!(
        iso.exists(),
        "test-guest ISO missing at {}: run `cargo xtask test-guest`",
        iso.display()
    );
    let env = start_with(|c| c.accel = kiln_sandbox::qemu::Accel::Tcg).await;
    let isodir = env.dir.path().join("state/storage/local/template/iso");
    std::os::unix::fs::symlink(iso.canonicalize().unwrap(), isodir.join("guest.iso")).unwrap();
    let st = env
        .task(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                ("name", "lifecycle"),
                ("memory", "512"),
                ("agent", "1"),
                ("ide2", "local:iso/guest.iso,media=cdrom"),
                ("serial0", "socket"),
            ],
        )
        .await;
    assert_eq!(st, "OK");
    assert!(env.get("/nodes/pve/qemu/100/config").await["ide2"]
        .as_str()
        .unwrap()
        .starts_with("local:iso/guest.iso,media=cdrom,size="));
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/status/start", &[])
            .await,
        "OK"
    );
    let s = env.get("/nodes/pve/qemu/100/status/current").await;
    assert_eq!(s["status"], "running", "{s}");
    assert!(s["pid"].is_number(), "{s}");
    assert!(s["uptime"].is_number());
    // shape of the recorded running-VM answer (keys we emulate)
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schema/samples/recorded__GET_nodes_NODE_qemu_VMID_status_current.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for k in [
        "status",
        "vmid",
        "name",
        "qmpstatus",
        "cpus",
        "maxmem",
        "maxdisk",
        "uptime",
        "pid",
        "ha",
        "agent",
        "running-machine",
        "running-qemu",
    ] {
        assert!(rec["data"].get(k).is_some(), "sample lacks {k}");
        assert!(s.get(k).is_some(), "status/current lacks {k}: {s}");
    }
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/status/start", &[])
            .await,
        "VM 100 already running"
    );
    // sendkey: PVE's key-name validation, and a valid key
    let r = env
        .call("PUT", "/nodes/pve/qemu/100/sendkey", &[("key", "enter")])
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "invalid parameter: enter")
    );
    let r = env
        .call("PUT", "/nodes/pve/qemu/100/sendkey", &[("key", "down")])
        .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"data": null})),
        "{}",
        r.raw
    );
    // no agent inside GRUB / the installer
    let r = env
        .call(
            "GET",
            "/nodes/pve/qemu/100/agent/network-get-interfaces",
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "QEMU guest agent is not running")
    );
    // refusals while running
    let r = env.call("POST", "/nodes/pve/qemu/100/template", &[]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "you can't convert a VM to template if VM is running")
    );
    let r = env.call("DELETE", "/nodes/pve/qemu/100", &[]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "VM 100 is running - destroy failed")
    );
    // a shutdown that GRUB ignores holds the config lock: a concurrent config change times out
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu/100/status/shutdown",
            &[("timeout", "4")],
        )
        .await;
    let upid = r.body["data"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = env
        .call("PUT", "/nodes/pve/qemu/100/config", &[("name", "busy")])
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            500,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        )
    );
    assert_eq!(
        env.wait_task(&upid).await,
        "VM quit/powerdown failed - got timeout"
    );
    assert_eq!(
        env.get("/nodes/pve/qemu/100/status/current").await["status"],
        "running"
    );
    // forceStop after the timeout
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/100/status/shutdown",
            &[("timeout", "2"), ("forceStop", "1")]
        )
        .await,
        "OK"
    );
    assert_eq!(
        env.get("/nodes/pve/qemu/100/status/current").await["status"],
        "stopped"
    );
    // stop of a stopped VM is fine (Packer's cleanup relies on it)
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/status/stop", &[])
            .await,
        "OK"
    );
    assert_eq!(env.task("DELETE", "/nodes/pve/qemu/100", &[]).await, "OK");
    let ev = env.events();
    assert!(ev
        .iter()
        .any(|e| e["event"] == "key" && e["key"] == "down" && e["ok"] == true));
    assert!(ev
        .iter()
        .any(|e| e["event"] == "key" && e["key"] == "enter" && e["ok"] == false));
    assert!(ev
        .iter()
        .any(|e| e["event"] == "vm" && e["action"] == "started"));
    env.sb.shutdown().await;
}
