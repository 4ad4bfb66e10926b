//! `kiln init` on a template whose ISO comes from a local HTTP server with a `file:` checksum URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use sha2::Digest as _;

struct Server {
    body: Vec<u8>,
    sums: String,
    log: Mutex<Vec<(String, Option<String>)>>,
    drop_next_full: AtomicBool,
}

async fn handler(
    State(s): State<Arc<Server>>,
    AxPath(name): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Ok(mut l) = s.log.lock() {
        l.push((name.clone(), range.clone()));
    }
    let r = Response::builder();
    let len = s.body.len();
    match name.as_str() {
        "SHA256SUMS" => r
            .status(200)
            .body(Body::from(s.sums.clone()))
            .unwrap_or_default(),
        "guest.iso" => {
            if let Some(start) = range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.strip_suffix('-'))
            {
                let start: usize = start.parse().unwrap_or(0);
                return r
                    .status(206)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{len}", len - 1),
                    )
                    .header(header::CONTENT_LENGTH, len - start)
                    .body(Body::from(s.body[start..].to_vec()))
                    .unwrap_or_default();
            }
            if s.drop_next_full.swap(false, Ordering::SeqCst) {
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                    Ok(bytes::Bytes::copy_from_slice(&s.body[..len / 3])),
                    Err(std::io::Error::other("simulated drop")),
                ];
                return r
                    .status(200)
                    .header(header::CONTENT_LENGTH, len)
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap_or_default();
            }
            r.status(200)
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from(s.body.clone()))
                .unwrap_or_default()
        }
        _ => r.status(404).body(Body::empty()).unwrap_or_default(),
    }
}

async fn start() -> (SocketAddr, Arc<Server>) {
    let body: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let sums = format!("{}  guest.iso\n", hex::encode(sha2::Sha256::digest(&body)));
    let s = Arc::new(Server {
        body,
        sums,
        log: Mutex::new(Vec::new()),
        drop_next_full: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(handler))
        .with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, s)
}

fn template(dir: &Path, addr: SocketAddr) {
    let hcl = format!(
        r#"packer {{
  required_plugins {{
    proxmox = {{
      source  = "github.com/hashicorp/proxmox"
      version = ">= 1.2.0"
    }}
  }}
}}
source "proxmox-iso" "guest" {{
  proxmox_url = "https://127.0.0.1:8006/api2/json"
  username    = "root@pam!kiln"
  token       = "secret"
  node        = "pve"
  boot_iso {{
    iso_url          = "http://{addr}/guest.iso"
    iso_checksum     = "file:http://{addr}/SHA256SUMS"
    iso_storage_pool = "local"
  }}
  ssh_username = "ubuntu"
  ssh_timeout  = "10m"
}}
build {{
  sources = ["source.proxmox-iso.guest"]
}}
"#
    );
    std::fs::write(dir.join("guest.pkr.hcl"), hcl).expect("write template");
}

async fn kiln_init(dir: &Path, cache: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("init")
        .arg(dir)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .current_dir(dir);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run kiln");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn cached_iso(cache: &Path) -> PathBuf {
    std::fs::read_dir(cache)
        .expect("cache dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("guest.iso"))
        .expect("cached ISO")
}

fn requests(s: &Server) -> Vec<(String, Option<String>)> {
    s.log.lock().map(|l| l.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_downloads_caches_detects_corruption_and_resumes() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    template(dir.path(), addr);
    let cache = dir.path().join("cache");

    // --offline: reports, fetches nothing
    let (code, out) = kiln_init(dir.path(), &cache, &["--offline"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would download"), "{out}");
    assert!(requests(&srv).is_empty());

    // first run: checksum file + ISO
    let (code, out) = kiln_init(dir.path(), &cache, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("downloaded 2000000 bytes, verified"), "{out}");
    assert!(
        out.contains("kiln stands in for github.com/hashicorp/proxmox 1.2.4"),
        "{out}"
    );
    assert_eq!(requests(&srv).len(), 2);
    assert_eq!(std::fs::read(cached_iso(&cache)).expect("read"), srv.body);

    // second run: nothing to do, no request
    let (code, out) = kiln_init(dir.path(), &cache, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cached, verified"), "{out}");
    assert_eq!(requests(&srv).len(), 2, "no request on the second run");

    // corrupted cache: detected, fetched again
    let iso = cached_iso(&cache);
    let mut data = std::fs::read(&iso).expect("read");
    data[12345] ^= 0x55;
    std::fs::write(&iso, data).expect("corrupt");
    let (code, out) = kiln_init(dir.path(), &cache, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("downloaded 2000000 bytes, verified"), "{out}");
    assert_eq!(std::fs::read(&iso).expect("read"), srv.body);
    assert_eq!(requests(&srv).len(), 3);

    // interrupted download (fresh cache): resumed with a Range request
    srv.drop_next_full.store(true, Ordering::SeqCst);
    let cache2 = dir.path().join("cache2");
    let (code, out) = kiln_init(dir.path(), &cache2, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed at"), "{out}");
    assert_eq!(std::fs::read(cached_iso(&cache2)).expect("read"), srv.body);
    assert!(
        requests(&srv).iter().any(|(_, r)| r.is_some()),
        "a Range request was made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_fails_with_a_clear_error_on_checksum_mismatch() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    template(dir.path(), addr);
    let hcl = std::fs::read_to_string(dir.path().join("guest.pkr.hcl")).expect("read");
    let wrong = "0".repeat(64);
    std::fs::write(
        dir.path().join("guest.pkr.hcl"),
        hcl.replace(
            &format!("file:http://{addr}/SHA256SUMS"),
            &format!("sha256:{wrong}"),
        ),
    )
    .expect("write");
    let (code, out) = kiln_init(dir.path(), &dir.path().join("cache"), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("checksum mismatch") && out.contains(&wrong),
        "{out}"
    );
    assert_eq!(requests(&srv).len(), 1);
}

#[cfg(unix)]
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Galaxy requirements are installed with `galaxy_command`, `ansible-playbook` is checked, and a missing SSH agent
/// (with `ssh_agent_auth = true`) is reported with a one-line fix. No ISO: the source uses `iso_file`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_installs_galaxy_requirements_and_checks_tools() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let log = d.join("galaxy.log");
    script(
        &d.join("fake-galaxy"),
        &format!("echo \"$@\" >> {}", log.display()),
    );
    script(
        &d.join("fake-playbook"),
        "echo 'ansible-playbook [core 2.14.18]'",
    );
    std::fs::write(d.join("requirements.yml"), "roles: []\n").expect("write");
    std::fs::write(d.join("site.yml"), "- hosts: all\n  tasks: []\n").expect("write");
    let hcl = format!(
        r#"source "proxmox-iso" "guest" {{
  proxmox_url = "https://127.0.0.1:8006/api2/json"
  username    = "root@pam!kiln"
  token       = "secret"
  node        = "pve"
  boot_iso {{
    iso_file = "local:iso/guest.iso"
  }}
  ssh_username   = "ubuntu"
  ssh_timeout    = "10m"
  ssh_agent_auth = true
}}
build {{
  sources = ["source.proxmox-iso.guest"]
  provisioner "ansible" {{
    playbook_file  = "{d}/site.yml"
    command        = "{d}/fake-playbook"
    galaxy_file    = "{d}/requirements.yml"
    galaxy_command = "{d}/fake-galaxy"
    roles_path     = "{d}/roles"
  }}
}}
"#,
        d = d.display()
    );
    std::fs::write(d.join("t.pkr.hcl"), hcl).expect("write template");
    let cache = d.join("cache");

    let (_, out) = kiln_init(d, &cache, &["--offline"]).await;
    assert!(
        out.contains("would run:") && out.contains("requirements.yml"),
        "{out}"
    );
    assert!(!log.exists(), "offline runs nothing");

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("init")
        .arg(d)
        .arg("--cache-dir")
        .arg(&cache)
        .current_dir(d)
        .env_remove("SSH_AUTH_SOCK");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run kiln");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("nothing to download"), "{text}");
    assert!(text.contains("ansible-playbook [core 2.14.18]"), "{text}");
    let args = std::fs::read_to_string(&log).expect("galaxy ran");
    assert!(
        args.contains("install -r") && args.contains("requirements.yml") && args.contains("-p"),
        "{args}"
    );
    assert!(
        text.contains("ssh agent: not running") && text.contains("ssh-agent"),
        "{text}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing agent fails init: {text}"
    );
}

/// `--upload` stages the fetched ISO on the sandbox's `local` storage once; a second run finds it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_upload_stages_the_iso_on_pve_storage_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = kiln_sandbox::SandboxConfig::new(dir.path().join("state"));
    cfg.tokens = vec![("root@pam!kiln".into(), "sandbox-secret".into())];
    cfg.auth_failure_delay = std::time::Duration::ZERO;
    let sb = kiln_sandbox::Sandbox::start(cfg).await.expect("sandbox");
    template(dir.path(), addr);
    let path = dir.path().join("guest.pkr.hcl");
    let hcl = std::fs::read_to_string(&path).expect("read");
    let hcl = hcl
        .replace("https://127.0.0.1:8006/api2/json", &sb.url)
        .replace(
            "token       = \"secret\"",
            "token       = \"sandbox-secret\"\n  insecure_skip_tls_verify = true",
        )
        .replace(
            "node        = \"pve\"",
            &format!("node        = \"{}\"", sb.node),
        );
    std::fs::write(&path, hcl).expect("write");
    let cache = dir.path().join("cache");

    let (code, out) = kiln_init(dir.path(), &cache, &["--upload"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("local:iso/guest.iso: uploaded 2000000 bytes"),
        "{out}"
    );
    let (code, out) = kiln_init(dir.path(), &cache, &["--upload"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("local:iso/guest.iso: already on"), "{out}");
    assert_eq!(requests(&srv).len(), 2, "the ISO was downloaded once");
    sb.shutdown().await;
}
