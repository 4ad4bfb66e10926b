//! Human-readable summary of a [`BuildPlan`] (`kiln inspect`): variables (sensitive values
//! masked), locals, builds with their resolved non-default settings, provisioners and
//! post-processors in order.

use crate::model::{BuildPlan, VarSource};
use serde_json::Value as J;
use std::fmt::Write;

const MASK: &str = "<sensitive>";

fn dur(v: &J) -> Option<String> {
    let o = v.as_object()?;
    if o.len() != 2 {
        return None;
    }
    let secs = o.get("secs")?.as_u64()?;
    let nanos = o.get("nanos")?.as_u64()?;
    if nanos == 0 {
        return Some(if secs % 3600 == 0 && secs > 0 {
            format!("{}h", secs / 3600)
        } else if secs % 60 == 0 && secs > 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        });
    }
    let ms = secs as f64 * 1000.0 + nanos as f64 / 1e6;
    Some(format!("{ms}ms"))
}

fn compact(v: &J) -> String {
    if let Some(d) = dur(v) {
        return d;
    }
    match v {
        J::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, x)| format!("{k}: {}", compact(x)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        J::Array(a) => format!("[{}]", a.iter().map(compact).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

fn is_empty(v: &J) -> bool {
    match v {
        J::Null => true,
        J::Bool(b) => !b,
        J::String(s) => s.is_empty(),
        J::Array(a) => a.is_empty(),
        J::Object(o) => o.is_empty(),
        J::Number(_) => false,
    }
}

fn diff(out: &mut String, prefix: &str, v: &J, default: &J, indent: &str) {
    match (v, default) {
        (J::Object(a), J::Object(b)) if dur(v).is_none() => {
            for (k, x) in a {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff(out, &key, x, b.get(k).unwrap_or(&J::Null), indent);
            }
        }
        _ if v != default => {
            let _ = writeln!(out, "{indent}{prefix} = {}", compact(v));
        }
        _ => {}
    }
}

fn fields(out: &mut String, v: &J, indent: &str) {
    if let J::Object(m) = v {
        for (k, x) in m {
            if !is_empty(x) {
                let _ = writeln!(out, "{indent}{k} = {}", compact(x));
            }
        }
    }
}

/// Render the plan; every sensitive value is replaced by `<sensitive>`.
pub fn render(plan: &BuildPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Variables:");
    if plan.variables.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for v in &plan.variables {
        let value = match (&v.value, v.sensitive) {
            (None, _) => "<unset>".to_string(),
            (Some(_), true) => MASK.to_string(),
            (Some(x), false) => compact(&serde_json::to_value(x).unwrap_or(J::Null)),
        };
        let src = match v.source {
            VarSource::Default => "default",
            VarSource::Env => "env",
            VarSource::AutoVarFile => "auto var-file",
            VarSource::VarFile => "var-file",
            VarSource::Cli => "-var",
            VarSource::Unset => "unset",
        };
        let _ = writeln!(
            out,
            "  var.{}: {} = {}  ({src})",
            v.name, v.type_expr, value
        );
    }
    let _ = writeln!(out, "\nLocals:");
    if plan.locals.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for l in &plan.locals {
        let value = match (&l.value, l.sensitive) {
            (None, _) => "<not evaluated>".to_string(),
            (Some(_), true) => MASK.to_string(),
            (Some(x), false) => compact(&serde_json::to_value(x).unwrap_or(J::Null)),
        };
        let _ = writeln!(out, "  local.{} = {}", l.name, value);
    }
    if plan.required.required_version.is_some() || !plan.required.plugins.is_empty() {
        let _ = writeln!(out, "\nRequired:");
        if let Some(v) = &plan.required.required_version {
            let _ = writeln!(out, "  packer {v}");
        }
        for p in &plan.required.plugins {
            let _ = writeln!(out, "  plugin {} = {} {}", p.name, p.source, p.version);
        }
    }
    let _ = writeln!(out, "\nBuilds:");
    if plan.runs.is_empty() && plan.other_runs.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let default =
        serde_json::to_value(crate::model::ProxmoxIsoConfig::default()).unwrap_or(J::Null);
    for r in &plan.runs {
        let b = r
            .build_name
            .as_ref()
            .map(|b| format!("{b}: "))
            .unwrap_or_default();
        let _ = writeln!(out, "  {b}{}", r.full_name());
        let _ = writeln!(out, "    settings:");
        let cfg = serde_json::to_value(&r.config).unwrap_or(J::Null);
        diff(&mut out, "", &cfg, &default, "      ");
        steps(
            &mut out,
            &serde_json::to_value(&r.provisioners).unwrap_or(J::Null),
            "provisioners",
        );
        steps(
            &mut out,
            &serde_json::to_value(&r.post_processors).unwrap_or(J::Null),
            "post-processors",
        );
    }
    for r in &plan.other_runs {
        let b = r
            .build_name
            .as_ref()
            .map(|b| format!("{b}: "))
            .unwrap_or_default();
        let _ = writeln!(out, "  {b}{} (not built by kiln)", r.full_name());
        for (k, v) in &r.settings {
            let _ = writeln!(out, "      {k} = {}", compact(v));
        }
        steps(
            &mut out,
            &serde_json::to_value(&r.provisioners).unwrap_or(J::Null),
            "provisioners",
        );
        steps(
            &mut out,
            &serde_json::to_value(&r.post_processors).unwrap_or(J::Null),
            "post-processors",
        );
    }
    plan.mask(&out)
}

fn steps(out: &mut String, list: &J, title: &str) {
    let Some(items) = list.as_array() else { return };
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "    {title}:");
    for (i, p) in items.iter().enumerate() {
        let (ty, body) = match p
            .get("kind")
            .and_then(|k| k.as_object())
            .and_then(|k| k.iter().next())
        {
            Some((t, b)) => (t.clone(), b.clone()),
            None => ("?".into(), J::Null),
        };
        let loc = p
            .get("location")
            .and_then(|l| {
                Some(format!(
                    " ({}:{})",
                    l.get("file")?.as_str()?,
                    l.get("line")?
                ))
            })
            .unwrap_or_default();
        let _ = writeln!(out, "      {}. {}{loc}", i + 1, kebab(&ty));
        let mut common = serde_json::Map::new();
        for k in ["name", "pause_before", "max_retries", "timeout"] {
            if let Some(v) = p.get(k) {
                if !(is_empty(v) || dur(v).as_deref() == Some("0s") || v == &J::from(0)) {
                    common.insert(k.into(), v.clone());
                }
            }
        }
        fields(out, &J::Object(common), "         ");
        fields(out, &body, "         ");
    }
}

fn kebab(s: &str) -> String {
    match s {
        "Shell" => "shell".into(),
        "File" => "file".into(),
        "Ansible" => "ansible".into(),
        "AnsibleLocal" => "ansible-local".into(),
        "ShellLocal" => "shell-local".into(),
        "Breakpoint" => "breakpoint".into(),
        "Manifest" => "manifest".into(),
        other => other.to_lowercase(),
    }
}
