//! The `manifest` post-processor, in Packer's format:
//! `{"builds":[{"name","builder_type","build_time","files","artifact_id","packer_run_uuid","custom_data"}],"last_run_uuid"}`.
//! Entries are appended to an existing file.

use kiln_config::model::Manifest;
use serde_json::{json, Value};
use std::path::Path;

pub struct ManifestEntry<'a> {
    pub name: &'a str,
    pub builder_type: &'a str,
    pub artifact_id: String,
    pub run_uuid: &'a str,
    pub build_time: u64,
}

pub fn write_manifest(
    m: &Manifest,
    base: &Path,
    e: &ManifestEntry<'_>,
) -> Result<std::path::PathBuf, String> {
    let out = if m.output.is_empty() {
        "packer-manifest.json"
    } else {
        m.output.as_str()
    };
    let path = if Path::new(out).is_absolute() {
        Path::new(out).to_path_buf()
    } else {
        base.join(out)
    };
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => serde_json::from_str(&t)
            .map_err(|err| format!("{}: not a manifest: {err}", path.display()))?,
        _ => json!({ "builds": [], "last_run_uuid": "" }),
    };
    let custom: serde_json::Map<String, Value> = m
        .custom_data
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut b = json!({
        "name": e.name,
        "builder_type": e.builder_type,
        "build_time": if m.strip_time { 0 } else { e.build_time },
        "files": null,
        "artifact_id": e.artifact_id,
        "packer_run_uuid": e.run_uuid,
        "custom_data": if custom.is_empty() { Value::Null } else { Value::Object(custom) },
    });
    if m.strip_time {
        if let Some(o) = b.as_object_mut() {
            o.remove("build_time");
        }
    }
    match doc.get_mut("builds").and_then(Value::as_array_mut) {
        Some(a) => a.push(b),
        None => doc["builds"] = json!([b]),
    }
    doc["last_run_uuid"] = json!(e.run_uuid);
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_packer_format() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let m = Manifest {
            output: "out/m.json".into(),
            strip_path: false,
            strip_time: false,
            custom_data: Default::default(),
        };
        let e = ManifestEntry {
            name: "ubuntu",
            builder_type: "proxmox-iso",
            artifact_id: "101".into(),
            run_uuid: "u1",
            build_time: 5,
        };
        write_manifest(&m, dir.path(), &e).ok();
        let e2 = ManifestEntry {
            run_uuid: "u2",
            artifact_id: "102".into(),
            ..e
        };
        let p = write_manifest(&m, dir.path(), &e2).unwrap_or_default();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(v["builds"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["builds"][1]["artifact_id"], "102");
        assert_eq!(v["builds"][0]["builder_type"], "proxmox-iso");
        assert_eq!(v["last_run_uuid"], "u2");
    }
}
