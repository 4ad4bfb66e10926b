//! `kiln build` of a `proxmox-clone` source against the in-process sandbox, over the API only: the
//! clone's VM is never booted (its start is failed by the sandbox's fault injection), so no QEMU
//! guest runs. Shows the clone step's requests as PVE's schema accepts them (clone, then one config
//! update with the hardware and cloud-init settings), the build's step list, the refusals (a linked
//! clone of a VM that is not a template, a missing source), and that a failed build leaves no clone.
//! Gated like the end-to-end tests: the sandbox allocates and copies disks with qemu-img.

use kiln_pve::*;
use kiln_sandbox::{FaultRule, Faults, Sandbox, SandboxConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "root@pam!kiln";
const SECRET: &str = "0a1b2c3d-0000-4000-8000-00000000c10e";

const TEMPLATE: &str = r#"variable "url" { type = string }
variable "fingerprint" { type = string }
variable "token" {
  type      = string
  sensitive = true
}
variable "clone_vm_id" { type = number }
variable "full_clone" {
  type    = bool
  default = false
}
variable "key" { type = string }

source "proxmox-clone" "c" {
  proxmox_url         = var.url
  proxmox_fingerprint = var.fingerprint
  username            = "root@pam!kiln"
  token               = var.token
  node                = "pve"
  clone_vm_id         = var.clone_vm_id
  full_clone          = var.full_clone
  vm_id               = 9200
  vm_name             = "kiln-clone-build"
  memory              = 768
  cores               = 2
  network_adapters {
    bridge = "vmbr0"
    model  = "virtio"
  }
  ipconfig {
    ip      = "10.0.0.5/24"
    gateway = "10.0.0.1"
  }
  nameserver           = "10.0.0.1"
  searchdomain         = "example.org"
  ssh_username         = "packer"
  ssh_private_key_file = var.key
}

build {
  sources = ["source.proxmox-clone.c"]
}
"#;

struct Env {
    sb: Sandbox,
    state: PathBuf,
    tpl: PathBuf,
    key: PathBuf,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn env(faults: Faults) -> Env {
    let _ = crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cfg = SandboxConfig::new(&state);
    cfg.tokens = vec![(TOKEN.into(), SECRET.into())];
    cfg.auth_failure_delay = Duration::ZERO;
    cfg.faults = faults;
    let sb = Sandbox::start(cfg).await.unwrap();
    let tpl = dir.path().join("tpl");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(tpl.join("build.pkr.hcl"), TEMPLATE).unwrap();
    let key = dir.path().join("id_ed25519");
    kiln_guest::TempKeyPair::generate_ed25519("kiln-clone-test")
        .unwrap()
        .write_private_key(&key)
        .unwrap();
    let mut o = ConnectOptions::new(
        sb.url.clone(),
        Auth::Token {
            token_id: TOKEN.into(),
            secret: Secret::new(SECRET),
        },
    );
    o.tls = Tls::Pin {
        sha256_fingerprint: sb.fingerprint.clone(),
    };
    let client = Client::connect(o).await.unwrap();
    Env {
        sb,
        state,
        tpl,
        key,
        client,
        _dir: dir,
    }
}

fn wait() -> WaitOptions {
    WaitOptions {
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(60),
        log_lines_on_failure: 10,
    }
}

/// A source VM 9000 with a 1 GiB disk and a NIC (as a cloud image imported by hand looks),
/// converted to a template when `template`.
async fn source_vm(e: &Env, template: bool) {
    let mut p = Params::new();
    p.add("name", "ubuntu-cloud")
        .add("memory", 512)
        .add("scsihw", "virtio-scsi-pci")
        .add("scsi0", "local-lvm:1")
        .add("ide2", "local-lvm:cloudinit")
        .add("net0", "virtio,bridge=vmbr0");
    let t = e.client.qemu_create("pve", 9000, &p).await.unwrap();
    e.client.wait_opt(t, &wait()).await.unwrap();
    if template {
        let t = e.client.qemu_template("pve", 9000, None).await.unwrap();
        e.client.wait_opt(t, &wait()).await.unwrap();
    }
}

async fn kiln(e: &Env, vars: &[&str]) -> (i32, String) {
    let mut args: Vec<String> = vec!["build".into()];
    for (k, v) in [
        ("url", e.sb.url.clone()),
        ("fingerprint", e.sb.fingerprint.clone()),
        ("token", SECRET.to_string()),
        ("key", e.key.display().to_string()),
    ] {
        args.push("-var".into());
        args.push(format!("{k}={v}"));
    }
    for v in vars {
        args.push("-var".into());
        args.push(v.to_string());
    }
    args.push(e.tpl.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "the token secret leaked:\n{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// The sandbox's request log: (method, path, params) of every request.
fn requests(state: &Path) -> Vec<(String, String, Value)> {
    let text = std::fs::read_to_string(state.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["method"].as_str()?.to_string(),
                v["path"].as_str()?.to_string(),
                v["params"].clone(),
            ))
        })
        .collect()
}

fn vm_ids(state: &Path) -> Vec<String> {
    let dir = state.join("qemu-server");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread")]
async fn a_linked_clone_is_configured_and_a_failed_build_deletes_it() {
    kiln_testguest::require_e2e();
    // the clone's start fails (before any QEMU runs): the build must clean the clone up
    let faults = Faults {
        rules: vec![FaultRule {
            method: Some("POST".into()),
            path: Some("/nodes/{node}/qemu/{vmid}/status/start".into()),
            nth: Some(1),
            status: Some(500),
            message: Some("start failed: injected by the test".into()),
            ..FaultRule::default()
        }],
        ..Faults::default()
    };
    let e = env(faults).await;
    source_vm(&e, true).await;
    let (code, out) = kiln(&e, &["clone_vm_id=9000"]).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Cloning VM 9000 (ubuntu-cloud, a template) — linked clone"),
        "{out}"
    );
    assert!(out.contains("Cloned VM 9000 to 9200"), "{out}");
    assert!(out.contains("start failed: injected by the test"), "{out}");
    // the step list of a proxmox-clone build
    let timings: String = out
        .lines()
        .skip_while(|l| !l.contains("Step timings:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(timings.contains("clone_vm"), "{timings}");
    assert!(timings.contains("start_vm"), "{timings}");
    for absent in ["create_vm", "boot_command", "http_server"] {
        assert!(!timings.contains(absent), "{absent} ran:\n{timings}");
    }
    let reqs = requests(&e.state);
    let clone = reqs
        .iter()
        .find(|(m, p, _)| m == "POST" && p.ends_with("/qemu/9000/clone"))
        .unwrap_or_else(|| panic!("no clone request: {reqs:?}"));
    assert_eq!(clone.2["newid"], "9200", "{:?}", clone.2);
    assert_eq!(clone.2["full"], "0", "{:?}", clone.2);
    let conf = reqs
        .iter()
        .find(|(m, p, _)| m == "POST" && p.ends_with("/qemu/9200/config"))
        .unwrap_or_else(|| panic!("no config update of the clone: {reqs:?}"));
    for (k, v) in [
        ("memory", "768"),
        ("cores", "2"),
        ("net0", "virtio,bridge=vmbr0"),
        ("ciuser", "packer"),
        ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"),
        ("nameserver", "10.0.0.1"),
        ("searchdomain", "example.org"),
    ] {
        assert_eq!(conf.2[k], v, "{k} in {:?}", conf.2);
    }
    assert!(
        conf.2["sshkeys"]
            .as_str()
            .is_some_and(|k| k.starts_with("ssh-ed25519%20AAAA")),
        "{:?}",
        conf.2
    );
    // cleanup: the clone is gone, the source template is untouched
    assert!(
        reqs.iter()
            .any(|(m, p, _)| m == "DELETE" && p.ends_with("/qemu/9200")),
        "{reqs:?}"
    );
    assert_eq!(vm_ids(&e.state), vec!["9000.conf".to_string()]);
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread")]
async fn a_linked_clone_of_a_vm_that_is_not_a_template_is_refused_before_anything_is_created() {
    kiln_testguest::require_e2e();
    let e = env(Faults::default()).await;
    source_vm(&e, false).await;
    let (code, out) = kiln(&e, &["clone_vm_id=9000"]).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VM 9000 (ubuntu-cloud) is not a template")
            && out.contains("qm template 9000")
            && out.contains("full_clone = true"),
        "{out}"
    );
    assert!(
        !requests(&e.state)
            .iter()
            .any(|(m, p, _)| m == "POST" && p.ends_with("/clone")),
        "a clone was requested"
    );
    assert_eq!(vm_ids(&e.state), vec!["9000.conf".to_string()]);
    // a missing source: named, nothing created
    let (code, out) = kiln(&e, &["clone_vm_id=9999", "full_clone=true"]).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("clone_vm_id 9999: no VM with this id on the cluster"),
        "{out}"
    );
    assert_eq!(vm_ids(&e.state), vec!["9000.conf".to_string()]);
}
