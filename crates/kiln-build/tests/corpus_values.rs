//! Every value the corpus (crates/kiln-config/tests/corpus/: literals, and the defaults of
//! variables named after the key) writes for a key kiln-config parses into a type, plus edge
//! cases, goes through both paths — `kiln validate` (the loader, which parses it once into the
//! plan) and the build-time consumer of the plan's value (`create_vm`'s parameters, the boot
//! command's waits) — and they must agree:
//!
//! - `disk_size` ([`kiln_config::model::size::ByteSize`]): the same verdict from validate and from
//!   the `<pool>:<GiB>` allocation;
//! - disk `type`, `boot_iso` `type`, `cloud_init_disk_type` ([`kiln_config::model::Bus`],
//!   [`kiln_config::model::CdromBus`]): the drive slot the build picks is on the bus written;
//! - `network_adapters` `model`, disk `format`, `cache_mode`, `asyncio`: accepted exactly when
//!   PVE 9.1's schema lists the value, and then sent to PVE as written;
//! - Go durations: a duration key (`pause_before_connecting`) and a boot command `<waitD>` read
//!   the same value.

use kiln_config::model::ProxmoxIsoConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-config/tests/corpus")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.to_string_lossy().ends_with(".hcl") {
            out.push(p);
        }
    }
}

/// The text of every `.hcl` file of the corpus.
fn corpus_texts() -> Vec<String> {
    let mut files = Vec::new();
    walk(&corpus(), &mut files);
    assert!(files.len() > 20, "corpus not found at {:?}", corpus());
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// The literal values of `key = "…"` lines (`key` whole: `model` is not `cpu_model`), and the
/// `default = "…"` of variables whose name `var` accepts; interpolations are left out.
fn corpus_values(key: &str, var: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for text in corpus_texts() {
        let mut in_var = false;
        for line in text.lines() {
            let l = line.trim();
            if let Some(name) = l.strip_prefix("variable ") {
                in_var = var(name);
            }
            let is_key = l
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='));
            let is_default = in_var && l.starts_with("default");
            if !(is_key || is_default) {
                continue;
            }
            let Some((_, rhs)) = l.split_once('=') else {
                continue;
            };
            if let Some(v) = rhs
                .trim()
                .strip_prefix('"')
                .and_then(|r| r.split('"').next())
            {
                if !v.contains("${") {
                    out.push(v.to_string());
                }
            }
        }
    }
    out
}

fn with_extras(mut values: Vec<String>, extras: &[&str]) -> (Vec<String>, usize) {
    let from_corpus = values.len();
    values.extend(extras.iter().map(|s| s.to_string()));
    values.sort();
    values.dedup();
    (values, from_corpus)
}

/// What `kiln validate` makes of a source with `body` added: the plan's config and the
/// warnings, or the errors as `(line, message)`.
type Verdict = Result<(ProxmoxIsoConfig, Vec<String>), Vec<(usize, String)>>;

/// Line of the first line of `body` in the generated template.
const BODY_LINE: usize = 7;

fn validate(body: &str) -> Verdict {
    let d = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"source "proxmox-iso" "t" {{
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
{body}
}}
build {{ sources = ["source.proxmox-iso.t"] }}
"#
    );
    std::fs::write(d.path().join("t.pkr.hcl"), text).expect("write template");
    let opts = kiln_config::LoadOptions {
        cwd: Some(d.path().to_path_buf()),
        ..kiln_config::LoadOptions::isolated()
    };
    match kiln_config::load(d.path(), &opts) {
        Ok(l) => Ok((
            l.plan.runs[0].config.clone(),
            l.warnings.iter().map(|w| w.message.clone()).collect(),
        )),
        Err(e) => Err(e
            .errors
            .iter()
            .map(|d| (d.location.as_ref().map_or(0, |l| l.line), d.message.clone()))
            .collect()),
    }
}

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The build's `create_vm` parameters for a validated config (no ISOs).
fn create_params(cfg: &ProxmoxIsoConfig) -> Vec<(String, String)> {
    kiln_build::params::create_params(cfg, 100, "t", &[]).unwrap_or_else(|e| panic!("{e}"))
}

fn param<'a>(p: &'a [(String, String)], k: &str) -> &'a str {
    p.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {k} in {p:?}"))
}

/// PVE 9.1's `POST /nodes/{node}/qemu` schema (/work/shared/pve-api/apidoc.json; the same in
/// 8.4): the `enum` of `net[n]` `model` and of the drives' `format`, `cache` and `aio`.
const PVE_NET_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];
const PVE_FORMATS: &[&str] = &["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"];
const PVE_CACHE: &[&str] = &["none", "writethrough", "writeback", "unsafe", "directsync"];
const PVE_AIO: &[&str] = &["native", "threads", "io_uring"];
/// The drive buses (`ide[n]`, `sata[n]`, `scsi[n]`, `virtio[n]`); CD-ROMs not on virtio (the
/// plugin's rule).
const PVE_BUSES: &[&str] = &["ide", "sata", "scsi", "virtio"];
const CDROM_BUSES: &[&str] = &["ide", "sata", "scsi"];

const ISO: &str = "  boot_iso { iso_file = \"local:iso/a.iso\" }";

#[test]
fn every_corpus_disk_size_has_one_verdict() {
    let (values, from_corpus) = with_extras(
        corpus_values("disk_size", |n| n.contains("disk") && n.contains("size")),
        &[
            "20",
            "20GB",
            "0G",
            "1K",
            "1536M",
            "1T",
            "20g",
            " 20G",
            "",
            "99999999T",
        ],
    );
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    let (mut ok, mut bad) = (0, 0);
    for v in &values {
        let body = format!(
            "{ISO}\n  disks {{\n    storage_pool = \"local-lvm\"\n    disk_size    = {}\n  }}",
            quoted(v)
        );
        // the plan's value (an empty value is unset: the plugin's default)
        let validate = validate(&body)
            .map(|(c, _)| c.disks[0].disk_size.clone())
            .map_err(|e| {
                assert!(
                    e.iter().all(|(_, m)| m.contains("disk_size")),
                    "{v:?}: unrelated errors {e:?}"
                );
                e.len()
            });
        // the build reads the plan's value
        let planned = validate.clone().unwrap_or_else(|_| v.clone());
        let build = kiln_build::params::disk_size_gib(&planned);
        match (&validate, &build) {
            (Ok(_), Ok(_)) => ok += 1,
            (Err(_), Err(_)) => bad += 1,
            _ => panic!("{v:?}: validate {validate:?}, build {build:?}"),
        }
    }
    println!(
        "disk_size: {} values ({from_corpus} from the corpus): {ok} accepted, {bad} rejected by both",
        values.len()
    );
    assert!(ok > 3 && bad > 3);
}

/// A value of a closed set: accepted by validate exactly when PVE lists it (`allowed`), then
/// sent as written (`sent` reads it back from the build's parameters); refused at its line
/// with a message naming it.
fn closed_set(
    what: &str,
    values: &[String],
    allowed: &[&str],
    default: Option<&str>,
    body: impl Fn(&str) -> String,
    sent: impl Fn(&ProxmoxIsoConfig) -> Option<String>,
) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    for v in values {
        let line = BODY_LINE
            + body(v)
                .lines()
                .position(|l| l.contains(&quoted(v)))
                .unwrap_or(0);
        match validate(&body(v)) {
            Ok((cfg, _)) => {
                let want = if v.is_empty() {
                    default
                } else {
                    Some(v.as_str())
                };
                assert!(
                    v.is_empty() || allowed.contains(&v.as_str()),
                    "{what} {v:?}: validate accepts what PVE refuses"
                );
                assert_eq!(
                    sent(&cfg).as_deref(),
                    want,
                    "{what} {v:?}: the build sends another value"
                );
                ok += 1;
            }
            Err(errs) => {
                assert!(
                    !allowed.contains(&v.as_str()),
                    "{what} {v:?}: validate refuses what PVE accepts: {errs:?}"
                );
                assert!(
                    errs.iter()
                        .any(|(l, m)| *l == line && m.contains(v.as_str())),
                    "{what} {v:?}: no error naming it at line {line}: {errs:?}"
                );
                bad += 1;
            }
        }
    }
    println!(
        "{what}: {} values: {ok} accepted, {bad} refused",
        values.len()
    );
    (ok, bad)
}

/// `key=value` of a PVE property string (`virtio=AA:…,bridge=vmbr0` → model `virtio`).
fn prop(value: &str, key: &str) -> Option<String> {
    value.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

#[test]
fn every_corpus_nic_model_is_one_pve_accepts() {
    let (values, from_corpus) = with_extras(
        corpus_values("model", |n| n.contains("model")),
        &[
            "",
            "e1000e",
            "E1000",
            "virtio-net",
            "vmxnet3",
            "e1000-82540em",
            "rtl8139 ",
        ],
    );
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    let (ok, bad) = closed_set(
        "network_adapters.model",
        &values,
        PVE_NET_MODELS,
        Some("e1000"),
        |v| {
            format!(
                "{ISO}\n  network_adapters {{\n    bridge = \"vmbr0\"\n    model  = {}\n  }}",
                quoted(v)
            )
        },
        |cfg| {
            let p = create_params(cfg);
            let net0 = param(&p, "net0");
            // `<model>` or `<model>=<mac>`, then the options
            net0.split([',', '=']).next().map(str::to_string)
        },
    );
    assert!(ok >= 4 && bad >= 3);
}

#[test]
fn every_corpus_disk_format_cache_and_aio_is_one_pve_accepts() {
    let disk = |key: &'static str| {
        move |v: &str| {
            format!(
                "{ISO}\n  disks {{\n    storage_pool = \"local-lvm\"\n    {key} = {}\n  }}",
                quoted(v)
            )
        }
    };
    let scsi0 = |pkey: &'static str| {
        move |cfg: &ProxmoxIsoConfig| prop(param(&create_params(cfg), "scsi0"), pkey)
    };
    let (formats, n) = with_extras(
        corpus_values("format", |n| n.contains("format")),
        &["", "cow", "qcow", "vmdk", "RAW", "qcow3"],
    );
    assert!(n >= 15, "only {n} corpus formats");
    let (ok, bad) = closed_set(
        "disks.format",
        &formats,
        PVE_FORMATS,
        Some("raw"),
        disk("format"),
        scsi0("format"),
    );
    assert!(ok >= 3 && bad >= 3);
    let (caches, n) = with_extras(
        corpus_values("cache_mode", |n| n.contains("cache")),
        &[
            "",
            "writeback",
            "unsafe",
            "directsync",
            "None",
            "write-back",
        ],
    );
    assert!(n >= 5, "only {n} corpus cache modes");
    let (ok, bad) = closed_set(
        "disks.cache_mode",
        &caches,
        PVE_CACHE,
        Some("none"),
        disk("cache_mode"),
        scsi0("cache"),
    );
    assert!(ok >= 3 && bad >= 2);
    let (aios, _) = with_extras(
        corpus_values("asyncio", |n| n.contains("asyncio") || n.contains("aio")),
        &["", "native", "threads", "io_uring", "iouring", "Native"],
    );
    // unset: not sent (PVE's default)
    let (ok, bad) = closed_set(
        "disks.asyncio",
        &aios,
        PVE_AIO,
        None,
        disk("asyncio"),
        scsi0("aio"),
    );
    assert!(ok >= 3 && bad >= 2);
}

#[test]
fn every_corpus_bus_lands_on_that_bus() {
    // every `type = "…"` of the corpus (disk buses, but also vga, keys, provisioners: values of
    // the wrong kind are cases too)
    let (values, from_corpus) = with_extras(
        corpus_values("type", |n| n.contains("type")),
        &["", "ide", "sata", "scsi", "virtio", "SCSI", "nvme"],
    );
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    let bus_of = |slot: &str| {
        slot.trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string()
    };
    // disks: an unknown bus is a warning and scsi, as the plugin does
    for v in &values {
        let body = format!(
            "{ISO}\n  disks {{\n    storage_pool = \"local-lvm\"\n    type = {}\n  }}",
            quoted(v)
        );
        let (cfg, warnings) = validate(&body).unwrap_or_else(|e| panic!("disk type {v:?}: {e:?}"));
        let known = PVE_BUSES.contains(&v.as_str());
        assert_eq!(
            warnings.iter().any(|w| w.contains("unknown disk type")),
            !known && !v.is_empty(),
            "disk type {v:?}: {warnings:?}"
        );
        let p = create_params(&cfg);
        let slot = p
            .iter()
            .find(|(_, val)| val.starts_with("local-lvm:"))
            .map(|(k, _)| bus_of(k));
        let want = if known { v.as_str() } else { "scsi" };
        assert_eq!(slot.as_deref(), Some(want), "disk type {v:?}");
    }
    // the boot ISO: ide, sata or scsi, refused otherwise at the value
    let (ok, bad) = closed_set(
        "boot_iso.type",
        &values,
        CDROM_BUSES,
        Some("ide"),
        |v| {
            format!(
                "  boot_iso {{\n    iso_file = \"local:iso/a.iso\"\n    type = {}\n  }}",
                quoted(v)
            )
        },
        |cfg| {
            let iso = kiln_build::params::IsoAttach::boot(&cfg.boot_iso, "local:iso/a.iso".into());
            let p = kiln_build::params::create_params(cfg, 100, "t", &[iso]).ok()?;
            p.iter()
                .find(|(_, val)| val.starts_with("local:iso/a.iso,"))
                .map(|(k, _)| bus_of(k))
        },
    );
    assert!(ok >= 3 && bad >= 3);
    // the cloud-init drive (the build's finishing step picks the first free slot of the bus)
    let (ok, bad) = closed_set(
        "cloud_init_disk_type",
        &values,
        CDROM_BUSES,
        Some("ide"),
        |v| {
            format!(
                "{ISO}\n  cloud_init = true\n  cloud_init_disk_type = {}",
                quoted(v)
            )
        },
        |cfg| {
            kiln_build::params::first_free_slot(cfg.cloud_init_disk_type.bus(), ["ide2"])
                .map(|s| bus_of(&s))
        },
    );
    assert!(ok >= 3 && bad >= 3);
}

/// The wait the boot command step would do for `<wait{v}>`: `Ok(Some(d))`, `Ok(None)` when the
/// tag is typed literally (not a wait in Packer's grammar), `Err` when refused.
fn boot_wait(v: &str) -> Result<Option<Duration>, String> {
    let data = kiln_bootcmd::gotmpl::Data::new();
    let p = kiln_bootcmd::plan(&[format!("<wait{v}>")], &data, Duration::from_millis(1))
        .map_err(|e| e.to_string())?;
    Ok(match p.steps.as_slice() {
        [s] => match &s.action {
            kiln_bootcmd::Action::Wait(d) => Some(*d),
            kiln_bootcmd::Action::Key(_) => None,
        },
        _ => None,
    })
}

#[test]
fn every_corpus_duration_reads_the_same_in_the_boot_command() {
    let dur_key = |n: &str| {
        ["wait", "timeout", "interval", "pause"]
            .iter()
            .any(|w| n.contains(w))
    };
    let mut values = Vec::new();
    for key in [
        "boot_wait",
        "boot_key_interval",
        "boot_keygroup_interval",
        "ssh_timeout",
        "ssh_wait_timeout",
        "task_timeout",
        "winrm_timeout",
        "pause_before",
        "timeout",
        "start_retry_timeout",
        "ssh_handshake_timeout",
        "pause_before_connecting",
    ] {
        values.extend(corpus_values(key, dur_key));
    }
    // the waits of the corpus's boot commands
    let tag = regex::Regex::new(r"<wait([^>]*)>").expect("regex");
    for text in corpus_texts() {
        for c in tag.captures_iter(&text) {
            values.push(c[1].to_string());
        }
    }
    let (values, from_corpus) = with_extras(
        values,
        &[
            "1m30s", "1.5s", "500ms", "2h", "250us", "2µs", ".5s", "1s500ms", "-1s", "5x", "1e3s",
        ],
    );
    assert!(from_corpus >= 40, "only {from_corpus} corpus values");
    let (mut same, mut integers, mut refused) = (0, 0, 0);
    for v in &values {
        if v.is_empty() {
            continue;
        }
        let body = format!("{ISO}\n  pause_before_connecting = {}", quoted(v));
        let config = validate(&body).map(|(c, _)| c.communicator.pause_before_connecting);
        let wait = boot_wait(v);
        if v.bytes().all(|b| b.is_ascii_digit()) {
            // Packer's boot command also takes whole seconds (`<wait5>`, `<wait0>` = 1 s);
            // a duration key needs a unit ("0" alone excepted)
            let secs: u64 = v.parse().expect("digits");
            assert_eq!(
                wait,
                Ok(Some(Duration::from_secs(secs.max(1)))),
                "<wait{v}>"
            );
            assert_eq!(config.is_ok(), v == "0", "{v:?}: {config:?}");
            integers += 1;
            continue;
        }
        match (&config, &wait) {
            (Ok(a), Ok(Some(b))) if a == b => same += 1,
            // Packer's boot command grammar wants a digit first: `<wait.5s>` is typed literally
            (Ok(_), Ok(None)) if v.starts_with('.') => refused += 1,
            // refused as a duration: not a wait either (typed literally, or refused)
            (Err(_), Ok(None) | Err(_)) => refused += 1,
            _ => panic!("{v:?}: pause_before_connecting {config:?}, <wait{v}> {wait:?}"),
        }
    }
    println!(
        "durations: {} values ({from_corpus} from the corpus): {same} read alike, {integers} whole seconds, {refused} refused by both",
        values.len()
    );
    assert!(same >= 6 && integers >= 3 && refused >= 2);
}
