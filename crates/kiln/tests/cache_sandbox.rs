//! `kiln build --cache-install` and `kiln cache ls|prune` against the in-process sandbox, over the
//! API only: no guest is ever booted (the build VM's start is failed by the sandbox's fault
//! injection), so these runs stop right after the install-cache steps decided hit, miss or
//! fallback. Shown: a hit clones the base (and the install steps are skipped in the step list); a
//! base deleted by hand, a base whose disk is missing, and a base PVE refuses to clone each give a
//! clear message and a full build (iso, create_vm) with nothing leaked; listing and pruning.
//! Gated like the end-to-end tests: the sandbox allocates and copies disks with qemu-img.

use kiln_pve::*;
use kiln_sandbox::{FaultRule, Faults, Sandbox, SandboxConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "root@pam!kiln";
const SECRET: &str = "0a1b2c3d-0000-4000-8000-00000000cac4";

const TEMPLATE: &str = r##"variable "url" { type = string }
variable "fingerprint" { type = string }
variable "token" {
  type      = string
  sensitive = true
}
variable "key" { type = string }

source "proxmox-iso" "c" {
  proxmox_url         = var.url
  proxmox_fingerprint = var.fingerprint
  username            = "root@pam!kiln"
  token               = var.token
  node                = "pve"
  vm_id               = 9300
  vm_name             = "kiln-cache-build"
  memory              = 768
  boot                = "order=scsi0;ide2"
  boot_iso {
    iso_url          = "os.iso"
    iso_checksum     = "none"
    iso_storage_pool = "local"
    unmount          = true
  }
  disks {
    type         = "scsi"
    disk_size    = "1G"
    storage_pool = "local-lvm"
  }
  network_adapters {
    bridge = "vmbr0"
    model  = "virtio"
  }
  http_content = { "/user-data" = "#cloud-config\n" }
  boot_wait    = "1s"
  boot_command = ["<enter>"]
  ssh_username         = "packer"
  ssh_private_key_file = var.key
}

build {
  sources = ["source.proxmox-iso.c"]
  provisioner "shell" { inline = ["true"] }
}
"##;

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
    std::fs::write(tpl.join("os.iso"), vec![0u8; 64 * 1024]).unwrap();
    let key = dir.path().join("id_ed25519");
    kiln_guest::TempKeyPair::generate_ed25519("kiln-cache-test")
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

fn start_fails() -> FaultRule {
    FaultRule {
        method: Some("POST".into()),
        path: Some("/nodes/{node}/qemu/{vmid}/status/start".into()),
        status: Some(500),
        message: Some("start failed: injected by the test".into()),
        ..FaultRule::default()
    }
}

fn kiln_env(e: &Env) -> Vec<(String, String)> {
    vec![
        ("PROXMOX_URL".into(), e.sb.url.clone()),
        ("PROXMOX_USERNAME".into(), TOKEN.into()),
        ("PROXMOX_TOKEN".into(), SECRET.into()),
        ("PROXMOX_FINGERPRINT".into(), e.sb.fingerprint.clone()),
    ]
}

/// Run `kiln ARGS` (for build and inspect: with the template's variables and directory last).
async fn kiln(e: &Env, args: &[&str], with_template: bool) -> (i32, String) {
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if with_template {
        for (k, v) in [
            ("url", e.sb.url.clone()),
            ("fingerprint", e.sb.fingerprint.clone()),
            ("token", SECRET.to_string()),
            ("key", e.key.display().to_string()),
        ] {
            a.push("-var".into());
            a.push(format!("{k}={v}"));
        }
        a.push(e.tpl.display().to_string());
    }
    let envs = kiln_env(e);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&a)
            .envs(envs)
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

/// The key `kiln inspect` prints for the build.
async fn inspect_key(e: &Env) -> String {
    let (code, out) = kiln(e, &["inspect"], true).await;
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("proxmox-iso.c: key sha256:"))
        .unwrap_or_else(|| panic!("no key in inspect:\n{out}"));
    let hex = line
        .split("key sha256:")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(hex.len(), 64, "{line}");
    assert!(
        line.contains(&format!("base template kiln-cache-{}", &hex[..12])),
        "{line}"
    );
    hex
}

/// A base template as `--cache-install` leaves one: a disk, the name, tag and description.
async fn make_base(e: &Env, vmid: u32, key: &str, created: u64, template: bool) {
    let desc = format!(
        "{}\nkey: sha256:{key}\nbuild: proxmox-iso.c\ntemplate: {}\ncreated: {created}\ninputs:\n  kiln: test\n",
        kiln_build::cache::DESCRIPTION_HEAD,
        e.tpl.display()
    );
    let mut p = Params::new();
    p.add("name", format!("kiln-cache-{}", &key[..12]))
        .add("memory", 768)
        .add("scsihw", "virtio-scsi-pci")
        .add("scsi0", "local-lvm:1")
        .add("ide2", "none,media=cdrom")
        .add("net0", "virtio,bridge=vmbr0")
        .add("tags", "kiln-cache")
        .add("description", desc);
    let t = e.client.qemu_create("pve", vmid, &p).await.unwrap();
    e.client.wait_opt(t, &wait()).await.unwrap();
    if template {
        let t = e.client.qemu_template("pve", vmid, None).await.unwrap();
        e.client.wait_opt(t, &wait()).await.unwrap();
    }
}

fn timings(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.contains("Step timings:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A full build happened (the install steps ran) and failed at the injected start.
fn assert_full_build(out: &str) {
    let t = timings(out);
    for step in [
        "cache_lookup",
        "cache_clone",
        "iso",
        "create_vm",
        "start_vm",
    ] {
        assert!(t.contains(step), "{step} missing:\n{t}");
    }
    assert!(!t.contains("skipped"), "{t}");
    assert!(out.contains("Creating VM"), "{out}");
    assert!(out.contains("start failed: injected by the test"), "{out}");
}

/// The first file named `name` under `dir` (the sandbox's storage layout is its own business).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name() == name {
            return Some(p);
        }
    }
    None
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
async fn a_hit_clones_the_base_and_skips_the_install_steps() {
    kiln_testguest::require_e2e();
    let e = env(Faults {
        rules: vec![start_fails()],
        ..Faults::default()
    })
    .await;
    let key = inspect_key(&e).await;
    make_base(&e, 500, &key, now(), true).await;
    let (code, out) = kiln(&e, &["build", "-cache-install"], true).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("Install cache key sha256:{key}")),
        "{out}"
    );
    assert!(
        out.contains("Install cache hit: base template 500"),
        "{out}"
    );
    assert!(
        out.contains("Cloned base template 500 to VM 9300 (kiln-cache-build) — linked clone"),
        "{out}"
    );
    let t = timings(&out);
    for s in [
        "iso (skipped: cached install)",
        "http_server (skipped: cached install)",
        "create_vm (skipped: cached install)",
        "cache_clone",
    ] {
        assert!(t.contains(s), "{s}:\n{t}");
    }
    let reqs = requests(&e.state);
    let conf = reqs
        .iter()
        .find(|(m, p, _)| m == "POST" && p.ends_with("/qemu/9300/config"))
        .unwrap_or_else(|| panic!("no config update of the clone: {reqs:?}"));
    assert_eq!(conf.2["memory"], "768", "{:?}", conf.2);
    assert_eq!(conf.2["boot"], "order=scsi0", "{:?}", conf.2);
    let del = conf.2["delete"].as_str().unwrap_or_default();
    assert!(del.contains("ide2") && del.contains("tags"), "{:?}", conf.2);
    assert!(conf.2.get("scsi0").is_none(), "{:?}", conf.2);
    // no upload, no create: the clone replaced them; the clone is removed, the base stays
    assert!(
        !reqs
            .iter()
            .any(|(m, p, _)| m == "POST" && p.ends_with("/upload")),
        "an ISO was uploaded"
    );
    assert!(
        reqs.iter()
            .any(|(m, p, _)| m == "DELETE" && p.ends_with("/qemu/9300")),
        "{reqs:?}"
    );
    assert_eq!(vm_ids(&e.state), vec!["500.conf".to_string()]);
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread")]
async fn a_base_deleted_by_hand_or_without_its_disk_means_a_full_build() {
    kiln_testguest::require_e2e();
    let e = env(Faults {
        rules: vec![start_fails()],
        ..Faults::default()
    })
    .await;
    let key = inspect_key(&e).await;
    // deleted by hand: a miss, said so; a full build; nothing left
    make_base(&e, 500, &key, now(), true).await;
    let t = e
        .client
        .qemu_delete("pve", 500, &DeleteVmOptions::default())
        .await
        .unwrap();
    e.client.wait_opt(t, &wait()).await.unwrap();
    let (code, out) = kiln(&e, &["build", "-cache-install"], true).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Install cache miss: full build; the installed system is kept as base template kiln-cache-"),
        "{out}"
    );
    assert_full_build(&out);
    assert_eq!(vm_ids(&e.state), Vec::<String>::new());
    // its disk missing: the base is removed with a one-line reason, then a full build
    make_base(&e, 501, &key, now(), true).await;
    let disk = find_file(&e.state, "base-501-disk-0.qcow2")
        .unwrap_or_else(|| panic!("no base-501-disk-0.qcow2 under {}", e.state.display()));
    std::fs::remove_file(&disk).unwrap();
    let (code, out) = kiln(&e, &["build", "-cache-install"], true).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Install cache: base template 501 is broken (its disk local-lvm:base-501-disk-0 is missing on storage); removing it and doing a full build"),
        "{out}"
    );
    assert!(out.contains("Install cache miss"), "{out}");
    assert_full_build(&out);
    assert_eq!(vm_ids(&e.state), Vec::<String>::new());
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread")]
async fn a_base_pve_refuses_to_clone_is_left_with_a_warning_and_the_build_is_full() {
    kiln_testguest::require_e2e();
    let e = env(Faults {
        rules: vec![
            FaultRule {
                method: Some("POST".into()),
                path: Some("/nodes/{node}/qemu/{vmid}/clone".into()),
                status: Some(500),
                message: Some("clone refused: injected by the test".into()),
                ..FaultRule::default()
            },
            start_fails(),
        ],
        ..Faults::default()
    })
    .await;
    let key = inspect_key(&e).await;
    make_base(&e, 500, &key, now(), true).await;
    let (code, out) = kiln(&e, &["build", "-cache-install"], true).await;
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Install cache hit: base template 500"),
        "{out}"
    );
    assert!(
        out.contains("Install cache: base template 500 could not be used (full clone refused:")
            && out.contains("clone refused: injected by the test")
            && out.contains("it is left in place")
            && out.contains("doing a full build"),
        "{out}"
    );
    assert_full_build(&out);
    assert_eq!(vm_ids(&e.state), vec!["500.conf".to_string()]);
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test(flavor = "multi_thread")]
async fn cache_ls_and_prune() {
    kiln_testguest::require_e2e();
    let e = env(Faults::default()).await;
    let (code, out) = kiln(&e, &["cache", "ls"], false).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No install-cache base templates"), "{out}");
    let key = "ab".repeat(32);
    let t = now();
    make_base(&e, 501, &key, t - 10 * 86_400, true).await;
    make_base(&e, 502, &key, t - 7200, true).await;
    make_base(&e, 503, &key, t, true).await;
    make_base(&e, 504, &key, t, false).await; // an interrupted layer
    let (code, out) = kiln(&e, &["cache", "ls"], false).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    let header = out.lines().next().unwrap_or_default();
    for col in [
        "KEY",
        "VMID",
        "NAME",
        "NODE",
        "CREATED",
        "DISK",
        "BUILD",
        "TEMPLATE DIR",
    ] {
        assert!(header.contains(col), "{header}");
    }
    for id in ["501", "502", "503", "504"] {
        assert!(
            out.lines().any(|l| l.contains(" kiln-cache-abababababab")
                && l.split_whitespace().nth(1) == Some(id)),
            "{id}:\n{out}"
        );
    }
    assert!(
        out.contains("kiln-cache-abababababab (incomplete)"),
        "{out}"
    );
    assert!(out.contains("sha256:abababababababab"), "{out}");
    assert!(out.contains("1G"), "{out}");
    assert!(out.contains("proxmox-iso.c"), "{out}");
    // --dry-run removes nothing
    let (code, out) = kiln(&e, &["cache", "prune", "--keep", "2", "--dry-run"], false).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Would remove 2"), "{out}");
    assert_eq!(vm_ids(&e.state).len(), 4);
    // keep the newest 2 of the build: the oldest and the incomplete one go
    let (code, out) = kiln(&e, &["cache", "prune", "--keep", "2"], false).await;
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert_eq!(vm_ids(&e.state), vec!["502.conf", "503.conf"]);
    let (code, out) = kiln(&e, &["cache", "prune", "--older-than", "1h"], false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(vm_ids(&e.state), vec!["503.conf"]);
    let (code, out) = kiln(&e, &["cache", "prune", "--older-than", "1y"], false).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown unit"), "{out}");
    let (code, out) = kiln(&e, &["cache", "prune"], false).await;
    assert_eq!(code, 2, "a rule is required:\n{out}");
    let (code, out) = kiln(&e, &["cache", "prune", "--all"], false).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(vm_ids(&e.state), Vec::<String>::new());
}
