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

/// Where the proxmox plugin pin was written (for the boot_iso rule).
static PIN_AT: std::sync::Mutex<Option<(String, usize)>> = std::sync::Mutex::new(None);

pub fn read_packer_blocks(
    blocks: &[RawBlock],
    g: &Globals,
    errs: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) -> Required {
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
                other => errs.push(Diag::error(format!("unknown key \"{other}\" in packer block (expected required_version, required_plugins)")).at(&a.file, Some(a.span.clone()))),
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
                        spans.push((a.key.clone(), a.file.clone(), a.span.clone()));
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
    if let Some((_, f, s)) = spans
        .iter()
        .zip(req.plugins.iter())
        .find(|(_, p)| is_proxmox(p))
        .map(|(s, _)| s)
    {
        let (line, _) = f.line_col(s.start);
        if let Ok(mut g) = PIN_AT.lock() {
            *g = Some((f.name.clone(), line));
        }
    }
    req
}

pub fn is_proxmox(p: &RequiredPlugin) -> bool {
    p.source
        .trim_end_matches('/')
        .ends_with("hashicorp/proxmox")
}

/// `boot_iso` first shipped in plugin v1.2.0: a pin that excludes every 1.2.x+ version while
/// the source uses `boot_iso` cannot work.
pub fn check_boot_iso_pin(
    body: &EBody,
    req: &Required,
    file: &Arc<SourceFile>,
    span: Range<usize>,
    errs: &mut Vec<Diag>,
) {
    let Some(b) = body.blocks.iter().find(|b| b.ident == "boot_iso") else {
        return;
    };
    let _ = (file, span);
    for p in req.plugins.iter().filter(|p| is_proxmox(p)) {
        let allows = [
            "1.2.0", "1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.3.0", "2.0.0",
        ]
        .iter()
        .any(|v| constraint_allows(&p.version, v));
        if !allows {
            let pin = PIN_AT
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .map(|(f, l)| format!(" (pinned at {f}:{l})"))
                .unwrap_or_default();
            errs.push(
                Diag::error(format!(
                    "boot_iso needs the proxmox plugin >= 1.2.0, but required_plugins pins proxmox to \"{}\"{pin}",
                    p.version.trim()
                ))
                .at(&b.file, Some(b.span.clone()))
                .with_help("raise the pin (e.g. \">= 1.2.0\"), or use the deprecated top-level iso_* keys that older plugins understand"),
            );
        }
    }
}

fn parse_ver(s: &str) -> Option<Vec<u64>> {
    let s = s.trim().trim_start_matches('v');
    let core = s.split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

fn cmp(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x.cmp(&y);
        }
    }
    std::cmp::Ordering::Equal
}

/// Go-version style constraint check (`>=`, `~>`, `=`, `!=`, `<`, `>`, `<=`, comma = and).
pub fn constraint_allows(constraint: &str, version: &str) -> bool {
    let Some(v) = parse_ver(version) else {
        return false;
    };
    constraint.split(',').all(|c| {
        let c = c.trim();
        if c.is_empty() {
            return true;
        }
        let (op, rest) = ["~>", ">=", "<=", "!=", "=", ">", "<"]
            .iter()
            .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", c));
        let Some(want) = parse_ver(rest) else {
            return true;
        };
        use std::cmp::Ordering::*;
        match op {
            "=" => cmp(&v, &want) == Equal,
            "!=" => cmp(&v, &want) != Equal,
            ">" => cmp(&v, &want) == Greater,
            "<" => cmp(&v, &want) == Less,
            ">=" => cmp(&v, &want) != Less,
            "<=" => cmp(&v, &want) != Greater,
            _ => {
                // ~> 1.1.3 means >= 1.1.3, < 1.2.0; ~> 1 means >= 1, < 2
                if cmp(&v, &want) == Less {
                    return false;
                }
                let mut upper = want.clone();
                if upper.len() > 1 {
                    upper.pop();
                }
                let last = upper.len() - 1;
                upper[last] += 1;
                let prefix_len = upper.len();
                cmp(&v[..prefix_len.min(v.len())], &upper) == Less
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::constraint_allows;

    #[test]
    fn pessimistic_constraints() {
        assert!(constraint_allows("~> 1.1.3", "1.1.9"));
        assert!(!constraint_allows("~> 1.1.3", "1.2.0"));
        assert!(constraint_allows(" ~> 1.2.2", "1.2.4"));
        assert!(constraint_allows("~> 1", "1.2.4"));
        assert!(constraint_allows(">= 1.1.5", "1.2.4"));
        assert!(constraint_allows("v1.2.4", "1.2.4"));
        assert!(!constraint_allows("= 1.1.8", "1.2.0"));
        assert!(constraint_allows(">=1.1.2", "1.2.0"));
    }
}
