//! The fuzz targets: how to generate an input and how to run one.

use crate::gen::{self, Rng};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const NAMES: &[&str] = &["config", "bootcmd", "sandbox", "http"];

/// Tokens spliced into HCL inputs.
const HCL_DICT: &[&str] = &[
    "${",
    "}",
    "%{",
    "%{ for x in local.l0 }",
    "%{ endfor }",
    "%{ if true }",
    "%{ endif }",
    "local.",
    "var.",
    "locals {\n",
    "}\n",
    "[",
    "]",
    "{",
    "(",
    ")",
    "\"",
    "\n",
    "...",
    "=>",
    "for",
    "if",
    "<<EOF\n",
    "\nEOF\n",
    "<<-EOT\n",
    "99999999999",
    "templatefile(\"self.tpl\", {})",
    "format(\"%99999999999d\", 1)",
    "indent(99999999999, \"a\\nb\")",
    "file(\"/dev/urandom\")",
    "timeadd(timestamp(), \"99999999999999999h\")",
    "dynamic \"x\" {\n",
    "content {\n",
    "sensitive = true\n",
    "source.",
    "build.",
    "-> ",
    "::",
    "#",
    "//",
    "/*",
    "*/",
];

/// The template-included file every config input can reach (and that includes itself).
const SELF_TPL: &str = "a${templatefile(\"self.tpl\", {})}";

pub enum Target {
    Config {
        dir: tempfile::TempDir,
        seeds: Vec<Vec<u8>>,
        funcs: Vec<&'static str>,
    },
    Bootcmd {
        seeds: Vec<Vec<String>>,
    },
    Sandbox {
        paths: Vec<String>,
    },
    Http {
        root: tempfile::TempDir,
        outside: tempfile::TempDir,
    },
}

fn corpus_dir() -> PathBuf {
    // the workspace root, from this crate's manifest dir (replay and worker run from anywhere)
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn hcl_seeds(extra: Option<&Path>) -> Vec<Vec<u8>> {
    let mut dirs = vec![corpus_dir().join("crates/kiln-config/tests/corpus")];
    dirs.extend(extra.map(Path::to_path_buf));
    let mut out = Vec::new();
    for d in dirs {
        let mut stack = vec![d];
        while let Some(p) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&p) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().ends_with(".hcl") {
                    if let Ok(b) = std::fs::read(&p) {
                        out.push(b);
                    }
                }
            }
        }
    }
    out.sort();
    out
}

fn bootcmd_seeds() -> Vec<Vec<String>> {
    let p = corpus_dir().join("crates/kiln-bootcmd/tests/corpus/boot_commands.json");
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(p) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            for e in v["entries"].as_array().into_iter().flatten() {
                let cmds: Vec<String> = e["boot_command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                out.push(cmds);
            }
        }
    }
    if out.is_empty() {
        out.push(vec!["<esc><wait>linux /casper/vmlinuz autoinstall ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/<enter>".into()]);
    }
    out
}

const BOOT_DICT: &[&str] = &[
    "<enter>",
    "<wait>",
    "<wait5>",
    "<wait99999999999h>",
    "<wait1e308s>",
    "<wait-1s>",
    "<wait9223372036854775807ns>",
    "<leftCtrlOn>",
    "<leftCtrlOff>",
    "<f1>",
    "<esc>",
    "<tab>",
    "<spacebar>",
    "{{ .HTTPIP }}",
    "{{ .HTTPPort }}",
    "{{ .Name }}",
    "{{",
    "}}",
    "{{ user `x` }}",
    "{{ isotime \"2006\" }}",
    "{{ .Unknown }}",
    "<",
    ">",
    "é",
    "🦀",
    "\u{0}",
    "\t",
    "\n",
    "On>",
];

/// A few real PVE paths, with placeholders filled randomly.
const API_PATHS: &[&str] = &[
    "/version",
    "/cluster/resources",
    "/nodes",
    "/nodes/{node}/qemu",
    "/nodes/{node}/qemu/{vmid}/config",
    "/nodes/{node}/qemu/{vmid}/status/current",
    "/nodes/{node}/qemu/{vmid}/status/start",
    "/nodes/{node}/qemu/{vmid}/status/stop",
    "/nodes/{node}/qemu/{vmid}/sendkey",
    "/nodes/{node}/qemu/{vmid}/template",
    "/nodes/{node}/qemu/{vmid}/clone",
    "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    "/nodes/{node}/qemu/{vmid}/resize",
    "/nodes/{node}/storage",
    "/nodes/{node}/storage/{storage}/content",
    "/nodes/{node}/storage/{storage}/content/{volume}",
    "/nodes/{node}/storage/{storage}/upload",
    "/nodes/{node}/storage/{storage}/download-url",
    "/nodes/{node}/tasks/{upid}/status",
    "/nodes/{node}/tasks/{upid}/log",
    "/access/ticket",
    "/cluster/nextid",
    "/pools",
];

const API_PARAMS: &[&str] = &[
    "vmid",
    "name",
    "memory",
    "cores",
    "sockets",
    "cpu",
    "ostype",
    "scsihw",
    "net0",
    "scsi0",
    "virtio0",
    "ide2",
    "sata0",
    "efidisk0",
    "boot",
    "bios",
    "machine",
    "agent",
    "serial0",
    "vga",
    "onboot",
    "template",
    "key",
    "url",
    "filename",
    "content",
    "checksum",
    "checksum-algorithm",
    "newid",
    "full",
    "target",
    "storage",
    "pool",
    "description",
    "tags",
    "digest",
    "delete",
    "skiplock",
    "disk",
    "size",
    "username",
    "password",
    "node",
    "cicustom",
    "ipconfig0",
    "sshkeys",
    "ciuser",
    "cipassword",
    "hostpci0",
    "usb0",
    "args",
    "start",
    "timeout",
    "limit",
];

const API_VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "100",
    "-1",
    "999999999",
    "99999999999999999999",
    "1e308",
    "abc",
    "pve",
    "local",
    "local-lvm",
    "virtio,bridge=vmbr0",
    "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0,firewall=1",
    "local-lvm:32",
    "local-lvm:32,format=raw,ssd=1",
    "local:iso/x.iso,media=cdrom",
    "order=scsi0;ide2",
    "file:///etc/passwd",
    "http://127.0.0.1/x.iso",
    "ftp://x/y",
    "host",
    "x86-64-v2-AES",
    "l26",
    "seabios",
    "ovmf",
    "q35",
    "pc-i440fx-9.0",
    "enabled=1,fstrim_cloned_disks=1",
    "socket",
    "std",
    "ret",
    "ctrl-alt-delete",
    "shift-a",
    "iso",
    "vztmpl,iso",
    "sha256",
    "deadbeef",
    "+10G",
    "10G",
    "0x10",
    "a=b,c=d",
    "%00",
    "%FF",
    "=",
    ",,,,",
    "a,b",
    "ip=dhcp",
    "ip=10.0.0.2/24,gw=10.0.0.1",
    "ssh-ed25519 AAAA x",
    "é🦀",
];

impl Target {
    pub fn new(name: &str, seeds: Option<&Path>) -> Option<Target> {
        match name {
            "config" => {
                let dir = tempfile::tempdir().ok()?;
                std::fs::write(dir.path().join("self.tpl"), SELF_TPL).ok()?;
                Some(Target::Config {
                    dir,
                    seeds: hcl_seeds(seeds),
                    funcs: kiln_config::functions::names(),
                })
            }
            "bootcmd" => Some(Target::Bootcmd {
                seeds: bootcmd_seeds(),
            }),
            "sandbox" => Some(Target::Sandbox {
                paths: API_PATHS.iter().map(|s| s.to_string()).collect(),
            }),
            "http" => {
                let root = tempfile::tempdir().ok()?;
                let outside = tempfile::tempdir().ok()?;
                let r = root.path();
                std::fs::create_dir_all(r.join("sub/deeper")).ok()?;
                std::fs::write(r.join("user-data"), "#cloud-config\n").ok()?;
                std::fs::write(r.join("sub/meta-data"), "").ok()?;
                std::fs::write(outside.path().join("secret"), "outside").ok()?;
                std::os::unix::fs::symlink(outside.path().join("secret"), r.join("link-out"))
                    .ok()?;
                std::os::unix::fs::symlink(outside.path(), r.join("sub/dir-out")).ok()?;
                std::os::unix::fs::symlink(r.join("user-data"), r.join("sub/link-in")).ok()?;
                std::os::unix::fs::symlink(outside.path().join("secret"), r.join("sub/index.html"))
                    .ok()?;
                Some(Target::Http { root, outside })
            }
            _ => None,
        }
    }

    pub fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        match self {
            Target::Config { seeds, funcs, .. } => match rng.below(4) {
                0 => gen::template(rng, funcs).into_bytes(),
                1 => {
                    // a corpus template with a hostile locals block appended
                    let mut t = if seeds.is_empty() {
                        Vec::new()
                    } else {
                        rng.pick(seeds).clone()
                    };
                    t.extend_from_slice(
                        format!("\nlocals {{\n  fz = {}\n}}\n", gen::expr(rng, funcs, 5))
                            .as_bytes(),
                    );
                    t
                }
                _ => {
                    let base = if seeds.is_empty() || rng.chance(4) {
                        gen::template(rng, funcs).into_bytes()
                    } else {
                        rng.pick(seeds).clone()
                    };
                    gen::mutate(rng, &base, HCL_DICT, seeds)
                }
            },
            Target::Bootcmd { seeds } => {
                let mut cmds = rng.pick(seeds).clone();
                for _ in 0..1 + rng.below(4) {
                    match rng.below(3) {
                        0 if !cmds.is_empty() => {
                            let i = rng.below(cmds.len());
                            let m = gen::mutate(rng, cmds[i].as_bytes(), BOOT_DICT, &[]);
                            cmds[i] = String::from_utf8_lossy(&m).into_owned();
                        }
                        1 => {
                            let s: String = (0..1 + rng.below(6))
                                .map(|_| *rng.pick(BOOT_DICT))
                                .collect();
                            let at = rng.below(cmds.len() + 1);
                            cmds.insert(at, s);
                        }
                        _ if !cmds.is_empty() => {
                            let i = rng.below(cmds.len());
                            let at = rng.below(cmds[i].len() + 1);
                            if cmds[i].is_char_boundary(at) {
                                cmds[i].insert_str(at, rng.pick::<&str>(BOOT_DICT));
                            }
                        }
                        _ => {}
                    }
                }
                serde_json::to_vec(&cmds).unwrap_or_default()
            }
            Target::Sandbox { paths } => {
                let method = *rng.pick(&["GET", "POST", "PUT", "DELETE"]);
                let mut path = rng.pick(paths).clone();
                for (ph, vals) in [
                    ("{node}", &["pve", "x", "", "..", "pve%00"][..]),
                    (
                        "{vmid}",
                        &["100", "0", "-1", "99999999999", "abc", "100.5"][..],
                    ),
                    ("{storage}", &["local", "local-lvm", "a b", "x"][..]),
                    (
                        "{volume}",
                        &["local:iso/x.iso", "iso/x.iso", "..", "%2F"][..],
                    ),
                    (
                        "{upid}",
                        &[
                            "UPID:pve:00000001:00000001:00000001:qmstart:100:root@pam:",
                            "x",
                        ][..],
                    ),
                ] {
                    path = path.replace(ph, rng.pick::<&str>(vals));
                }
                if rng.chance(6) {
                    let m = gen::mutate(rng, path.as_bytes(), &["/", "%", "..", "{", "}"], &[]);
                    path = String::from_utf8_lossy(&m).into_owned();
                }
                let mut body = String::new();
                for _ in 0..rng.below(8) {
                    if !body.is_empty() {
                        body.push(*rng.pick(&['&', ';']));
                    }
                    let k = rng.pick(API_PARAMS);
                    let v = if rng.chance(5) {
                        let base = rng.pick(API_VALUES).as_bytes().to_vec();
                        String::from_utf8_lossy(&gen::mutate(rng, &base, API_VALUES, &[]))
                            .into_owned()
                    } else {
                        rng.pick(API_VALUES).to_string()
                    };
                    body.push_str(&format!("{k}={}", urlencode(&v)));
                }
                format!("{method} {path}\n{body}").into_bytes()
            }
            Target::Http { .. } => {
                const SEGS: &[&str] = &[
                    "",
                    ".",
                    "..",
                    "sub",
                    "deeper",
                    "user-data",
                    "meta-data",
                    "link-out",
                    "link-in",
                    "dir-out",
                    "secret",
                    "index.html",
                    "%2e%2e",
                    "%2E%2e",
                    "%2f",
                    "%00",
                    "%5c",
                    "..%2f..",
                    "%c0%ae%c0%ae",
                    "%",
                    "%zz",
                    "a\\b",
                    "~",
                    "é",
                    "//",
                    "C:",
                    "sub/",
                    "?x=1",
                    "#f",
                ];
                let n = 1 + rng.below(6);
                let mut p = String::new();
                if !rng.chance(8) {
                    p.push('/');
                }
                for i in 0..n {
                    if i > 0 {
                        p.push('/');
                    }
                    p.push_str(rng.pick::<&str>(SEGS));
                }
                if rng.chance(5) {
                    let m = gen::mutate(rng, p.as_bytes(), SEGS, &[]);
                    p = String::from_utf8_lossy(&m).into_owned();
                }
                p.into_bytes()
            }
        }
    }

    pub fn run(&mut self, input: &[u8]) {
        match self {
            Target::Config { dir, .. } => {
                let d = dir.path();
                let _ = std::fs::write(d.join("t.pkr.hcl"), input);
                let opts = kiln_config::LoadOptions {
                    cwd: Some(d.to_path_buf()),
                    now: Some(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
                    ..kiln_config::LoadOptions::isolated()
                };
                if let Ok(l) = kiln_config::load(&d.join("t.pkr.hcl"), &opts) {
                    let _ = kiln_config::inspect::render(&l.plan);
                }
                if let Ok(text) = std::str::from_utf8(input) {
                    let _ = kiln_config::fmt::format_hcl(text);
                }
            }
            Target::Bootcmd { .. } => {
                let Ok(cmds) = serde_json::from_slice::<Vec<String>>(input) else {
                    return;
                };
                let data = kiln_bootcmd::gotmpl::Data::new()
                    .with("HTTPIP", "10.0.0.1")
                    .with("HTTPPort", 8888)
                    .with("Name", "vm");
                if let Ok(p) = kiln_bootcmd::plan(&cmds, &data, Duration::from_millis(100)) {
                    let _ = p.key_count();
                    let _ = p.min_duration();
                }
            }
            Target::Sandbox { .. } => {
                let text = String::from_utf8_lossy(input);
                let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
                let (method, path) = head.split_once(' ').unwrap_or((head, "/"));
                let schema = kiln_sandbox::schema::Schema::get();
                if let kiln_sandbox::schema::Route::Found(ep, path_params) =
                    schema.route(method, path)
                {
                    let mut params: indexmap::IndexMap<String, serde_json::Value> = path_params
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                    kiln_sandbox::api::decode_urlencoded(body, &mut params);
                    if kiln_sandbox::validate::validate(ep, &mut params).is_ok() {
                        for (k, v) in &params {
                            if let Some(s) = v.as_str() {
                                let _ = kiln_sandbox::validate::parse_config_property(k, s);
                            }
                        }
                    }
                }
            }
            Target::Http { root, outside } => {
                let path = String::from_utf8_lossy(input);
                let Some(p) = kiln_build::http::resolve_under(root.path(), &path) else {
                    return;
                };
                // the property: whatever is served is under the root, links followed
                let Ok(real_root) = root.path().canonicalize() else {
                    return;
                };
                let real = p.canonicalize().unwrap_or_else(|_| p.clone());
                assert!(
                    real.starts_with(&real_root),
                    "resolve_under({path:?}) = {} escapes the root {}",
                    real.display(),
                    real_root.display()
                );
                assert!(
                    !real.starts_with(outside.path()),
                    "resolve_under({path:?}) reaches outside"
                );
                // a directory is served by its index file: that must stay inside too
                if real.is_dir() {
                    if let Some(q) = kiln_build::http::resolve_under(
                        root.path(),
                        &format!("{}/index.html", path.trim_end_matches('/')),
                    ) {
                        let rq = q.canonicalize().unwrap_or(q);
                        assert!(
                            rq.starts_with(&real_root),
                            "resolve_under({path:?}/index.html) escapes the root"
                        );
                    }
                }
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
