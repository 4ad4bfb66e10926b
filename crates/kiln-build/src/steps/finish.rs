//! Finish the VM: shut it down (ACPI through the API), then one config update (eject/remove
//! ISOs, add the cloud-init drive, drop `unusedN` disks and stale cloud-init settings, set the
//! final name/description/tags), then convert it to a template.

use super::{pve_err, BuildState, StepError};
use crate::params::{first_free_slot, storage_of};
use crate::pipeline::{Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::Bus;
use kiln_pve::{ShutdownOptions, VmConfig};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Longest pause between two polls of the shutdown task.
pub const SHUTDOWN_POLL: Duration = Duration::from_millis(250);

pub struct StepShutdown;

#[async_trait]
impl Step<BuildState> for StepShutdown {
    fn name(&self) -> &str {
        "shutdown"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        let vmid = st.vmid()?;
        if let Some(c) = st.comm.take() {
            c.disconnect().await;
        }
        let limit = st.run.config.task_timeout.max(Duration::from_secs(180));
        cx.ui.say("Stopping VM (ACPI shutdown through the API)");
        let t0 = Instant::now();
        let opts = ShutdownOptions {
            timeout: Some(limit.as_secs() as u32),
            force_stop: false,
        };
        let task = client
            .qemu_shutdown(&st.node, vmid, &opts)
            .await
            .map_err(|e| pve_err("Error shutting down the VM", e))?;
        // the guest powers off on its own clock: poll tightly (25 ms doubling to 250 ms), so the
        // build goes on within a quarter of a second of the power-off
        let wait = kiln_pve::WaitOptions {
            timeout: limit + Duration::from_secs(30),
            poll_interval: SHUTDOWN_POLL,
            ..st.wait_opts()
        };
        client.wait_opt(task, &wait).await.map_err(|e| {
            pve_err("Error shutting down the VM (it did not power off; does the guest handle ACPI or run qemu-guest-agent?)", e)
        })?;
        // the task may end before QEMU exits
        loop {
            match client.qemu_status(&st.node, vmid).await {
                Ok(s) if !s.is_running() => break,
                _ if t0.elapsed() > limit => {
                    return Err(StepError::failed(format!(
                        "VM {vmid} still running {} after the shutdown request",
                        crate::ui::fmt_duration(limit)
                    )))
                }
                _ => cx.sleep(Duration::from_millis(100)).await?,
            }
        }
        cx.ui.message(&format!(
            "VM stopped after {}",
            crate::ui::fmt_duration(t0.elapsed())
        ));
        Ok(())
    }
}

/// The final config change (pure: computed from the current config).
pub fn finalize_params(st: &BuildState, conf: &VmConfig) -> Result<Vec<(String, String)>, String> {
    let cfg = &st.run.config;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    let keys: Vec<String> = conf.0.keys().cloned().collect();
    let drive_re = |k: &str| Bus::parse_slot(k).is_some();
    // ISOs to unmount
    let mut unmounts: Vec<(String, bool)> = Vec::new(); // (volid, keep_cdrom_device)
    if let Some(b) = &st.boot_iso {
        if cfg.boot_iso.unmount {
            unmounts.push((b.clone(), cfg.boot_iso.keep_cdrom_device));
        }
    }
    for (i, v) in st.additional_isos.iter().enumerate() {
        if let Some(c) = cfg.additional_iso_files.get(i) {
            if c.unmount {
                unmounts.push((v.clone(), c.keep_cdrom_device));
            }
        }
    }
    for (volid, keep) in &unmounts {
        let slot = keys
            .iter()
            .find(|k| drive_re(k) && conf.get(k).is_some_and(|v| v.split(',').next() == Some(volid.as_str())))
            .ok_or_else(|| format!("Cannot eject ISO from cdrom drive, {volid} is not present or not a cdrom media"))?;
        if *keep {
            params.push((slot.clone(), "none,media=cdrom".into()));
        } else {
            delete.push(slot.clone());
        }
    }
    // stale cloud-init drive and settings (matter for clones)
    for k in &keys {
        let v = conf.get(k).unwrap_or_default();
        if drive_re(k) && v.contains("cloudinit") && v.contains("media=cdrom") {
            delete.push(k.clone());
        }
        let ci = [
            "cipassword",
            "ciuser",
            "nameserver",
            "searchdomain",
            "sshkeys",
        ]
        .contains(&k.as_str())
            || (k.starts_with("ipconfig") && k[8..].chars().all(|c| c.is_ascii_digit()));
        if ci {
            delete.push(k.clone());
        }
        if k.starts_with("unused") && k[6..].chars().all(|c| c.is_ascii_digit()) {
            delete.push(k.clone());
        }
    }
    if cfg.cloud_init {
        let pool = cfg
            .cloud_init_storage_pool
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(|| {
                // the storage of the boot disk (bootdisk key, else the first configured disk)
                let bd = conf.get("bootdisk").map(str::to_string).or_else(|| {
                    keys.iter().find(|k| drive_re(k) && !conf.get(k).unwrap_or_default().contains("media=cdrom")).cloned()
                })?;
                conf.get(&bd).and_then(storage_of)
            })
            .ok_or("cloud_init is set to true, but cloud_init_storage_pool is empty and could not be set automatically. set cloud_init_storage_pool in your configuration")?;
        let bus = cfg.cloud_init_disk_type.bus();
        let taken: BTreeSet<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !delete.iter().any(|d| d == k))
            .chain(params.iter().map(|(k, _)| k.as_str()))
            .collect();
        // slots being deleted in the same request are not reused (PVE applies deletes last)
        let taken: Vec<&str> = taken
            .into_iter()
            .chain(delete.iter().map(String::as_str))
            .collect();
        let slot = first_free_slot(bus, taken).ok_or_else(|| {
            format!("Found no free controller of type {bus} for a cloud-init cdrom")
        })?;
        params.push((slot, format!("{pool}:cloudinit")));
        if cfg.cloud_init_disable_upgrade_packages {
            // cloud-init's package upgrade on the clones' first boot, off
            params.push(("ciupgrade".into(), "0".into()));
        }
    }
    let name = cfg
        .template_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| st.vm_name.clone());
    params.push(("name".into(), name));
    if let Some(d) = cfg.template_description.clone().filter(|d| !d.is_empty()) {
        params.push(("description".into(), d));
    }
    delete.sort();
    delete.dedup();
    // PVE refuses a boot order naming a removed drive: drop removed drives from `order=`
    if let Some(boot) = conf.get("boot") {
        if let Some(new) = boot_without(boot, &delete) {
            params.push(("boot".into(), new));
        }
    }
    if !delete.is_empty() {
        params.push(("delete".into(), delete.join(",")));
    }
    Ok(params)
}

/// `order=scsi0;ide2;net0` without the `removed` devices; `None` when nothing changes.
pub fn boot_without(boot: &str, removed: &[String]) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = boot
        .split(',')
        .map(|part| match part.strip_prefix("order=") {
            Some(order) => {
                let kept: Vec<&str> = order
                    .split(';')
                    .filter(|d| !removed.iter().any(|r| r == d))
                    .collect();
                if kept.len() != order.split(';').count() {
                    changed = true;
                }
                format!("order={}", kept.join(";"))
            }
            None => part.to_string(),
        })
        .filter(|p| p != "order=")
        .collect();
    changed.then(|| parts.join(","))
}

pub struct StepFinalize;

#[async_trait]
impl Step<BuildState> for StepFinalize {
    fn name(&self) -> &str {
        "finalize"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        let vmid = st.vmid()?;
        let conf = client
            .qemu_config(&st.node, vmid, false)
            .await
            .map_err(|e| pve_err("reading the VM config", e))?;
        let params = finalize_params(st, &conf).map_err(StepError::Failed)?;
        for (k, v) in &params {
            match k.as_str() {
                "delete" => cx.ui.message(&format!("Removing {v}")),
                "name" | "description" => {}
                _ if v.ends_with(":cloudinit") => cx.ui.say(&format!(
                    "Adding a cloud-init cdrom in storage pool {}",
                    v.trim_end_matches(":cloudinit")
                )),
                _ => cx.ui.message(&format!("Setting {k}={v}")),
            }
        }
        let t = client
            .qemu_config_update_async(&st.node, vmid, &params)
            .await
            .map_err(|e| pve_err("updating the VM config", e))?;
        client
            .wait_opt(t, &st.wait_opts())
            .await
            .map_err(|e| pve_err("updating the VM config", e))?;
        Ok(())
    }
}

pub struct StepTemplate;

#[async_trait]
impl Step<BuildState> for StepTemplate {
    fn name(&self) -> &str {
        "template"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        let vmid = st.vmid()?;
        if st.run.config.skip_convert_to_template {
            cx.ui
                .say("skip_convert_to_template set, skipping conversion to template");
            cx.ui.say("Resuming VM");
            let t = client
                .qemu_start(&st.node, vmid)
                .await
                .map_err(|e| pve_err("Error starting VM", e))?;
            client
                .wait_opt(t, &st.wait_opts())
                .await
                .map_err(|e| pve_err("Error starting VM", e))?;
        } else {
            cx.ui.say("Converting VM to template");
            let t = client
                .qemu_template(&st.node, vmid, None)
                .await
                .map_err(|e| pve_err("Error converting VM to template", e))?;
            client
                .wait_opt(t, &st.wait_opts())
                .await
                .map_err(|e| pve_err("Error converting VM to template", e))?;
        }
        st.artifact_id = Some(vmid);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::BuildFlags;
    use kiln_config::model::{ProxmoxIsoConfig, SourceRun};
    use std::collections::BTreeMap;

    fn state(cfg: ProxmoxIsoConfig) -> BuildState {
        let run = SourceRun {
            build_name: None,
            source_type: "proxmox-iso".into(),
            source_name: "t".into(),
            config: cfg,
            provisioners: vec![],
            post_processors: vec![],
            location: None,
        };
        let mut st = BuildState::new(run, "/t".into(), BuildFlags::default());
        st.vm_name = "kiln-x".into();
        st.boot_iso = Some("local:iso/g.iso".into());
        st
    }

    fn conf(pairs: &[(&str, &str)]) -> VmConfig {
        VmConfig(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    #[test]
    fn unmount_cloudinit_unused_and_name() {
        let mut cfg = ProxmoxIsoConfig {
            cloud_init: true,
            template_name: Some("tpl".into()),
            template_description: Some("d".into()),
            ..Default::default()
        };
        cfg.boot_iso.unmount = true;
        let st = state(cfg);
        let c = conf(&[
            ("scsi0", "local-lvm:vm-100-disk-0,size=8G"),
            ("ide2", "local:iso/g.iso,media=cdrom"),
            ("unused0", "local-lvm:vm-100-disk-1"),
            ("ciuser", "x"),
        ]);
        let p = finalize_params(&st, &c).unwrap_or_else(|e| panic!("{e}"));
        let get = |k: &str| p.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        assert_eq!(get("delete").as_deref(), Some("ciuser,ide2,unused0"));
        assert_eq!(get("ide0").as_deref(), Some("local-lvm:cloudinit"));
        assert_eq!(get("name").as_deref(), Some("tpl"));
        assert_eq!(get("description").as_deref(), Some("d"));
    }

    #[test]
    fn ciupgrade_off_with_the_cloud_init_drive() {
        let c = conf(&[("scsi0", "local-lvm:vm-100-disk-0,size=8G")]);
        let with = |cloud_init: bool, off: bool| {
            let st = state(ProxmoxIsoConfig {
                cloud_init,
                cloud_init_disable_upgrade_packages: off,
                ..Default::default()
            });
            let p = finalize_params(&st, &c).unwrap_or_else(|e| panic!("{e}"));
            p.iter()
                .find(|(k, _)| k == "ciupgrade")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(with(true, true).as_deref(), Some("0"));
        assert_eq!(with(true, false), None);
        assert_eq!(with(false, true), None);
    }

    #[test]
    fn boot_order_loses_removed_drives() {
        let r = vec!["ide2".to_string(), "ide3".to_string()];
        assert_eq!(
            boot_without("order=scsi0;ide2;net0", &r).as_deref(),
            Some("order=scsi0;net0")
        );
        assert_eq!(boot_without("order=scsi0;net0", &r), None);
        assert_eq!(boot_without("cdn", &r), None);
        let mut cfg = ProxmoxIsoConfig::default();
        cfg.boot_iso.unmount = true;
        let st = state(cfg);
        let p = finalize_params(
            &st,
            &conf(&[
                ("ide2", "local:iso/g.iso,media=cdrom"),
                ("boot", "order=scsi0;ide2"),
            ]),
        )
        .unwrap_or_default();
        assert!(
            p.contains(&("boot".to_string(), "order=scsi0".to_string())),
            "{p:?}"
        );
    }

    #[test]
    fn keep_cdrom_and_missing_iso() {
        let mut cfg = ProxmoxIsoConfig::default();
        cfg.boot_iso.unmount = true;
        cfg.boot_iso.keep_cdrom_device = true;
        let st = state(cfg);
        let p = finalize_params(&st, &conf(&[("ide2", "local:iso/g.iso,media=cdrom")]))
            .unwrap_or_default();
        assert!(p.contains(&("ide2".to_string(), "none,media=cdrom".to_string())));
        assert!(finalize_params(&st, &conf(&[]))
            .unwrap_err()
            .contains("Cannot eject ISO"));
    }
}
