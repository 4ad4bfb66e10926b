//! Create the VM (every supported key → create params), with `vm_id` or `/cluster/nextid` and
//! `-force`; start it. The create step's cleanup stops and deletes the VM when the build failed.

use super::{pve_err, BuildState, StepError};
use crate::params::{create_params, IsoAttach};
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_pve::{DeleteVmOptions, ResourceType};
use std::time::Duration;

pub struct StepCreateVm;

impl StepCreateVm {
    async fn force_remove(&self, cx: &StepContext, st: &BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        let cfg = &st.run.config;
        cx.ui
            .say("Force set, checking for existing artifact on PVE cluster");
        let found = if let Some(id) = cfg.vm_id.filter(|i| *i > 0) {
            client
                .find_vm_by_id(id)
                .await
                .map_err(|e| pve_err("looking up the VM id", e))?
        } else {
            let name = cfg
                .template_name
                .clone()
                .or_else(|| cfg.vm_name.clone())
                .unwrap_or_default();
            if name.is_empty() {
                None
            } else {
                let all = client
                    .cluster_resources(Some(ResourceType::Vm))
                    .await
                    .map_err(|e| pve_err("listing VMs", e))?;
                let hits: Vec<_> = all
                    .into_iter()
                    .filter(|r| r.name.as_deref() == Some(name.as_str()))
                    .collect();
                if hits.len() > 1 {
                    let ids: Vec<String> = hits
                        .iter()
                        .filter_map(|h| h.vmid)
                        .map(|v| v.to_string())
                        .collect();
                    return Err(StepError::failed(format!(
                        "found multiple VMs with name '{name}', IDs: [{}]",
                        ids.join(" ")
                    )));
                }
                hits.into_iter().next()
            }
        };
        let Some(vm) = found else {
            cx.ui.message("No existing artifact found");
            return Ok(());
        };
        let (Some(id), node) = (vm.vmid, vm.node.clone().unwrap_or_else(|| st.node.clone())) else {
            return Ok(());
        };
        let conf = client
            .qemu_config(&node, id, false)
            .await
            .map_err(|e| pve_err("reading the existing VM", e))?;
        let is_template = conf.get("template").is_some_and(|t| t == "1");
        if !is_template && !cfg.skip_convert_to_template {
            return Err(StepError::failed(format!(
                "found matching VM (ID: {id}, name: {}), but it is not a template — kiln only replaces templates",
                vm.name.unwrap_or_default()
            )));
        }
        if let Ok(s) = client.qemu_status(&node, id).await {
            if s.is_running() {
                if let Ok(t) = client.qemu_stop(&node, id).await {
                    let _ = client.wait_opt(t, &st.wait_opts()).await;
                }
            }
        }
        let t = client
            .qemu_delete(
                &node,
                id,
                &DeleteVmOptions {
                    purge: true,
                    destroy_unreferenced_disks: true,
                },
            )
            .await
            .map_err(|e| pve_err("deleting the existing template", e))?;
        client
            .wait_opt(t, &st.wait_opts())
            .await
            .map_err(|e| pve_err("deleting the existing template", e))?;
        cx.ui.message(&format!("Successfully deleted {id}"));
        Ok(())
    }
}

#[async_trait]
impl Step<BuildState> for StepCreateVm {
    fn name(&self) -> &str {
        "create_vm"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        if st.flags.force {
            self.force_remove(cx, st).await?;
        }
        let client = st.client()?;
        let cfg = st.run.config.clone();
        let name = cfg
            .vm_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("kiln-{:08x}", rand::random::<u32>()));
        st.vm_name = name.clone();
        let mut isos = Vec::new();
        if let Some(b) = &st.boot_iso {
            isos.push(IsoAttach::boot(&cfg.boot_iso, b.clone()));
        }
        for (i, v) in st.additional_isos.iter().enumerate() {
            if let Some(c) = cfg.additional_iso_files.get(i) {
                isos.push(IsoAttach::additional(c, v.clone()));
            }
        }
        cx.ui.say("Creating VM");
        let fixed = cfg.vm_id.filter(|i| *i > 0);
        if fixed.is_none() {
            cx.ui.say("No VM ID given, getting next free from Proxmox");
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let vmid = match fixed {
                Some(i) => i,
                None => client
                    .next_id()
                    .await
                    .map_err(|e| pve_err("getting a free VM id", e))?,
            };
            let params = create_params(&cfg, vmid, &name, &isos).map_err(StepError::Failed)?;
            st.vmid = Some(vmid);
            st.vm_created = true; // from here on, cleanup tries to delete it
            let r = match client.qemu_create(&st.node, vmid, &params).await {
                Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    cx.ui
                        .message(&format!("Created VM {vmid} ({name}) on node {}", st.node));
                    return Ok(());
                }
                Err(e)
                    if fixed.is_none()
                        && attempt < 3
                        && e.to_string().contains("already exists") =>
                {
                    st.vm_created = false;
                    cx.ui
                        .message("Generated VM ID was already allocated, retrying");
                }
                Err(e) => {
                    if e.to_string().contains("already exists") {
                        st.vm_created = false; // not ours
                        return Err(StepError::failed(format!(
                            "Error creating VM: {e}\n  VM {vmid} already exists: pick another vm_id, or pass -force to replace a template"
                        )));
                    }
                    return Err(pve_err("Error creating VM", e));
                }
            }
        }
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
        if !outcome.undo_remote() || !st.vm_created {
            return;
        }
        let (Some(client), Some(vmid)) = (st.client.clone(), st.vmid) else {
            return;
        };
        let node = st.node.clone();
        // A failed create is rolled back by PVE itself (the VM carries `lock: create` meanwhile):
        // wait for that to finish instead of fighting the lock.
        let t0 = std::time::Instant::now();
        loop {
            match client.qemu_config(&node, vmid, false).await {
                Ok(c)
                    if c.get("lock") == Some("create")
                        && t0.elapsed() < Duration::from_secs(15) =>
                {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Ok(_) => break,
                // PVE answered (e.g. "does not exist"): gone, nothing to clean up
                Err(e) if e.api().is_some() => return,
                Err(_) => break,
            }
        }
        // the VM may not exist (create failed): that is fine
        match client.qemu_status(&node, vmid).await {
            Err(e)
                if (e.status() == Some(500) || e.status() == Some(404))
                    && client.qemu_config(&node, vmid, false).await.is_err() =>
            {
                return;
            }
            Ok(s) if s.is_running() => {
                cx.ui.say("Stopping VM");
                let r = match client.qemu_stop(&node, vmid).await {
                    Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    cx.ui.error(&format!(
                        "Error stopping VM. Please stop and delete it manually: {e}"
                    ));
                    return;
                }
            }
            _ => {}
        }
        cx.ui.say("Deleting VM");
        let mut last = None;
        for _ in 0..3 {
            let r = match client
                .qemu_delete(
                    &node,
                    vmid,
                    &DeleteVmOptions {
                        purge: true,
                        destroy_unreferenced_disks: true,
                    },
                )
                .await
            {
                Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        if let Some(e) = last {
            cx.ui.error(&format!(
                "Error deleting VM {vmid}. Please delete it manually: {e}"
            ));
        }
    }
}

pub struct StepStartVm;

#[async_trait]
impl Step<BuildState> for StepStartVm {
    fn name(&self) -> &str {
        "start_vm"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let client = st.client()?;
        let vmid = st.vmid()?;
        cx.ui.say("Starting VM");
        let t = client
            .qemu_start(&st.node, vmid)
            .await
            .map_err(|e| pve_err("Error starting VM", e))?;
        client
            .wait_opt(t, &st.wait_opts())
            .await
            .map_err(|e| pve_err("Error starting VM", e))?;
        Ok(())
    }
}
