//! The key table against the decoder: defaults, coverage, and the "not supported" verdicts.

use super::*;
use crate::model::{LoadOptions, Loaded};
use crate::ConfigError;
use serde_json::Value as J;

const BASE: &str = r#"source "proxmox-iso" "t" {
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
"#;

/// Minimal nested blocks, so every block's defaults are decoded too.
const BLOCKS: &str = r#"  vga {}
  efi_config { efi_storage_pool = "local" }
  tpm_config { tpm_storage_pool = "local" }
  rng0 { source = "/dev/urandom" }
  pci_devices { host = "0000:01:00.0" }
  disks { storage_pool = "local" }
  network_adapters { bridge = "vmbr0" }
  boot_iso { iso_file = "local:iso/a.iso" }
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.pkr.hcl"), text).unwrap();
    let opts = LoadOptions {
        cwd: Some(d.path().to_path_buf()),
        now: Some(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..LoadOptions::isolated()
    };
    crate::load(d.path(), &opts)
}

fn errors(r: Result<Loaded, ConfigError>) -> Vec<String> {
    match r {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(|d| d.one_line()).collect(),
    }
}

fn decoded_defaults() -> J {
    let l = load(
        &format!("{BASE}{BLOCKS}}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n"),
        &[],
    )
    .unwrap_or_else(|e| {
        panic!(
            "{:?}",
            e.errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
        )
    });
    serde_json::to_value(&l.plan.runs[0].config).unwrap()
}

/// The decoded value of a key: repeatable blocks at index 0.
fn lookup<'a>(cfg: &'a J, spec: &KeySpec) -> Option<&'a J> {
    let mut v = cfg;
    for part in spec.field().split('.') {
        v = v.get(part)?;
        if let J::Array(a) = v {
            if matches!(part, "pci_devices" | "disks" | "network_adapters") {
                v = a.first()?;
            }
        }
    }
    Some(v)
}

fn json_nanos(v: &J) -> Option<i128> {
    let secs = v.get("secs")?.as_u64()? as i128;
    let nanos = v.get("nanos")?.as_u64()? as i128;
    Some(secs * 1_000_000_000 + nanos)
}

#[test]
fn documented_defaults_are_runtime_defaults() {
    let cfg = decoded_defaults();
    let mut wrong = Vec::new();
    for spec in KEYS {
        // aliases have no field; keys the test template sets are not defaults
        let set_by_test = |t: &str| {
            t.lines()
                .any(|l| l.trim_start().starts_with(&format!("{} ", spec.key)))
        };
        let in_block = spec.block.is_empty() && set_by_test(BASE)
            || !spec.block.is_empty()
                && BLOCKS.contains(&format!("{} {{ {} =", spec.block, spec.key));
        // (the `ipconfig {}` keys of proxmox-clone are all unset by default: a block this
        // proxmox-iso sample cannot hold)
        let clone_block = !spec.block.is_empty() && !spec.sources.accepts("proxmox-iso");
        if matches!(spec.support, Support::Alias(_))
            || matches!(spec.kind, Kind::Block | Kind::Blocks)
            || in_block
            || clone_block
        {
            continue;
        }
        let Some(v) = lookup(&cfg, spec) else {
            wrong.push(format!("{}: no decoded field {}", spec.key, spec.field()));
            continue;
        };
        let expected = match spec.default {
            Def::Lit(s) => s.to_string(),
            Def::Dur(d) => go_duration(d),
            Def::Unset => {
                let unset = match v {
                    J::Null => true,
                    J::Bool(b) => !b,
                    J::String(s) => s.is_empty(),
                    J::Array(a) => a.is_empty(),
                    J::Object(o) => o.is_empty() || json_nanos(v) == Some(0),
                    J::Number(n) => n.as_u64() == Some(0),
                };
                if !unset {
                    wrong.push(format!("{}: documented unset, decoded {v}", spec.field()));
                }
                continue;
            }
            Def::Computed(_) => continue,
        };
        let ok = match spec.kind {
            Kind::Duration => {
                json_nanos(v) == crate::load::ebody::parse_go_duration(&expected).ok()
            }
            Kind::Bool => v.as_bool().map(|b| b.to_string()) == Some(expected.clone()),
            Kind::Number => v.as_u64().map(|n| n.to_string()) == Some(expected.clone()),
            _ => v.as_str() == Some(expected.as_str()),
        };
        if !ok {
            wrong.push(format!(
                "{}: documented default {expected}, decoded {v}",
                spec.field()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "documented ≠ runtime defaults:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_vm_name_default_is_the_documented_one() {
    let spec = spec("", "vm_name").unwrap();
    assert_eq!(
        spec.default,
        Def::Computed("`kiln-` and 8 random hex digits")
    );
    let n = default_vm_name();
    assert!(
        n.len() == 13
            && n.starts_with("kiln-")
            && n[5..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{n}"
    );
}

#[test]
fn boot_key_interval_comes_from_the_template_the_environment_or_the_constant() {
    let src = format!("{BASE}{BLOCKS}}}\n");
    let get = |text: &str, env: &[(&str, &str)]| {
        load(text, env)
            .unwrap()
            .plan
            .runs
            .first()
            .map(|r| r.config.boot_key_interval)
    };
    let with_build = |s: &str| format!("{s}build {{ sources = [\"source.proxmox-iso.t\"] }}\n");
    let src = with_build(&src);
    assert_eq!(get(&src, &[]), Some(DEFAULT_BOOT_KEY_INTERVAL));
    // Go durations, not only ms/s: `1m` used to become 100 ms silently
    assert_eq!(
        get(&src, &[("PACKER_KEY_INTERVAL", "1m")]),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        get(&src, &[("PACKER_KEY_INTERVAL", "1.5s")]),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        get(&src, &[("PACKER_KEY_INTERVAL", "250us")]),
        Some(Duration::from_micros(250))
    );
    let own = with_build(&format!(
        "{BASE}{BLOCKS}  boot_key_interval = \"20ms\"\n}}\n"
    ));
    assert_eq!(
        get(&own, &[("PACKER_KEY_INTERVAL", "1m")]),
        Some(Duration::from_millis(20))
    );
    let e = errors(load(&src, &[("PACKER_KEY_INTERVAL", "fast")]));
    assert!(
        e.iter()
            .any(|m| m.contains("PACKER_KEY_INTERVAL") && m.contains("invalid duration")),
        "{e:?}"
    );
}

fn sample(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "\"kiln-sample\"",
        Kind::Bool => "true",
        Kind::Number => "7",
        Kind::Duration => "\"3s\"",
        Kind::StrList => "[\"a\"]",
        Kind::StrMap => "{ a = \"b\" }",
        Kind::Block | Kind::Blocks => unreachable!(),
    }
}

#[test]
fn decoder_reads_exactly_the_table() {
    // every key of the table set at once: none may be reported as unknown (the decoder reads
    // it); a key the decoder reads but the table lacks trips the assertion in `Dec::finish`
    let mut text = String::from(BASE);
    for spec in keys_of("") {
        if matches!(spec.kind, Kind::Block | Kind::Blocks)
            || [
                "proxmox_url",
                "username",
                "password",
                "node",
                "ssh_username",
            ]
            .contains(&spec.key)
        {
            continue;
        }
        text.push_str(&format!("  {} = {}\n", spec.key, sample(spec.kind)));
    }
    for block in [
        "vga",
        "efi_config",
        "tpm_config",
        "rng0",
        "pci_devices",
        "disks",
        "network_adapters",
        "boot_iso",
        "additional_iso_files",
    ] {
        text.push_str(&format!("  {block} {{\n"));
        for spec in keys_of(block) {
            text.push_str(&format!("    {} = {}\n", spec.key, sample(spec.kind)));
        }
        text.push_str("  }\n");
    }
    text.push_str("}\nbuild { sources = [\"source.proxmox-iso.t\"] }\n");
    let e = errors(load(&text, &[]));
    assert!(!e.is_empty(), "sample values should fail some validation");
    let unknown: Vec<&String> = e.iter().filter(|m| m.contains("unknown")).collect();
    assert!(
        unknown.is_empty(),
        "keys of the table the decoder does not read: {unknown:?}"
    );
}

#[test]
fn unsupported_keys_are_rejected_at_their_line() {
    let mut checked = 0;
    for spec in KEYS {
        let (Support::No(_) | Support::NoEffect(_)) = spec.support else {
            continue;
        };
        // line 7 of the file (BASE has 6 lines) holds the key (line 8 in a nested block)
        let text = if spec.block.is_empty() {
            format!(
                "{BASE}  {} = {}\n  boot_iso {{ iso_file = \"local:iso/a.iso\" }}\n}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n",
                spec.key,
                sample(spec.kind)
            )
        } else {
            let (required, after) = match spec.block {
                "boot_iso" => ("    iso_file = \"local:iso/a.iso\"\n", ""),
                "disks" => (
                    "    storage_pool = \"local\"\n",
                    "  boot_iso { iso_file = \"local:iso/a.iso\" }\n",
                ),
                other => panic!("add the required keys of block {other} to this test"),
            };
            format!(
                "{BASE}  {} {{\n    {} = {}\n{required}  }}\n{after}}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n",
                spec.block,
                spec.key,
                sample(spec.kind)
            )
        };
        let r = load(&text, &[]);
        match spec.support {
            Support::No(why) => {
                let want = format!("not supported by kiln: {} ({why})", spec.key);
                let e = match r {
                    Ok(_) => panic!("{} = {} was accepted", spec.key, sample(spec.kind)),
                    Err(e) => e,
                };
                let hit = e.errors.iter().find(|d| d.message.contains(&want));
                let hit = hit.unwrap_or_else(|| {
                    panic!(
                        "no `{want}` for {}: {:?}",
                        spec.key,
                        e.errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
                    )
                });
                let line = if spec.block.is_empty() { 7 } else { 8 };
                assert_eq!(
                    hit.location.as_ref().map(|l| l.line),
                    Some(line),
                    "{}: {}",
                    spec.key,
                    hit.one_line()
                );
            }
            _ => {
                let l = r.unwrap_or_else(|e| {
                    panic!(
                        "{}: {:?}",
                        spec.key,
                        e.errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
                    )
                });
                let w = l
                    .warnings
                    .iter()
                    .find(|d| {
                        d.message
                            .contains(&format!("{} has no effect in kiln", spec.key))
                    })
                    .unwrap_or_else(|| panic!("no warning for {}", spec.key));
                let line = if spec.block.is_empty() { 7 } else { 8 };
                assert_eq!(
                    w.location.as_ref().map(|l| l.line),
                    Some(line),
                    "{}",
                    spec.key
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

#[test]
fn winrm_is_refused_at_its_line() {
    let text = format!("{BASE}  communicator = \"winrm\"\n  boot_iso {{ iso_file = \"local:iso/a.iso\" }}\n}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n");
    let e = load(&text, &[]).expect_err("winrm refused");
    let d = e
        .errors
        .iter()
        .find(|d| {
            d.message
                .contains("not supported by kiln: communicator = \"winrm\"")
        })
        .expect("winrm diagnostic");
    assert_eq!(d.location.as_ref().map(|l| l.line), Some(7));
}

#[test]
fn secret_keys_are_masked() {
    let text = format!("{BASE}  ssh_bastion_host = \"b\"\n  ssh_bastion_username = \"bu\"\n  ssh_bastion_password = \"bastion-secret\"\n  boot_iso {{ iso_file = \"local:iso/a.iso\" }}\n}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n");
    let l = load(&text, &[]).unwrap();
    assert!(l
        .plan
        .sensitive_values
        .iter()
        .any(|s| s == "bastion-secret"));
    assert!(l.plan.sensitive_values.iter().any(|s| s == "pw"));
    assert_eq!(l.plan.mask("x bastion-secret y"), "x <sensitive> y");
}

#[test]
fn go_durations_print_like_go() {
    assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h");
    assert_eq!(go_duration(Duration::ZERO), "0s");
}

// ---- proxmox-clone: the same table, the other builder's keys refused ----

const CLONE_BASE: &str = r#"source "proxmox-clone" "c" {
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
"#;

fn clone_src(extra: &str) -> String {
    format!("{CLONE_BASE}{extra}}}\nbuild {{ sources = [\"source.proxmox-clone.c\"] }}\n")
}

#[test]
fn a_clone_source_decodes_with_the_plugins_defaults() {
    let l = load(
        &clone_src(
            "  clone_vm = \"ubuntu-cloud\"\n  nameserver = \"1.1.1.1 2606:4700::1111\"\n  network_adapters { bridge = \"vmbr0\" }\n  ipconfig {\n    ip = \"10.0.0.5/24\"\n    gateway = \"10.0.0.1\"\n    ip6 = \"auto\"\n  }\n",
        ),
        &[],
    )
    .unwrap_or_else(|e| panic!("{:?}", errors(Err(e))));
    let r = &l.plan.runs[0];
    assert_eq!(r.source_type, "proxmox-clone");
    assert_eq!(r.full_name(), "proxmox-clone.c");
    let c = &r.config;
    assert_eq!(c.clone_vm.as_deref(), Some("ubuntu-cloud"));
    assert_eq!(c.clone_vm_id, None);
    assert!(c.full_clone, "full_clone defaults to true");
    assert_eq!(c.ipconfig.len(), 1);
    assert_eq!(c.ipconfig[0].ip.as_deref(), Some("10.0.0.5/24"));
    assert_eq!(c.ipconfig[0].gateway.as_deref(), Some("10.0.0.1"));
    assert_eq!(c.ipconfig[0].ip6.as_deref(), Some("auto"));
    assert_eq!(c.ipconfig[0].gateway6, None);
    // no boot ISO is required (or decoded) for a clone
    assert_eq!(c.boot_iso.iso_file, None);
}

#[test]
fn clone_errors_are_the_plugins() {
    let cases: &[(&str, &str)] = &[
        ("", "one of clone_vm or clone_vm_id must be specified"),
        (
            "  clone_vm = \"a\"\n  clone_vm_id = 100\n",
            "clone_vm and clone_vm_id cannot both be specified",
        ),
        ("  clone_vm_id = 42\n", "clone_vm_id must be in range 100-999999999"),
        (
            "  clone_vm = \"a\"\n  nameserver = \"1.1.1\"\n",
            "could not parse nameserver",
        ),
        (
            "  clone_vm = \"a\"\n  network_adapters { bridge = \"vmbr0\" }\n  ipconfig { ip = \"10.0.0.5\" }\n",
            "could not parse ipconfig.ip",
        ),
        (
            "  clone_vm = \"a\"\n  network_adapters { bridge = \"vmbr0\" }\n  ipconfig { gateway6 = \"10.0.0.1\" }\n",
            "could not parse ipconfig.gateway6",
        ),
        (
            "  clone_vm = \"a\"\n  ipconfig { ip = \"dhcp\" }\n",
            "1 ipconfig blocks given, but only 0 network interfaces defined",
        ),
        // keys of proxmox-iso, refused at their line
        (
            "  clone_vm = \"a\"\n  boot_iso { iso_file = \"local:iso/a.iso\" }\n",
            "boot_iso is a block of source \"proxmox-iso\", not of \"proxmox-clone\"",
        ),
        (
            "  clone_vm = \"a\"\n  iso_file = \"local:iso/a.iso\"\n",
            "iso_file is a key of source \"proxmox-iso\", not of \"proxmox-clone\"",
        ),
        // shared keys kiln's clone does not do
        (
            "  clone_vm = \"a\"\n  boot_command = [\"<enter>\"]\n",
            "not supported by kiln: boot_command",
        ),
        (
            "  clone_vm = \"a\"\n  disks { storage_pool = \"local\" }\n",
            "not supported by kiln: disks in proxmox-clone",
        ),
    ];
    for (extra, want) in cases {
        let e = errors(load(&clone_src(extra), &[]));
        assert!(
            e.iter().any(|m| m.contains(want)),
            "{extra:?}: want {want:?}, got {e:?}"
        );
        assert!(
            !e.iter()
                .any(|m| m.contains("unknown key") || m.contains("unknown block")),
            "{extra:?}: {e:?}"
        );
    }
}

#[test]
fn clone_keys_are_refused_in_an_iso_source() {
    let text = format!(
        "{BASE}  boot_iso {{ iso_file = \"local:iso/a.iso\" }}\n  clone_vm = \"a\"\n  full_clone = false\n}}\nbuild {{ sources = [\"source.proxmox-iso.t\"] }}\n"
    );
    let e = errors(load(&text, &[]));
    assert!(
        e.iter()
            .any(|m| m
                .contains("clone_vm is a key of source \"proxmox-clone\", not of \"proxmox-iso\"")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("full_clone is a key")), "{e:?}");
}

#[test]
fn the_clone_decoder_reads_exactly_the_table() {
    // every key a clone accepts, set at once: none reported unknown
    let mut text = String::from(CLONE_BASE);
    text.push_str("  clone_vm = \"a\"\n");
    for spec in keys_of("") {
        if matches!(spec.kind, Kind::Block | Kind::Blocks)
            || !spec.sources.accepts(CLONE)
            || [
                "proxmox_url",
                "username",
                "password",
                "node",
                "ssh_username",
                "clone_vm",
                "clone_vm_id",
            ]
            .contains(&spec.key)
        {
            continue;
        }
        text.push_str(&format!("  {} = {}\n", spec.key, sample(spec.kind)));
    }
    for block in ["vga", "rng0", "pci_devices", "network_adapters", "ipconfig"] {
        text.push_str(&format!("  {block} {{\n"));
        for spec in keys_of(block) {
            text.push_str(&format!("    {} = {}\n", spec.key, sample(spec.kind)));
        }
        text.push_str("  }\n");
    }
    text.push_str("}\nbuild { sources = [\"source.proxmox-clone.c\"] }\n");
    let e = errors(load(&text, &[]));
    let unknown: Vec<&String> = e.iter().filter(|m| m.contains("unknown")).collect();
    assert!(unknown.is_empty(), "{unknown:?}");
}
