//! `kiln build --preflight` (and the preflight step of every build) against the in-process sandbox:
//! one test per problem class — node, storage, content type, bridge, ISO, vm_id, privilege —
//! showing the one-line message (key, file:line, what the server offers) and that nothing was
//! created or uploaded (the sandbox's request log has no write besides the login). No QEMU.

use kiln_sandbox::access::Privileges;
use kiln_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "root@pam!kiln";
const SECRET: &str = "0a1b2c3d-0000-4000-8000-00000000beef";
const LIMITED: &str = "builder@pve!ci";
const LIMITED_SECRET: &str = "0a1b2c3d-0000-4000-8000-00000000cafe";

const TEMPLATE: &str = r#"variable "url" { type = string }
variable "fingerprint" { type = string }
variable "username" { type = string }
variable "token" {
  type      = string
  sensitive = true
}
variable "node" {
  type    = string
  default = "pve"
}
variable "vm_id" {
  type    = number
  default = 9100
}
variable "iso_file" {
  type    = string
  default = "local:iso/present.iso"
}
variable "disk_pool" {
  type    = string
  default = "local-lvm"
}
variable "bridge" {
  type    = string
  default = "vmbr0"
}

source "proxmox-iso" "t" {
  proxmox_url         = var.url
  proxmox_fingerprint = var.fingerprint
  username            = var.username
  token               = var.token
  node                = var.node
  vm_id               = var.vm_id
  boot_iso {
    type     = "ide"
    iso_file = var.iso_file
    unmount  = true
  }
  disks {
    type         = "scsi"
    disk_size    = "4G"
    storage_pool = var.disk_pool
  }
  network_adapters {
    model  = "virtio"
    bridge = var.bridge
  }
  ssh_username = "packer"
  ssh_password = "packer"
}

build {
  sources = ["source.proxmox-iso.t"]
}
"#;

struct Env {
    sb: Sandbox,
    state: PathBuf,
    tpl: PathBuf,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cfg = SandboxConfig::new(&state);
    cfg.tokens = vec![
        (TOKEN.into(), SECRET.into()),
        (LIMITED.into(), LIMITED_SECRET.into()),
    ];
    cfg.auth_failure_delay = Duration::ZERO;
    let mut privs = Privileges::default();
    let (id, set) = Privileges::parse_entry(&format!(
        "{LIMITED}=VM.Audit,VM.Config.Disk,Datastore.Audit"
    ))
    .unwrap();
    privs.restrict(id, set);
    cfg.privileges = privs;
    let sb = Sandbox::start(cfg).await.unwrap();
    std::fs::write(
        state.join("storage/local/template/iso/present.iso"),
        b"an iso",
    )
    .unwrap();
    let tpl = dir.path().join("tpl");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::write(tpl.join("build.pkr.hcl"), TEMPLATE).unwrap();
    Env {
        sb,
        state,
        tpl,
        _dir: dir,
    }
}

/// Write requests (anything but GET, and the login) in the sandbox's request log.
fn writes(state: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(state.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "request" || v.get("method").is_some())
        .filter_map(|v| {
            let m = v["method"].as_str()?.to_string();
            let p = v["path"].as_str()?.to_string();
            (m != "GET" && !p.ends_with("/access/ticket")).then(|| format!("{m} {p}"))
        })
        .collect()
}

async fn kiln(e: &Env, preflight: bool, user: (&str, &str), vars: &[&str]) -> (i32, String) {
    let mut args: Vec<String> = vec!["build".into()];
    if preflight {
        args.push("--preflight".into());
    }
    for (k, v) in [
        ("url", e.sb.url.clone()),
        ("fingerprint", e.sb.fingerprint.clone()),
        ("username", user.0.to_string()),
        ("token", user.1.to_string()),
    ] {
        args.push("-var".into());
        args.push(format!("{k}={v}"));
    }
    for v in vars {
        // `-force` and other flags as they are, `name=value` as -var
        if !v.starts_with('-') {
            args.push("-var".into());
        }
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
    (out.status.code().unwrap_or(-1), text)
}

/// Run preflight with `vars`, expect exit 1 with `line` (and `:LINE:` of the key) in the output, and
/// no write request at the sandbox.
async fn expect_problem(vars: &[&str], key_line: &str, line: &str) -> String {
    let e = env().await;
    let (code, out) = kiln(&e, true, (TOKEN, SECRET), vars).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    let hit = out
        .lines()
        .find(|l| l.contains(line))
        .unwrap_or_else(|| panic!("no line with {line:?} in:\n{out}"));
    assert!(
        hit.contains(key_line),
        "the line does not name {key_line:?}: {hit}"
    );
    assert!(
        out.contains("preflight found 1 problem"),
        "exactly one problem expected:\n{out}"
    );
    assert!(!out.contains(SECRET), "the token secret leaked:\n{out}");
    assert_eq!(
        writes(&e.state),
        Vec::<String>::new(),
        "something was written"
    );
    hit.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_configuration_passes_and_creates_nothing() {
    let e = env().await;
    let (code, out) = kiln(&e, true, (TOKEN, SECRET), &[]).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Build 'proxmox-iso.t': preflight passed."),
        "{out}"
    );
    assert_eq!(writes(&e.state), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn node_not_found() {
    expect_problem(
        &["node=pve2"],
        "build.pkr.hcl:34: node:",
        "node 'pve2' not found; available: pve",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_not_found() {
    expect_problem(
        &["disk_pool=PVE1-SSD1"],
        "build.pkr.hcl:44: disks[0].storage_pool:",
        "storage 'PVE1-SSD1' not found on node pve; available: local, local-lvm",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storage_without_the_content_type() {
    expect_problem(
        &["disk_pool=local"],
        "build.pkr.hcl:44: disks[0].storage_pool:",
        "storage 'local' on node pve does not hold 'images' content (it holds: iso,vztmpl,snippets,import); storages with 'images': local-lvm",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bridge_not_found() {
    expect_problem(
        &["bridge=vmbr9"],
        "build.pkr.hcl:48: network_adapters[0].bridge:",
        "bridge 'vmbr9' not found on node pve; available: vmbr0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn iso_file_not_in_storage() {
    expect_problem(
        &["iso_file=local:iso/missing.iso"],
        "build.pkr.hcl:38: boot_iso.iso_file:",
        "ISO 'local:iso/missing.iso' not found in storage 'local' on node pve; available: local:iso/present.iso",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_id_taken_unless_force() {
    let e = env().await;
    // a VM 9100 made beforehand through the API
    let mut o = kiln_pve::ConnectOptions::new(
        e.sb.url.clone(),
        kiln_pve::Auth::Token {
            token_id: TOKEN.into(),
            secret: kiln_pve::Secret::new(SECRET),
        },
    );
    o.tls = kiln_pve::Tls::Pin {
        sha256_fingerprint: e.sb.fingerprint.clone(),
    };
    let c = kiln_pve::Client::connect(o).await.unwrap();
    let upid = c
        .qemu_create(&e.sb.node, 9100, &vec![("name".into(), "existing".into())])
        .await
        .unwrap()
        .expect("a task");
    c.wait_task(&upid, &kiln_pve::WaitOptions::default(), None)
        .await
        .unwrap();
    let before = writes(&e.state);
    let (code, out) = kiln(&e, true, (TOKEN, SECRET), &[]).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    let hit = out
        .lines()
        .find(|l| l.contains("VM 9100 already exists"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(hit.contains("build.pkr.hcl:35: vm_id:"), "{hit}");
    assert!(hit.contains("('existing') on node pve"), "{hit}");
    assert!(hit.contains("pass -force"), "{hit}");
    assert_eq!(writes(&e.state), before, "preflight wrote something");
    // -force replaces only a template: VM 9100 is not one
    let (code, out) = kiln(&e, true, (TOKEN, SECRET), &["-force"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("build.pkr.hcl:35: vm_id: VM 9100 ('existing') exists and is not a template: -force replaces only templates"),
        "{out}"
    );
    // once it is a template, -force may take the id (the build replaces it)
    let upid = c
        .qemu_template(&e.sb.node, 9100, None)
        .await
        .unwrap()
        .expect("a task");
    c.wait_task(&upid, &kiln_pve::WaitOptions::default(), None)
        .await
        .unwrap();
    let before = writes(&e.state);
    let (code, out) = kiln(&e, true, (TOKEN, SECRET), &["-force"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(writes(&e.state), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_privileges() {
    let e = env().await;
    let (code, out) = kiln(&e, true, (LIMITED, LIMITED_SECRET), &[]).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    let hit = out
        .lines()
        .find(|l| l.contains("/vms/9100"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(hit.contains("build.pkr.hcl:33: token:"), "{hit}");
    assert!(
        hit.contains("builder@pve!ci lacks VM.Allocate, VM.Config.CDROM, VM.Config.CPU"),
        "{hit}"
    );
    assert!(
        hit.contains("it holds there: Datastore.Audit, VM.Audit, VM.Config.Disk"),
        "{hit}"
    );
    let store = out
        .lines()
        .find(|l| l.contains("/storage/local-lvm"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(store.contains("lacks Datastore.AllocateSpace"), "{store}");
    assert_eq!(writes(&e.state), Vec::<String>::new());
}

/// Without --preflight the same checks stop the build before anything is uploaded or created.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_stops_at_preflight_before_creating_anything() {
    let e = env().await;
    let (code, out) = kiln(
        &e,
        false,
        (TOKEN, SECRET),
        &["bridge=vmbr9", "disk_pool=PVE1-SSD1"],
    )
    .await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("preflight found 2 problems"), "{out}");
    assert!(out.contains("bridge 'vmbr9' not found"), "{out}");
    assert!(out.contains("storage 'PVE1-SSD1' not found"), "{out}");
    assert_eq!(writes(&e.state), Vec::<String>::new());
}

/// The sandbox refuses what the limited token may not do, with PVE's message.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_refuses_vm_create_without_vm_allocate() {
    let e = env().await;
    let mut o = kiln_pve::ConnectOptions::new(
        e.sb.url.clone(),
        kiln_pve::Auth::Token {
            token_id: LIMITED.into(),
            secret: kiln_pve::Secret::new(LIMITED_SECRET),
        },
    );
    o.tls = kiln_pve::Tls::Pin {
        sha256_fingerprint: e.sb.fingerprint.clone(),
    };
    let c = kiln_pve::Client::connect(o).await.unwrap();
    let err = c
        .qemu_create(&e.sb.node, 9100, &vec![("name".into(), "x".into())])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Permission check failed (/vms/9100, VM.Allocate)"),
        "{err}"
    );
    let perms = c.permissions(None).await.unwrap();
    assert_eq!(
        perms["/"].keys().cloned().collect::<Vec<_>>(),
        vec!["Datastore.Audit", "VM.Audit", "VM.Config.Disk"]
    );
    assert!(c.qemu_list(&e.sb.node).await.unwrap().is_empty());
}
