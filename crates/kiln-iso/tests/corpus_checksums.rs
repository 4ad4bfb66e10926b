//! Every `iso_checksum` written in the corpus (crates/kiln-config/tests/corpus/), plus Packer's
//! documented forms, goes through both paths: `kiln validate` (the loader, which parses it once
//! into the plan) and the ISO fetcher (what `kiln init` and the build's ISO step run on the plan's
//! value). An accepted value must make the fetcher verify against what Packer would; a refused one
//! is refused at its line with the parser's message.

use std::path::{Path, PathBuf};

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

/// The literal `iso_checksum = "…"` values of a file (no interpolation: those are values of
/// variables, collected from `default = "…"` only when the variable's name says checksum).
fn literals(text: &str, out: &mut Vec<String>) {
    let mut in_checksum_var = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("variable ") {
            in_checksum_var = l.contains("checksum");
        }
        let key = if l.starts_with("iso_checksum") {
            true
        } else {
            in_checksum_var && l.starts_with("default")
        };
        if !key {
            continue;
        }
        let Some((_, rhs)) = l.split_once('=') else {
            continue;
        };
        let rhs = rhs.trim();
        if let Some(v) = rhs.strip_prefix('"').and_then(|r| r.split('"').next()) {
            if !v.contains("${") {
                out.push(v.to_string());
            }
        }
    }
}

const H256: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

/// Packer's documented forms with Packer's verdict (true = accepted).
fn documented_forms() -> Vec<(String, bool)> {
    vec![
        ("none".into(), true),
        ("NONE".into(), true),
        (format!("sha256:{H256}"), true),
        (format!("SHA256:{}", H256.to_uppercase()), true),
        (H256.into(), true),
        (format!("md5:{}", "a".repeat(32)), true),
        ("a".repeat(40), true),
        (format!("sha512:{}", "b".repeat(128)), true),
        (
            "file:https://releases.ubuntu.com/24.04/SHA256SUMS".into(),
            true,
        ),
        ("file:./SHA256SUMS".into(), true),
        ("file:///srv/iso/SHA256SUMS".into(), true),
        (
            "sha256:file:https://releases.ubuntu.com/24.04/SHA256SUMS".into(),
            true,
        ),
        ("sha256:file:./SHA256SUMS".into(), true),
        // wrong ones
        ("sha256:abc".into(), false),
        (format!("md5:{H256}"), false),
        ("crc32:1234".into(), false),
        ("xyz".into(), false),
        ("https://releases.ubuntu.com/noble/SHA256SUMS".into(), false),
        ("sha256:your-iso-checksum".into(), false),
    ]
}

const TEMPLATE_LINE: usize = 9;

/// `kiln validate`'s verdict: the checksum the plan carries, or the loader's message about
/// iso_checksum (which must be at the value's line).
fn validate_path(value: &str) -> Result<Option<kiln_iso::ChecksumSpec>, String> {
    let d = tempfile::tempdir().expect("temp dir");
    let text = format!(
        r#"source "proxmox-iso" "t" {{
  proxmox_url  = "https://pve.example:8006/api2/json"
  username     = "root@pam"
  password     = "pw"
  node         = "pve"
  ssh_username = "u"
  boot_iso {{
    iso_url          = "https://example.com/a.iso"
    iso_checksum     = "{}"
    iso_storage_pool = "local"
  }}
}}
build {{ sources = ["source.proxmox-iso.t"] }}
"#,
        value.replace('\\', "\\\\").replace('"', "\\\"")
    );
    std::fs::write(d.path().join("t.pkr.hcl"), text).expect("write template");
    let opts = kiln_config::LoadOptions {
        cwd: Some(d.path().to_path_buf()),
        ..kiln_config::LoadOptions::isolated()
    };
    match kiln_config::load(d.path(), &opts) {
        Ok(l) => Ok(l.plan.runs[0].config.boot_iso.iso_checksum.clone()),
        Err(e) => {
            let msgs: Vec<String> = e
                .errors
                .iter()
                .filter(|d| d.message.contains("iso_checksum"))
                .map(|d| {
                    let line = d.location.as_ref().map(|l| l.line);
                    // an empty value is "not set": the block's error, at the block
                    assert!(
                        value.is_empty() || line == Some(TEMPLATE_LINE),
                        "{value:?}: {} is not at the value's line {TEMPLATE_LINE}",
                        d.one_line()
                    );
                    d.message.clone()
                })
                .collect();
            assert!(
                msgs.len() == e.errors.len(),
                "{value:?}: unrelated errors {:?}",
                e.errors.iter().map(|d| d.one_line()).collect::<Vec<_>>()
            );
            Err(msgs.join("; "))
        }
    }
}

/// The digest the fetcher verifies against, from the plan's value, offline: `none` and digests
/// resolve without a request; a checksum file is only named (its URL is compared instead).
async fn consumer_path(spec: &kiln_iso::ChecksumSpec, cache: &Path) -> String {
    let f = kiln_iso::Fetcher::new(cache.to_path_buf()).expect("fetcher");
    let url = "https://example.com/a.iso";
    let src = kiln_iso::IsoSource {
        urls: vec![url.into()],
        checksum: spec.clone(),
    };
    // what `kiln init --offline` and the build's ISO step plan with it
    assert!(
        matches!(f.plan(&src), Ok(kiln_iso::Planned::Download { .. })),
        "{spec}: the fetcher cannot plan with it"
    );
    match spec {
        kiln_iso::ChecksumSpec::File { url, algo } => {
            format!("file {url} ({})", algo.map_or("any", |a| a.name()))
        }
        _ => match f.resolve_digest(spec, url).await {
            Ok(Some(d)) => format!("{}:{}", d.algo.name(), d.hex),
            Ok(None) => "none".into(),
            Err(e) => panic!("{spec}: {e}"),
        },
    }
}

/// What Packer verifies against for an accepted value, by Packer's rules written out here
/// independently of the parser: `none`, `<type>:<hex>` (the type named), bare hex (the type from
/// its length), `file:<url>` / `<type>:file:<url>`.
fn packer_expects(value: &str) -> String {
    let v = value.trim();
    if v.eq_ignore_ascii_case("none") {
        return "none".into();
    }
    if let Some(url) = v.strip_prefix("file:") {
        return format!("file {url} (any)");
    }
    match v.split_once(':') {
        Some((ty, rest)) => match rest.strip_prefix("file:") {
            Some(url) => format!("file {url} ({})", ty.to_ascii_lowercase()),
            None => format!("{}:{}", ty.to_ascii_lowercase(), rest.to_ascii_lowercase()),
        },
        None => {
            let ty = match v.len() {
                32 => "md5",
                40 => "sha1",
                64 => "sha256",
                128 => "sha512",
                n => panic!("{value:?}: {n} hex digits name no hash type"),
            };
            format!("{ty}:{}", v.to_ascii_lowercase())
        }
    }
}

#[tokio::test]
async fn every_corpus_checksum_has_one_verdict() {
    let mut files = Vec::new();
    walk(&corpus(), &mut files);
    assert!(files.len() > 20, "corpus not found at {:?}", corpus());
    let mut values = Vec::new();
    for f in &files {
        literals(&std::fs::read_to_string(f).unwrap_or_default(), &mut values);
    }
    let from_corpus = values.len();
    assert!(from_corpus >= 20, "only {from_corpus} corpus values");
    let documented = documented_forms();
    values.extend(documented.iter().map(|(v, _)| v.clone()));
    values.sort();
    values.dedup();
    let cache = tempfile::tempdir().expect("cache dir");
    let (mut ok, mut bad) = (0, 0);
    for v in &values {
        let validate = validate_path(v);
        if let Some((_, accepted)) = documented.iter().find(|(d, _)| d == v) {
            assert_eq!(validate.is_ok(), *accepted, "{v:?}: validate {validate:?}");
        }
        match validate {
            Ok(Some(spec)) => {
                // the plan's value is what the fetcher uses, and what Packer would verify
                assert_eq!(
                    consumer_path(&spec, cache.path()).await,
                    packer_expects(v),
                    "{v:?}"
                );
                // the canonical text (inspect, the cache record) reads back as the same value
                assert_eq!(
                    kiln_iso::ChecksumSpec::parse(&spec.to_string()).ok(),
                    Some(spec.clone()),
                    "{v:?}"
                );
                ok += 1;
            }
            Ok(None) => panic!("{v:?}: valid with iso_url but no checksum in the plan"),
            Err(m) => {
                // the same parser's message, or "not set" for an empty value
                let parsed = kiln_iso::ChecksumSpec::parse(v);
                match parsed {
                    Err(e) => assert!(
                        m.contains(&e.msg) || (v.is_empty() && m.contains("is required")),
                        "{v:?}: {m:?} vs {e}"
                    ),
                    Ok(_) => panic!("{v:?}: validate refused a parsable value: {m}"),
                }
                bad += 1;
            }
        }
    }
    println!(
        "{} values ({from_corpus} from the corpus): {ok} accepted, {bad} rejected",
        values.len()
    );
    assert!(ok > 5 && bad > 3);
}
