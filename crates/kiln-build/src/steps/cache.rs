//! The steps of `kiln build --cache-install` (see [`crate::cache`]):
//!
//! * `cache_lookup` (after preflight): computes the key, finds the base template
//!   `kiln-cache-<12 hex>` with that key on the build's node and checks it (a template, its disks
//!   on storage). A base whose disk is missing is removed (it can never be used again); a VM with a
//!   base's name that is not a template (an interrupted layer) is ignored with a warning.
//! * `cache_clone` (hit only): clones the base (linked, else full) to the build's vm_id/vm_name
//!   with the plan's settings. If PVE refuses, the half-made clone is destroyed, the base is left
//!   in place with a warning, and the build goes on as a full build. After a successful clone the
//!   iso, http_server, firewall, create_vm and boot_command steps are skipped.
//! * `cache_layer` (miss only, after wait_guest): in the guest `cloud-init clean --logs`, an empty
//!   `/etc/machine-id`, no SSH host keys; an ACPI shutdown; a full clone of the stopped VM into the
//!   base, converted to a template; then the build's VM starts again and the guest is waited for
//!   again (cloud-init runs as a new instance: new machine-id and host keys). A base that is not
//!   complete is destroyed by the step's cleanup (also on Ctrl-C); a complete one is never
//!   destroyed by the build.

use super::finish::boot_without;
use super::vm::{remove_vm, vm_key, vm_manual_commands, CLEANUP_BACKOFF};
use super::{pve_err, BuildState, StepCreateVm, StepError, StepShutdown, StepWaitGuest};
use crate::cache::{self, Base, CacheKey};
use crate::params::{assign_slots, create_params, IsoAttach};
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_pve::{CloneOptions, VmConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The install-cache state of one build.
#[derive(Debug, Clone)]
pub struct CacheState {
    pub key: CacheKey,
    /// The usable base found by `cache_lookup`.
    pub hit: Option<Base>,
}

/// Set when the build's VM is a clone of the base: the install steps are skipped.
#[derive(Debug, Clone, Default)]
pub struct SkipFlag(Arc<AtomicBool>);

impl SkipFlag {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::SeqCst)
    }
}

pub struct StepCacheLookup;

/// The size of each `iso_file` volume of the run (for the key), from PVE.
async fn iso_file_sizes(
    st: &BuildState,
) -> Result<std::collections::BTreeMap<String, u64>, StepError> {
    let client = st.client()?;
    let cfg = &st.run.config;
    let mut out = std::collections::BTreeMap::new();
    for iso in std::iter::once(&cfg.boot_iso).chain(cfg.additional_iso_files.iter()) {
        let Some(f) = iso.iso_file.as_deref().filter(|f| !f.is_empty()) else {
            continue;
        };
        let storage = f.split(':').next().unwrap_or_default();
        let content = client
            .storage_content(&st.node, storage, Some("iso"))
            .await
            .map_err(|e| pve_err(&format!("install cache: reading {f}'s size"), e))?;
        if let Some(c) = content.into_iter().find(|c| c.volid == f) {
            out.insert(f.to_string(), c.size);
        }
    }
    Ok(out)
}

/// Why a base cannot be used, or `Ok` (its disks are all on storage).
async fn check_base_disks(
    client: &kiln_pve::Client,
    node: &str,
    conf: &VmConfig,
) -> Result<Result<(), String>, kiln_pve::Error> {
    let disks: Vec<String> = conf
        .0
        .iter()
        .filter(|(k, v)| cache::is_disk(k, v))
        .map(|(_, v)| v.split(',').next().unwrap_or_default().to_string())
        .collect();
    if disks.is_empty() {
        return Ok(Err("it has no disk".into()));
    }
    for volid in disks {
        let Some((storage, _)) = volid.split_once(':') else {
            return Ok(Err(format!("its disk {volid:?} is not a storage volume")));
        };
        let content = client.storage_content(node, storage, None).await?;
        if !content.iter().any(|c| c.volid == volid) {
            return Ok(Err(format!("its disk {volid} is missing on storage")));
        }
    }
    Ok(Ok(()))
}

#[async_trait]
impl Step<BuildState> for StepCacheLookup {
    fn name(&self) -> &str {
        "cache_lookup"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let sizes = iso_file_sizes(st).await?;
        let run = st.run.clone();
        let dir = st.template_dir.clone();
        let key = tokio::task::spawn_blocking(move || {
            cache::compute_key(&run, &dir, &|f| sizes.get(f).copied())
        })
        .await
        .map_err(|e| StepError::failed(format!("install cache: computing the key: {e}")))?
        .map_err(|e| StepError::failed(format!("install cache: computing the key: {e}")))?;
        let name = key.base_name();
        cx.ui.say(&format!(
            "Install cache key {} (base template {name})",
            key.display()
        ));
        let client = st.client()?;
        let bases = cache::list_bases(&client)
            .await
            .map_err(|e| pve_err("install cache: listing the base templates", e))?;
        let mut hit = None;
        for b in bases
            .into_iter()
            .filter(|b| b.name == name && b.info.key.as_deref() == Some(key.hex.as_str()))
        {
            if !b.template {
                cx.ui.error(&format!(
                    "Warning: VM {} ({}) has the base's name but is not a template (a layer that was interrupted); ignored — remove it with `kiln cache prune`",
                    b.vmid, b.name
                ));
                continue;
            }
            if b.node != st.node {
                cx.ui.message(&format!(
                    "Base template {} is on node {}, not {}: not used",
                    b.vmid, b.node, st.node
                ));
                continue;
            }
            let conf = client
                .qemu_config(&b.node, b.vmid, false)
                .await
                .map_err(|e| pve_err("install cache: reading the base template", e))?;
            match check_base_disks(&client, &b.node, &conf)
                .await
                .map_err(|e| pve_err("install cache: checking the base's disks", e))?
            {
                Ok(()) => {
                    hit = Some(b);
                    break;
                }
                Err(why) => {
                    cx.ui.error(&format!(
                        "Install cache: base template {} is broken ({why}); removing it and doing a full build",
                        b.vmid
                    ));
                    remove_vm(
                        cx,
                        &client,
                        &b.node,
                        b.vmid,
                        &st.wait_opts(),
                        &CLEANUP_BACKOFF,
                        Duration::from_secs(15),
                    )
                    .await;
                }
            }
        }
        match &hit {
            Some(b) => cx.ui.say(&format!(
                "Install cache hit: base template {} ({}) — skipping ISO, HTTP server, create, boot command and install",
                b.vmid, b.name
            )),
            None => cx.ui.say(&format!(
                "Install cache miss: full build; the installed system is kept as base template {name} after wait_guest"
            )),
        }
        st.cache = Some(CacheState { key, hit });
        Ok(())
    }
}

/// The config applied to a clone of the base: the plan's settings as at create (without disks,
/// ISOs and pool), the tags replaced, and the CD-ROM drives the fresh build's finalize would
/// remove (`unmount` without `keep_cdrom_device`) removed now, with the boot order to match.
pub fn hit_params(
    cfg: &kiln_config::model::ProxmoxIsoConfig,
    vmid: u32,
    name: &str,
    base_conf: &VmConfig,
) -> Result<Vec<(String, String)>, String> {
    let mut isos = vec![IsoAttach::boot(&cfg.boot_iso, "ISO".into())];
    let mut confs = vec![&cfg.boot_iso];
    for a in &cfg.additional_iso_files {
        isos.push(IsoAttach::additional(a, "ISO".into()));
        confs.push(a);
    }
    let (disk_slots, iso_slots) = assign_slots(&cfg.disks, &isos)?;
    let drive_slots: Vec<&String> = disk_slots
        .iter()
        .chain(iso_slots.iter())
        .map(|(s, _)| s)
        .collect();
    let mut p: Vec<(String, String)> = create_params(cfg, vmid, name, &isos)?
        .into_iter()
        .filter(|(k, _)| {
            !drive_slots.contains(&k) && !matches!(k.as_str(), "pool" | "efidisk0" | "tpmstate0")
        })
        .collect();
    let mut delete: Vec<String> = Vec::new();
    for (slot, i) in &iso_slots {
        let c = confs[*i];
        if c.unmount && !c.keep_cdrom_device && base_conf.get(slot).is_some() {
            delete.push(slot.clone());
        }
    }
    if cfg.tags.as_deref().is_none_or(str::is_empty) && base_conf.get("tags").is_some() {
        delete.push("tags".into());
    }
    if let Some(b) = p.iter_mut().find(|(k, _)| k == "boot") {
        if let Some(new) = boot_without(&b.1, &delete) {
            b.1 = new;
        }
    }
    if !delete.is_empty() {
        p.push(("delete".into(), delete.join(",")));
    }
    for (k, v) in p.iter_mut() {
        if k == "description" {
            *v = "kiln ephemeral build VM (from the install cache)".into();
        }
    }
    Ok(p)
}

pub struct StepCacheClone {
    skip: SkipFlag,
    made: bool,
}

impl StepCacheClone {
    pub fn new(skip: SkipFlag) -> Self {
        StepCacheClone { skip, made: false }
    }

    /// Clone `base` to `vmid` (linked, else full) and configure it. On error the half-made clone
    /// may exist: the caller removes it.
    async fn clone_base(
        &self,
        cx: &StepContext,
        st: &mut BuildState,
        base: &Base,
        vmid: u32,
        name: &str,
    ) -> Result<(), String> {
        let client = st.client().map_err(|e| e.to_string())?;
        let cfg = st.run.config.clone();
        let mut last = String::new();
        for full in [false, true] {
            let opts = CloneOptions {
                newid: vmid,
                name: Some(name.to_string()),
                full: Some(full),
                storage: None,
                target: None,
                pool: cfg.pool.clone().filter(|p| !p.is_empty()),
                description: None,
            };
            st.vmid = Some(vmid);
            st.vm_created = true;
            crate::leftovers::add(
                &vm_key(&st.node, vmid),
                format!("VM {vmid} ({name}): {}", vm_manual_commands(&st.node, vmid)),
            );
            let r = match client.qemu_clone(&base.node, base.vmid, &opts).await {
                Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    cx.ui.message(&format!(
                        "Cloned base template {} to VM {vmid} ({name}) — {} clone",
                        base.vmid,
                        if full { "full" } else { "linked" }
                    ));
                    last.clear();
                    break;
                }
                Err(e) if e.to_string().contains("already exists") => {
                    st.vm_created = false; // not ours
                    crate::leftovers::remove(&vm_key(&st.node, vmid));
                    return Err(format!(
                        "VM {vmid} already exists: pick another vm_id, or pass -force to replace a template ({e})"
                    ));
                }
                Err(e) => {
                    last = format!(
                        "{} clone refused: {e}",
                        if full { "full" } else { "linked" }
                    );
                    if !full {
                        cx.ui.message(&format!("{last}; trying a full clone"));
                        let gone = remove_vm(
                            cx,
                            &client,
                            &st.node,
                            vmid,
                            &st.wait_opts(),
                            &CLEANUP_BACKOFF,
                            Duration::from_secs(15),
                        )
                        .await;
                        if !gone {
                            return Err(last);
                        }
                        st.vm_created = false;
                    }
                }
            }
        }
        if !last.is_empty() {
            return Err(last);
        }
        let conf = client
            .qemu_config(&st.node, vmid, false)
            .await
            .map_err(|e| format!("reading the clone's config: {e}"))?;
        let params = hit_params(&cfg, vmid, name, &conf)?;
        task(
            &client,
            st,
            "updating the clone's config".to_string(),
            client.qemu_config_update_async(&st.node, vmid, &params),
        )
        .await?;
        Ok(())
    }
}

/// Start a PVE task and wait for it; a failure of either carries `what`.
async fn task<E: std::fmt::Display>(
    client: &kiln_pve::Client,
    st: &BuildState,
    what: String,
    started: impl std::future::Future<Output = Result<Option<kiln_pve::Upid>, E>>,
) -> Result<(), String> {
    let t = started.await.map_err(|e| format!("{what}: {e}"))?;
    client
        .wait_opt(t, &st.wait_opts())
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(())
}

#[async_trait]
impl Step<BuildState> for StepCacheClone {
    fn name(&self) -> &str {
        "cache_clone"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let Some(base) = st.cache.as_ref().and_then(|c| c.hit.clone()) else {
            return Ok(());
        };
        if st.flags.force {
            StepCreateVm.force_remove(cx, st).await?;
        }
        let client = st.client()?;
        let cfg = st.run.config.clone();
        let name = cfg
            .vm_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(kiln_config::model::default_vm_name);
        let vmid = match cfg.vm_id.filter(|i| *i > 0) {
            Some(i) => i,
            None => client
                .next_id()
                .await
                .map_err(|e| pve_err("getting a free VM id", e))?,
        };
        self.made = true;
        match self.clone_base(cx, st, &base, vmid, &name).await {
            Ok(()) => {
                st.vm_name = name;
                self.skip.set(true);
                Ok(())
            }
            Err(why) => {
                cx.ui.error(&format!(
                    "Install cache: base template {} could not be used ({why}); it is left in place (check it, or remove it with `kiln cache prune`) — doing a full build",
                    base.vmid
                ));
                if st.vm_created {
                    let gone = remove_vm(
                        cx,
                        &client,
                        &st.node,
                        vmid,
                        &st.wait_opts(),
                        &CLEANUP_BACKOFF,
                        Duration::from_secs(15),
                    )
                    .await;
                    if !gone {
                        return Err(StepError::failed(format!(
                            "install cache: the half-made clone {vmid} of base {} could not be removed; not going on with a full build (delete it by hand: {})",
                            base.vmid,
                            vm_manual_commands(&st.node, vmid)
                        )));
                    }
                    crate::leftovers::remove(&vm_key(&st.node, vmid));
                }
                st.vm_created = false;
                st.vmid = None;
                self.made = false;
                if let Some(c) = st.cache.as_mut() {
                    c.hit = None;
                }
                Ok(())
            }
        }
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
        if self.made {
            super::vm::cleanup_vm(cx, st, outcome).await;
        }
    }
}

/// Runs the inner step unless the build's VM came from the install cache.
pub struct UnlessCached {
    inner: Box<dyn Step<BuildState>>,
    skip: SkipFlag,
    name: String,
    skipped_name: String,
    ran: bool,
}

impl UnlessCached {
    /// `step`, skipped when the build's VM is a clone of the cached install.
    pub fn wrap<T: Step<BuildState> + 'static>(
        step: T,
        skip: &SkipFlag,
    ) -> Box<dyn Step<BuildState>> {
        Box::new(UnlessCached::new(Box::new(step), skip.clone()))
    }

    pub fn new(inner: Box<dyn Step<BuildState>>, skip: SkipFlag) -> Self {
        UnlessCached {
            name: inner.name().to_string(),
            skipped_name: format!("{} (skipped: cached install)", inner.name()),
            inner,
            skip,
            ran: false,
        }
    }
}

#[async_trait]
impl Step<BuildState> for UnlessCached {
    fn name(&self) -> &str {
        if self.skip.get() && !self.ran {
            &self.skipped_name
        } else {
            &self.name
        }
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        if self.skip.get() {
            cx.ui.message(&format!(
                "Skipping {}: the VM is a clone of the cached install",
                self.name
            ));
            return Ok(());
        }
        self.ran = true;
        self.inner.run(cx, st).await
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
        if self.ran {
            self.inner.cleanup(cx, st, outcome).await;
        }
    }
}

/// What runs in the guest at the layer boundary (as root).
pub const BOUNDARY_SCRIPT: &str = "set -e; \
command -v cloud-init >/dev/null 2>&1 || { echo \"kiln: no cloud-init in the guest\" >&2; exit 3; }; \
cloud-init status --wait >/dev/null 2>&1 || true; \
cloud-init clean --logs; \
truncate -s 0 /etc/machine-id; \
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi; \
rm -f /etc/ssh/ssh_host_*; \
sync";

/// The boundary command for `user` (through `sudo -n` unless root).
pub fn boundary_command(user: &str) -> String {
    if user == "root" {
        format!("sh -c '{BOUNDARY_SCRIPT}'")
    } else {
        format!("sudo -n sh -c '{BOUNDARY_SCRIPT}'")
    }
}

pub struct StepCacheLayer {
    skip: SkipFlag,
    /// The base being made (destroyed by cleanup unless `done`).
    half: Option<(String, u32)>,
    done: bool,
}

impl StepCacheLayer {
    pub fn new(skip: SkipFlag) -> Self {
        StepCacheLayer {
            skip,
            half: None,
            done: false,
        }
    }

    /// Clone the stopped build VM into the base and make it a template. Errors leave `half` set.
    async fn make_base(&mut self, cx: &StepContext, st: &BuildState) -> Result<u32, String> {
        let client = st.client().map_err(|e| e.to_string())?;
        let cache = st.cache.as_ref().ok_or("internal: no cache state")?;
        let vmid = st.vmid().map_err(|e| e.to_string())?;
        let name = cache.key.base_name();
        let base = client
            .next_id()
            .await
            .map_err(|e| format!("getting a free VM id: {e}"))?;
        self.half = Some((st.node.clone(), base));
        crate::leftovers::add(
            &vm_key(&st.node, base),
            format!(
                "half-made install-cache base {base} ({name}): {}",
                vm_manual_commands(&st.node, base)
            ),
        );
        cx.ui
            .message(&format!("Full clone of VM {vmid} to {base} ({name})"));
        let opts = CloneOptions {
            newid: base,
            name: Some(name.clone()),
            full: Some(true),
            storage: None,
            target: None,
            pool: None,
            description: None,
        };
        task(
            &client,
            st,
            format!("cloning VM {vmid} to {base}"),
            client.qemu_clone(&st.node, vmid, &opts),
        )
        .await?;
        let conf = client
            .qemu_config(&st.node, base, false)
            .await
            .map_err(|e| format!("reading the base's config: {e}"))?;
        let desc = cache
            .key
            .description(&st.run.full_name(), &st.template_dir, cache::now_unix());
        let mut params = vec![
            ("description".to_string(), desc),
            ("tags".to_string(), cache::TAG.to_string()),
        ];
        // the ISOs may go away (generated ones are deleted after the build): empty drives
        for (k, v) in &conf.0 {
            if v.contains("media=cdrom") && !v.starts_with("none") && !v.contains("cloudinit") {
                params.push((k.clone(), "none,media=cdrom".into()));
            }
        }
        task(
            &client,
            st,
            format!("configuring the base {base}"),
            client.qemu_config_update_async(&st.node, base, &params),
        )
        .await?;
        task(
            &client,
            st,
            format!("converting the base {base} to a template"),
            client.qemu_template(&st.node, base, None),
        )
        .await?;
        Ok(base)
    }

    async fn destroy_half(&mut self, cx: &StepContext, st: &BuildState) {
        let Some((node, base)) = self.half.take() else {
            return;
        };
        let Ok(client) = st.client() else {
            return;
        };
        cx.ui
            .say(&format!("Removing the half-made install-cache base {base}"));
        if remove_vm(
            cx,
            &client,
            &node,
            base,
            &st.wait_opts(),
            &CLEANUP_BACKOFF,
            Duration::from_secs(15),
        )
        .await
        {
            crate::leftovers::remove(&vm_key(&node, base));
        }
    }
}

#[async_trait]
impl Step<BuildState> for StepCacheLayer {
    fn name(&self) -> &str {
        "cache_layer"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        if self.skip.get() || st.cache.is_none() {
            return Ok(());
        }
        let t0 = Instant::now();
        let user = st
            .run
            .config
            .communicator
            .ssh_username
            .clone()
            .unwrap_or_default();
        let Some(comm) = st.comm.as_ref() else {
            cx.ui.error("Warning: install cache: no SSH connection to the guest (communicator none?): the installed system is not cached");
            return Ok(());
        };
        cx.ui.say("Install cache: resetting the guest's identity (cloud-init clean, machine-id, SSH host keys)");
        let out = {
            use kiln_guest::Communicator;
            comm.exec_capture(&boundary_command(&user), &cx.cancel)
                .await
        };
        match out {
            Ok(o) if o.status.success() => {}
            Ok(_) if cx.cancel.is_cancelled() => return Err(StepError::Cancelled),
            Err(_) if cx.cancel.is_cancelled() => return Err(StepError::Cancelled),
            Ok(o) => {
                let why = o
                    .stderr
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string();
                cx.ui.error(&format!(
                    "Warning: install cache: the guest's identity could not be reset ({}: {why}); the installed system is not cached (the cache needs cloud-init and sudo without a password in the guest)",
                    o.status
                ));
                return Ok(());
            }
            Err(e) => {
                cx.ui.error(&format!(
                    "Warning: install cache: the guest's identity could not be reset ({e}); the installed system is not cached"
                ));
                return Ok(());
            }
        }
        StepShutdown.run(cx, st).await?;
        let t_stop = t0.elapsed();
        cx.ui.say(&format!(
            "Install cache: keeping the installed system as base template {}",
            st.cache
                .as_ref()
                .map(|c| c.key.base_name())
                .unwrap_or_default()
        ));
        let made = self.make_base(cx, st).await;
        if cx.cancel.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let t_base = t0.elapsed();
        match made {
            Ok(base) => {
                self.done = true;
                self.half = None;
                crate::leftovers::remove(&vm_key(&st.node, base));
                cx.ui.message(&format!(
                    "Base template {base} made in {}",
                    crate::ui::fmt_duration(t_base - t_stop)
                ));
            }
            Err(why) => {
                cx.ui.error(&format!(
                    "Warning: install cache: the base template could not be made ({why}); the build goes on without it"
                ));
                self.destroy_half(cx, st).await;
            }
        }
        let client = st.client()?;
        let vmid = st.vmid()?;
        cx.ui
            .say("Starting VM again (cloud-init runs as a new instance)");
        let t = client
            .qemu_start(&st.node, vmid)
            .await
            .map_err(|e| pve_err("Error starting VM", e))?;
        client
            .wait_opt(t, &st.wait_opts())
            .await
            .map_err(|e| pve_err("Error starting VM", e))?;
        StepWaitGuest.run(cx, st).await?;
        cx.ui.message(&format!(
            "Install cache layer: reset + shutdown {}, base {}, boot + wait {}",
            crate::ui::fmt_duration(t_stop),
            crate::ui::fmt_duration(t_base - t_stop),
            crate::ui::fmt_duration(t0.elapsed() - t_base)
        ));
        Ok(())
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, _outcome: Outcome) {
        // a base that is not complete is of no use to anyone, whatever the outcome
        if !self.done {
            self.destroy_half(cx, st).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_config::model::ProxmoxIsoConfig;
    use std::collections::BTreeMap;

    fn conf(pairs: &[(&str, &str)]) -> VmConfig {
        VmConfig(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn the_clone_of_a_base_gets_the_plans_settings_and_loses_unmounted_cdroms() {
        let mut cfg = ProxmoxIsoConfig {
            memory: 1024,
            boot: Some("order=scsi0;ide2".into()),
            ..ProxmoxIsoConfig::default()
        };
        cfg.boot_iso.unmount = true;
        cfg.disks.push(kiln_config::model::Disk {
            r#type: kiln_config::model::Bus::Scsi,
            storage_pool: "local-lvm".into(),
            storage_pool_type: None,
            disk_size: "8G".into(),
            format: kiln_config::model::DiskFormat::Raw,
            cache_mode: kiln_config::model::CacheMode::None,
            io_thread: false,
            asyncio: None,
            discard: false,
            ssd: false,
            exclude_from_backup: false,
        });
        let base = conf(&[
            ("scsi0", "local-lvm:base-9-disk-0,size=8G"),
            ("ide2", "none,media=cdrom"),
            ("tags", "kiln-cache"),
        ]);
        let p = hit_params(&cfg, 9000, "b", &base).unwrap();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("memory"), Some("1024"));
        assert_eq!(get("name"), Some("b"));
        assert_eq!(get("scsi0"), None, "no new disk is allocated");
        assert_eq!(get("ide2"), None);
        assert_eq!(get("delete"), Some("ide2,tags"));
        assert_eq!(get("boot"), Some("order=scsi0"));
        cfg.tags = Some("a;b".into());
        cfg.boot_iso.keep_cdrom_device = true;
        let p = hit_params(&cfg, 9000, "b", &base).unwrap();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("tags"), Some("a;b"));
        assert_eq!(get("delete"), None);
        assert_eq!(get("boot"), Some("order=scsi0;ide2"));
    }

    #[test]
    fn the_boundary_runs_as_root() {
        assert!(boundary_command("packer").starts_with("sudo -n sh -c '"));
        assert!(boundary_command("root").starts_with("sh -c '"));
        assert!(!BOUNDARY_SCRIPT.contains('\''));
        for part in [
            "cloud-init clean --logs",
            "truncate -s 0 /etc/machine-id",
            "rm -f /etc/ssh/ssh_host_*",
        ] {
            assert!(BOUNDARY_SCRIPT.contains(part), "{part}");
        }
    }
}
