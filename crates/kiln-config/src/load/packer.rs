//! The `packer {}` block: `required_version` and `required_plugins`, and the rule that a
//! `boot_iso` block needs a proxmox plugin pin that allows ≥ 1.2.0.

use super::body::RawBlock;
use super::ebody::EBody;
use super::eval::{Globals, Scope};
use crate::diag::{Diag, SourceFile};
use crate::model::{Required, RequiredPlugin};
use hcl::Value;
use std::ops::Range;
use std::sync::Arc;

/// Read the `packer {}` blocks; also returns where the proxmox plugin pin is (`file:line`).
pub fn read_packer_blocks(
    blocks: &[RawBlock],
    g: &Globals,
    errs: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) -> (Required, Option<String>) {
    let mut req = Required::default();
    let scope = Scope::root(g);
    let mut spans: Vec<(String, Arc<SourceFile>, Range<usize>)> = Vec::new();
    let mut version_at: Option<(Arc<SourceFile>, Range<usize>)> = None;
    for b in blocks {
        for a in b.body.attrs() {
            match a.key.as_str() {
                "required_version" => match scope.eval(&a.expr) {
                    Ok(Value::String(s)) => {
                        req.required_version = Some(s);
                        version_at = Some((a.file.clone(), a.span.clone()));
                    }
                    Ok(_) => errs.push(Diag::error("required_version must be a string").at(&a.file, Some(a.span.clone()))),
                    Err(e) => super::ebody::report(errs, e, &a.file, a.span.clone()),
                },
                other => errs.push(
                    Diag::error(format!(
                        "unknown key \"{other}\" in packer block (expected required_version, required_plugins)"
                    ))
                    .at(&a.file, Some(a.span.clone())),
                ),
            }
        }
        for rp in b.body.blocks() {
            if rp.ident != "required_plugins" {
                errs.push(
                    Diag::error(format!("unknown block \"{}\" in packer block", rp.ident))
                        .at(&rp.file, Some(rp.span.clone())),
                );
                continue;
            }
            for a in rp.body.attrs() {
                match scope.eval(&a.expr) {
                    Ok(Value::Object(m)) => {
                        let get = |k: &str| {
                            m.get(k).and_then(|v| {
                                if let Value::String(s) = v {
                                    Some(s.clone())
                                } else {
                                    None
                                }
                            })
                        };
                        let source = get("source").unwrap_or_default();
                        let version = get("version").unwrap_or_default();
                        if source.is_empty() {
                            errs.push(
                                Diag::error(format!(
                                    "required_plugins \"{}\": source is required",
                                    a.key
                                ))
                                .at(&a.file, Some(a.span.clone())),
                            );
                        }
                        // pin problems are about the constraint: point at the version string
                        let at = version_span(&a.file, &a.span).unwrap_or_else(|| a.span.clone());
                        spans.push((a.key.clone(), a.file.clone(), at));
                        req.plugins.push(RequiredPlugin {
                            name: a.key.clone(),
                            source,
                            version,
                        });
                    }
                    Ok(_) => errs.push(
                        Diag::error(format!(
                            "required_plugins \"{}\" must be an object {{ source, version }}",
                            a.key
                        ))
                        .at(&a.file, Some(a.span.clone())),
                    ),
                    Err(e) => super::ebody::report(errs, e, &a.file, a.span.clone()),
                }
            }
        }
    }
    crate::load::packer_versions::check(&req, version_at.as_ref(), &spans, errs, warnings);
    let pin_at = spans
        .iter()
        .zip(req.plugins.iter())
        .find(|(_, p)| is_proxmox(p))
        .map(|((_, f, s), _)| {
            let (line, _) = f.line_col(s.start);
            format!("{}:{line}", f.name)
        });
    (req, pin_at)
}

/// The span of the `"…"` literal after `version =` (or `version:`) inside a `required_plugins`
/// entry written at `attr` (the whole `name = { … }` attribute), if it is a plain string literal.
fn version_span(f: &SourceFile, attr: &Range<usize>) -> Option<Range<usize>> {
    let text = f.text.get(attr.clone())?;
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("version").map(|i| i + from) {
        from = i + "version".len();
        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let after = text[from..].trim_start_matches([' ', '\t', '"']);
        let Some(rest) = after.strip_prefix(['=', ':']) else {
            continue;
        };
        if !word_start {
            continue;
        }
        let lit = rest.trim_start_matches([' ', '\t']);
        if !lit.starts_with('"') {
            return None;
        }
        let start = text.len() - lit.len();
        let end = lit[1..].find('"')? + 2;
        return Some(attr.start + start..attr.start + start + end);
    }
    None
}

pub fn is_proxmox(p: &RequiredPlugin) -> bool {
    crate::version::plugin_by_source(&p.source).is_some_and(|i| i.name == "proxmox")
}

/// `boot_iso` first shipped in plugin v1.2.0: a pin whose newest matching release is older
/// (e.g. `~> 1.1.3` selects 1.1.8) cannot work with a `boot_iso {}` block.
pub fn check_boot_iso_pin(
    body: &EBody,
    req: &Required,
    pin_at: Option<&str>,
    errs: &mut Vec<Diag>,
) {
    let Some(b) = body.blocks.iter().find(|b| b.ident == "boot_iso") else {
        return;
    };
    for p in req.plugins.iter().filter(|p| is_proxmox(p)) {
        let v = if p.version.trim().is_empty() {
            None
        } else {
            Some(p.version.as_str())
        };
        let Ok(pin) = crate::version::check_required_plugin(&p.name, &p.source, v) else {
            continue;
        };
        if let Err(e) = pin.require_feature("boot_iso") {
            let at = pin_at
                .map(|l| format!(" (the pin is at {l})"))
                .unwrap_or_default();
            errs.push(
                Diag::error(format!("{e}{at}"))
                    .at(&b.file, Some(b.span.clone()))
                    .with_help("raise the pin (e.g. \">= 1.2.0\"), or use the deprecated top-level iso_* keys that older plugins understand"),
            );
        }
    }
}
