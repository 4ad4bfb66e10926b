//! Every `proxmox-iso` key kiln-config's table marks as supported is read by the build (or by
//! `kiln init`): its model field appears as a field access in the non-test sources of kiln-build or
//! kiln. Keys that are not supported are refused at their line by kiln-config (tested there), so
//! together no key is decoded and then silently ignored.
//!
//! This is a source check: it proves the field is read somewhere, not that it is used correctly
//! (the step tests do that). Generic field names (`type`, `index`, `source`) can be satisfied by
//! another struct's field of the same name.

use kiln_config::model::keys::{Support, KEYS};
use std::path::Path;

/// The non-test Rust sources under `dir`: `#[cfg(test)]` modules (at the end of a file by this
/// workspace's convention) and test-only files are left out.
fn sources(dir: &Path, out: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
            continue;
        }
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let code = match text.find("#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        out.push_str(code);
        out.push('\n');
    }
}

fn reads_field(code: &str, field: &str) -> bool {
    let re = regex::Regex::new(&format!(r"\.(r#)?{field}\b[^(]")).expect("regex");
    re.is_match(code)
}

#[test]
fn every_supported_key_is_read_by_the_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    sources(&root.join("src"), &mut code);
    sources(&root.join("../kiln/src"), &mut code);
    let mut unread = Vec::new();
    let mut checked = 0;
    for spec in KEYS {
        let Support::Yes(dest) = spec.support else {
            continue;
        };
        let field = spec.field();
        let last = field.rsplit('.').next().unwrap_or(&field);
        checked += 1;
        if !reads_field(&code, last) {
            unread.push(format!("{field} ({})", dest.describe()));
        }
    }
    assert!(checked > 100, "{checked}");
    assert!(
        unread.is_empty(),
        "keys kiln-config accepts as supported but no build step reads (consume them, or mark them \
         `unsupported` in crates/kiln-config/src/model/keys.rs so validation refuses them):\n{}",
        unread.join("\n")
    );
}

#[test]
fn the_check_sees_a_missing_read() {
    assert!(reads_field(
        "let x = c.ssh_bastion_host.clone();",
        "ssh_bastion_host"
    ));
    assert!(reads_field("let t = d.r#type.as_str();", "type"));
    assert!(!reads_field(
        "let x = c.ssh_bastion_hostname;",
        "ssh_bastion_host"
    ));
    assert!(!reads_field("x.cores()", "cores"));
}
