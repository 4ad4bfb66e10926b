//! Preflight: check the configuration against the Proxmox VE server before anything is uploaded or
//! created — the node, every storage pool the config names (exists on the node, enabled, active,
//! has the content type the key needs), every NIC bridge, `iso_file`, `vm_id` (free unless
//! `-force`) and the privileges of the user/token. Every problem is one line naming the key, where
//! it was written and what the server offers; all problems are reported at once.
//!
//! The first step of every build after connecting; `kiln build --preflight` runs only this.

use super::{pve_err, BuildState, StepError};
use crate::pipeline::{Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::{IsoConfig, KeyLocations, ProxmoxIsoConfig};
use kiln_pve::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One problem found by preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path (`disks[0].storage_pool`).
    pub key: String,
    /// `file:line` where the key (or its block) was written.
    pub at: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(a) => write!(f, "{a}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

struct Found<'a> {
    locs: &'a KeyLocations,
    problems: Vec<Problem>,
}

impl Found<'_> {
    /// Record a problem for the first of `keys` that was written (else the nearest block of the
    /// first), named as written.
    fn add(&mut self, keys: &[String], message: String) {
        let written = keys.iter().find(|k| self.locs.get(k).is_some());
        let key = written.or(keys.first()).cloned().unwrap_or_default();
        let at = self
            .locs
            .nearest(&key)
            .map(|l| format!("{}:{}", l.file.display(), l.line));
        self.problems.push(Problem { key, at, message });
    }
}

/// What a storage pool is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// Read or upload ISOs: content `iso`.
    Iso,
    /// Allocate disks: content `images`.
    Images,
}

impl Need {
    fn content(self) -> &'static str {
        match self {
            Need::Iso => "iso",
            Need::Images => "images",
        }
    }
}

/// A storage pool the config names: (key paths as written, pool, need).
type PoolUse = (Vec<String>, String, Need);

fn iso_keys(prefix: &str, deprecated_top_level: bool, key: &str) -> Vec<String> {
    let mut v = vec![format!("{prefix}.{key}")];
    if deprecated_top_level {
        v.push(key.to_string());
    }
    v
}

/// Does this ISO get uploaded (or downloaded by PVE) into `iso_storage_pool`?
fn uploads(iso: &IsoConfig) -> bool {
    iso.iso_file.as_deref().is_none_or(str::is_empty)
        && (iso.iso_url.is_some()
            || !iso.iso_urls.is_empty()
            || !iso.cd_files.is_empty()
            || !iso.cd_content.is_empty())
}

fn isos(cfg: &ProxmoxIsoConfig) -> Vec<(String, bool, &IsoConfig)> {
    let mut v = Vec::new();
    let boot = &cfg.boot_iso;
    if boot.iso_file.is_some()
        || boot.iso_url.is_some()
        || !boot.iso_urls.is_empty()
        || !boot.cd_files.is_empty()
        || !boot.cd_content.is_empty()
    {
        v.push(("boot_iso".to_string(), true, boot));
    }
    for (i, a) in cfg.additional_iso_files.iter().enumerate() {
        v.push((format!("additional_iso_files[{i}]"), false, a));
    }
    v
}

fn pool_uses(cfg: &ProxmoxIsoConfig) -> Vec<PoolUse> {
    let mut v: Vec<PoolUse> = Vec::new();
    for (prefix, top, iso) in isos(cfg) {
        if let Some(f) = iso.iso_file.as_deref().filter(|f| !f.is_empty()) {
            if let Some((pool, _)) = f.split_once(':') {
                v.push((
                    iso_keys(&prefix, top, "iso_file"),
                    pool.to_string(),
                    Need::Iso,
                ));
            }
        } else if uploads(iso) {
            if let Some(p) = iso.iso_storage_pool.as_deref().filter(|p| !p.is_empty()) {
                v.push((
                    iso_keys(&prefix, top, "iso_storage_pool"),
                    p.to_string(),
                    Need::Iso,
                ));
            }
        }
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        if !d.storage_pool.is_empty() {
            v.push((
                vec![format!("disks[{i}].storage_pool")],
                d.storage_pool.clone(),
                Need::Images,
            ));
        }
    }
    if cfg.cloud_init {
        if let Some(p) = cfg
            .cloud_init_storage_pool
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            v.push((
                vec!["cloud_init_storage_pool".into()],
                p.into(),
                Need::Images,
            ));
        }
    }
    if let Some(p) = cfg
        .efi_config
        .as_ref()
        .and_then(|e| e.efi_storage_pool.as_deref())
        .filter(|p| !p.is_empty())
    {
        v.push((
            vec!["efi_config.efi_storage_pool".into()],
            p.into(),
            Need::Images,
        ));
    }
    if let Some(p) = cfg
        .tpm_config
        .as_ref()
        .and_then(|t| t.tpm_storage_pool.as_deref())
        .filter(|p| !p.is_empty())
    {
        v.push((
            vec!["tpm_config.tpm_storage_pool".into()],
            p.into(),
            Need::Images,
        ));
    }
    v
}

/// The `iso_file` a key path (`additional_iso_files[1].iso_file`, `iso_file`) belongs to.
fn iso_file_of(cfg: &ProxmoxIsoConfig, key: &str) -> Option<String> {
    for (prefix, _, iso) in isos(cfg) {
        if key.starts_with(&prefix) {
            return iso.iso_file.clone();
        }
    }
    cfg.boot_iso.iso_file.clone()
}

/// The privileges a build of `cfg` needs: path → (privileges that must all be held, or groups of
/// which one is enough). From PVE 9.1's API schema for the calls a build makes.
fn needed_privileges(cfg: &ProxmoxIsoConfig) -> BTreeMap<String, Vec<Vec<&'static str>>> {
    let mut m: BTreeMap<String, Vec<Vec<&'static str>>> = BTreeMap::new();
    let vms = match (&cfg.pool, cfg.vm_id) {
        (_, Some(id)) => format!("/vms/{id}"),
        _ => "/vms".to_string(),
    };
    let mut vm: Vec<Vec<&'static str>> = [
        "VM.Allocate",
        "VM.Audit",
        "VM.Config.Disk",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.HWType",
        "VM.Config.Options",
        "VM.PowerMgmt",
    ]
    .iter()
    .map(|p| vec![*p])
    .collect();
    if cfg.cloud_init {
        vm.push(vec!["VM.Config.Cloudinit"]);
    }
    if !cfg.boot_command.is_empty() {
        vm.push(vec!["VM.Console"]);
    }
    if cfg.qemu_agent {
        // PVE 9: VM.GuestAgent.*; PVE 8 and older: VM.Monitor
        vm.push(vec![
            "VM.GuestAgent.Audit",
            "VM.GuestAgent.Unrestricted",
            "VM.Monitor",
        ]);
    }
    m.insert(vms, vm);
    for (_, pool, need) in pool_uses(cfg) {
        let e = m.entry(format!("/storage/{pool}")).or_default();
        let want: Vec<&'static str> = match need {
            Need::Images => vec!["Datastore.AllocateSpace"],
            Need::Iso => vec!["Datastore.Audit", "Datastore.AllocateSpace"],
        };
        if !e.contains(&want) {
            e.push(want);
        }
    }
    for (_, _, iso) in isos(cfg) {
        if uploads(iso) {
            if let Some(p) = iso.iso_storage_pool.as_deref().filter(|p| !p.is_empty()) {
                let e = m.entry(format!("/storage/{p}")).or_default();
                if !e.contains(&vec!["Datastore.AllocateTemplate"]) {
                    e.push(vec!["Datastore.AllocateTemplate"]);
                }
            }
        }
    }
    m
}

/// The privileges held on `path`: those on the path itself, or propagated from an ancestor
/// (PVE's `/access/permissions` map: path → privilege → propagate flag).
fn held_on(
    perms: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    path: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (p, privs) in perms {
        let exact = p == path;
        let ancestor = p == "/"
            || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'));
        if !(exact || ancestor) {
            continue;
        }
        for (name, flag) in privs {
            let propagates = match flag {
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::Number(n) => n.as_i64() != Some(0),
                _ => true,
            };
            if exact || propagates {
                out.insert(name.clone());
            }
        }
    }
    out
}

fn list(v: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = v.into_iter().collect();
    if v.is_empty() {
        "(none)".to_string()
    } else if v.len() > 12 {
        format!("{}, … ({} in all)", v[..12].join(", "), v.len())
    } else {
        v.join(", ")
    }
}

/// Run every check against the server; the problems found (empty: all good).
pub async fn check(
    client: &Client,
    cfg: &ProxmoxIsoConfig,
    node: &str,
    force: bool,
    identity: &str,
) -> Result<Vec<Problem>, StepError> {
    let mut f = Found {
        locs: &cfg.key_locations,
        problems: Vec::new(),
    };
    // ---- node
    let nodes = client
        .nodes()
        .await
        .map_err(|e| pve_err("preflight: listing nodes", e))?;
    let node_ok = match nodes.iter().find(|n| n.node == node) {
        Some(n) if n.status.is_empty() || n.status == "online" => true,
        Some(n) => {
            f.add(
                &["node".into()],
                format!("node '{node}' is {}, not online", n.status),
            );
            false
        }
        None => {
            let mut names: Vec<String> = nodes.iter().map(|n| n.node.clone()).collect();
            names.sort();
            f.add(
                &["node".into()],
                format!("node '{node}' not found; available: {}", list(names)),
            );
            false
        }
    };
    if node_ok {
        // ---- storage pools
        let storages = client
            .storages(node, None)
            .await
            .map_err(|e| pve_err("preflight: listing storage", e))?;
        let mut names: Vec<String> = storages.iter().map(|s| s.storage.clone()).collect();
        names.sort();
        for (keys, pool, need) in pool_uses(cfg) {
            match storages.iter().find(|s| s.storage == pool) {
                None => f.add(
                    &keys,
                    format!(
                        "storage '{pool}' not found on node {node}; available: {}",
                        list(names.clone())
                    ),
                ),
                Some(s) if !s.enabled => f.add(
                    &keys,
                    format!("storage '{pool}' is disabled on node {node}"),
                ),
                Some(s) if !s.active => f.add(
                    &keys,
                    format!("storage '{pool}' is not active on node {node}"),
                ),
                Some(s) if !s.content.split(',').any(|c| c.trim() == need.content()) => {
                    let with: Vec<String> = storages
                        .iter()
                        .filter(|o| o.content.split(',').any(|c| c.trim() == need.content()))
                        .map(|o| o.storage.clone())
                        .collect();
                    f.add(
                        &keys,
                        format!(
                            "storage '{pool}' on node {node} does not hold '{}' content (it holds: {}); storages with '{}': {}",
                            need.content(),
                            if s.content.is_empty() { "nothing" } else { s.content.as_str() },
                            need.content(),
                            list(with)
                        ),
                    )
                }
                Some(_) => {
                    // ---- iso_file present
                    if need == Need::Iso && keys[0].ends_with("iso_file") {
                        if let Some(file) = iso_file_of(cfg, &keys[0]) {
                            let content = client
                                .storage_content(node, &pool, Some("iso"))
                                .await
                                .map_err(|e| pve_err("preflight: listing ISOs", e))?;
                            if !content.iter().any(|c| c.volid == file) {
                                let have = content.iter().map(|c| c.volid.clone());
                                f.add(
                                    &keys,
                                    format!(
                                        "ISO '{file}' not found in storage '{pool}' on node {node}; available: {}",
                                        list(have)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        // ---- bridges
        if !cfg.network_adapters.is_empty() {
            let ifaces = client
                .node_network(node, None)
                .await
                .map_err(|e| pve_err("preflight: listing network interfaces", e))?;
            let is_bridge = |k: &str| k == "bridge" || k == "OVSBridge";
            let mut bridges: Vec<String> = ifaces
                .iter()
                .filter(|i| is_bridge(&i.kind))
                .map(|i| i.iface.clone())
                .collect();
            bridges.sort();
            for (i, nic) in cfg.network_adapters.iter().enumerate() {
                let key = vec![format!("network_adapters[{i}].bridge")];
                match ifaces.iter().find(|x| x.iface == nic.bridge) {
                    Some(x) if is_bridge(&x.kind) => {}
                    Some(x) => f.add(
                        &key,
                        format!(
                            "'{}' on node {node} is a {} interface, not a bridge; bridges: {}",
                            nic.bridge,
                            x.kind,
                            list(bridges.clone())
                        ),
                    ),
                    None => f.add(
                        &key,
                        format!(
                            "bridge '{}' not found on node {node}; available: {}",
                            nic.bridge,
                            list(bridges.clone())
                        ),
                    ),
                }
            }
        }
    }
    // ---- vm_id
    if let Some(id) = cfg.vm_id.filter(|i| *i > 0) {
        let existing = client
            .find_vm_by_id(id)
            .await
            .map_err(|e| pve_err("preflight: looking up the VM id", e))?;
        if let Some(vm) = existing.as_ref().filter(|vm| force && !vm.template) {
            if !cfg.skip_convert_to_template {
                f.add(
                    &["vm_id".into()],
                    format!(
                        "VM {id}{} exists and is not a template: -force replaces only templates; pick a free vm_id",
                        vm.name.as_deref().map(|n| format!(" ('{n}')")).unwrap_or_default()
                    ),
                );
            }
        }
        if !force {
            if let Some(vm) = existing {
                let next = client.next_id().await.ok();
                f.add(
                    &["vm_id".into()],
                    format!(
                        "VM {id} already exists{}{}; pass -force to replace a template, or pick a free vm_id{}",
                        vm.name.as_deref().map(|n| format!(" ('{n}'")).map(|s| s + ")").unwrap_or_default(),
                        vm.node.as_deref().map(|n| format!(" on node {n}")).unwrap_or_default(),
                        next.map(|n| format!(" (next free: {n})")).unwrap_or_default()
                    ),
                );
            }
        }
    }
    // ---- privileges
    match client.permissions(None).await {
        Ok(perms) => {
            for (path, groups) in needed_privileges(cfg) {
                let held = held_on(&perms, &path);
                let missing: Vec<String> = groups
                    .iter()
                    .filter(|g| !g.iter().any(|p| held.contains(*p)))
                    .map(|g| g.join("|"))
                    .collect();
                if !missing.is_empty() {
                    f.add(
                        &["token".into(), "username".into()],
                        format!(
                            "{identity} lacks {} on {path}; it holds there: {}",
                            missing.join(", "),
                            list(held.into_iter())
                        ),
                    );
                }
            }
        }
        Err(e) => f.add(
            &["token".into(), "username".into()],
            format!("could not read the privileges of {identity} (GET /access/permissions): {e}"),
        ),
    }
    Ok(f.problems)
}

/// The preflight step.
pub struct StepPreflight;

#[async_trait]
impl Step<BuildState> for StepPreflight {
    fn name(&self) -> &str {
        "preflight"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        cx.ui
            .say("Preflight: checking the configuration against Proxmox VE...");
        let identity = match &client.options().auth {
            kiln_pve::Auth::Password { username, .. } => username.clone(),
            kiln_pve::Auth::Token { token_id, .. } => token_id.clone(),
        };
        let problems = check(&client, &st.run.config, &st.node, st.flags.force, &identity).await?;
        if problems.is_empty() {
            cx.ui.message(&format!(
                "Preflight OK: node {}, {} storage pool use(s), {} bridge(s), privileges of {identity}",
                st.node,
                pool_uses(&st.run.config).len(),
                st.run.config.network_adapters.len()
            ));
            return Ok(());
        }
        let n = problems.len();
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        Err(StepError::failed(format!(
            "preflight found {n} problem{} (nothing was created or uploaded):\n{}",
            if n == 1 { "" } else { "s" },
            lines.join("\n")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn perms(v: serde_json::Value) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn privileges_propagate_from_ancestors_only_when_flagged() {
        let p = perms(json!({
            "/": {"Sys.Audit": 0},
            "/vms": {"VM.Allocate": 1, "VM.Audit": 0},
            "/vmsx": {"VM.Console": 1},
            "/vms/100": {"VM.PowerMgmt": 0},
        }));
        let held = held_on(&p, "/vms/100");
        assert!(held.contains("VM.Allocate"), "propagated from /vms");
        assert!(held.contains("VM.PowerMgmt"), "on the path itself");
        assert!(!held.contains("VM.Audit"), "not propagated");
        assert!(!held.contains("Sys.Audit"), "not propagated from /");
        assert!(
            !held.contains("VM.Console"),
            "/vmsx is not an ancestor of /vms/100"
        );
    }

    #[test]
    fn pools_and_their_content_types_come_from_every_key_that_names_one() {
        let mut cfg = ProxmoxIsoConfig::default();
        cfg.boot_iso.iso_file = Some("nas:iso/u.iso".into());
        cfg.cloud_init = true;
        cfg.cloud_init_storage_pool = Some("ci".into());
        let uses = pool_uses(&cfg);
        assert_eq!(
            uses,
            vec![
                (
                    vec!["boot_iso.iso_file".to_string(), "iso_file".to_string()],
                    "nas".to_string(),
                    Need::Iso
                ),
                (
                    vec!["cloud_init_storage_pool".to_string()],
                    "ci".to_string(),
                    Need::Images
                ),
            ]
        );
        // an uploaded ISO needs Datastore.AllocateTemplate on its pool, a given iso_file does not
        let need = needed_privileges(&cfg);
        assert!(!need["/storage/nas"].contains(&vec!["Datastore.AllocateTemplate"]));
        cfg.boot_iso.iso_file = None;
        cfg.boot_iso.iso_url = Some("./u.iso".into());
        cfg.boot_iso.iso_storage_pool = Some("local".into());
        let need = needed_privileges(&cfg);
        assert!(need["/storage/local"].contains(&vec!["Datastore.AllocateTemplate"]));
    }
}
