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
    pub(crate) async fn force_remove(
        &self,
        cx: &StepContext,
        st: &BuildState,
    ) -> Result<(), StepError> {
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
            .unwrap_or_else(kiln_config::model::default_vm_name);
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
            if attempt == 1 {
                if let Some(w) = crate::params::boot_order_warning(&params, st.boot_iso.as_deref())
                {
                    cx.ui.error(&format!("Warning: {w}"));
                }
            }
            st.vmid = Some(vmid);
            st.vm_created = true; // from here on, cleanup tries to delete it
            crate::leftovers::add(
                &vm_key(&st.node, vmid),
                format!("VM {vmid} ({name}): {}", vm_manual_commands(&st.node, vmid)),
            );
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
                    crate::leftovers::remove(&vm_key(&st.node, vmid));
                    cx.ui
                        .message("Generated VM ID was already allocated, retrying");
                }
                Err(e) => {
                    if e.to_string().contains("already exists") {
                        st.vm_created = false; // not ours
                        crate::leftovers::remove(&vm_key(&st.node, vmid));
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
        cleanup_vm(cx, st, outcome).await;
    }
}

/// The cleanup of a step that made the build's VM (create or clone): on success the VM is the artifact;
/// otherwise it is removed (retried, and the manual command printed when in doubt).
pub(crate) async fn cleanup_vm(cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
    if outcome == Outcome::Success {
        if let Some(vmid) = st.vmid {
            crate::leftovers::remove(&vm_key(&st.node, vmid)); // it is the artifact
        }
    }
    if !outcome.undo_remote() || !st.vm_created {
        return;
    }
    let (Some(client), Some(vmid)) = (st.client.clone(), st.vmid) else {
        return;
    };
    let node = st.node.clone();
    let gone = remove_vm(
        cx,
        &client,
        &node,
        vmid,
        &st.wait_opts(),
        &CLEANUP_BACKOFF,
        Duration::from_secs(15),
    )
    .await;
    if gone {
        st.vm_created = false;
        crate::leftovers::remove(&vm_key(&node, vmid));
    }
}

/// Waits between the attempts of the VM cleanup (bounded: 5 attempts over about 15 s).
pub const CLEANUP_BACKOFF: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// The leftovers-registry key of a VM.
pub fn vm_key(node: &str, vmid: u32) -> String {
    format!("vm:{node}:{vmid}")
}

/// What to run by hand to delete a VM kiln may have left behind.
pub fn vm_manual_commands(node: &str, vmid: u32) -> String {
    format!(
        "on node {node}: `qm destroy {vmid} --purge --destroy-unreferenced-disks 1`, or from anywhere: `pvesh delete /nodes/{node}/qemu/{vmid} --purge 1 --destroy-unreferenced-disks 1` (API: DELETE /api2/json/nodes/{node}/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1)"
    )
}

/// PVE said the object does not exist (only that means "gone"; any other error is doubt).
fn is_gone(e: &kiln_pve::Error) -> bool {
    e.api().is_some_and(|a| a.is_not_found())
}

enum Removal {
    /// Deleted now.
    Deleted,
    /// It did not exist (the create never happened, or PVE rolled it back).
    NotThere,
}

/// One attempt: wait out a create lock, stop, delete, and check it is gone.
async fn try_remove_vm(
    cx: &StepContext,
    client: &kiln_pve::Client,
    node: &str,
    vmid: u32,
    wait: &kiln_pve::WaitOptions,
    lock_deadline: std::time::Instant,
) -> Result<Removal, String> {
    // A failed create is rolled back by PVE itself (the VM carries `lock: create` meanwhile):
    // wait for that to finish instead of fighting the lock (once, not on every attempt).
    loop {
        match client.qemu_config(node, vmid, false).await {
            Ok(c)
                if c.get("lock") == Some("create") && std::time::Instant::now() < lock_deadline =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok(_) => break,
            Err(e) if is_gone(&e) => return Ok(Removal::NotThere),
            Err(e) => return Err(format!("reading its configuration: {e}")),
        }
    }
    match client.qemu_status(node, vmid).await {
        Ok(s) if s.is_running() => {
            cx.ui.say("Stopping VM");
            let r = match client.qemu_stop(node, vmid).await {
                Ok(t) => client.wait_opt(t, wait).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {}
                Err(e) if is_gone(&e) => return Ok(Removal::NotThere),
                Err(e) => return Err(format!("stopping it: {e}")),
            }
        }
        Ok(_) => {}
        Err(e) if is_gone(&e) => return Ok(Removal::NotThere),
        Err(e) => return Err(format!("reading its status: {e}")),
    }
    cx.ui.say("Deleting VM");
    let r = match client
        .qemu_delete(
            node,
            vmid,
            &DeleteVmOptions {
                purge: true,
                destroy_unreferenced_disks: true,
            },
        )
        .await
    {
        Ok(t) => client.wait_opt(t, wait).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => {}
        Err(e) if is_gone(&e) => return Ok(Removal::NotThere),
        Err(e) => return Err(format!("deleting it: {e}")),
    }
    // trust, but verify: only "does not exist" proves it is gone
    match client.qemu_config(node, vmid, false).await {
        Err(e) if is_gone(&e) => Ok(Removal::Deleted),
        Err(e) => Err(format!("checking that it is gone: {e}")),
        Ok(_) => Err("it still exists after the delete task finished".into()),
    }
}

/// Delete the build's VM: only PVE's "does not exist" counts as gone; any other error is
/// retried after each of `backoff`, and when still in doubt the user is told exactly what to
/// run by hand. Returns whether the VM is known to be gone.
pub async fn remove_vm(
    cx: &StepContext,
    client: &kiln_pve::Client,
    node: &str,
    vmid: u32,
    wait: &kiln_pve::WaitOptions,
    backoff: &[Duration],
    lock_wait: Duration,
) -> bool {
    let attempts = backoff.len() + 1;
    let mut last = String::new();
    let lock_deadline = std::time::Instant::now() + lock_wait;
    for attempt in 1..=attempts {
        match try_remove_vm(cx, client, node, vmid, wait, lock_deadline).await {
            Ok(Removal::Deleted) => {
                cx.ui.message(&format!("Deleted VM {vmid}"));
                return true;
            }
            Ok(Removal::NotThere) => {
                cx.ui
                    .message(&format!("VM {vmid} does not exist (nothing to delete)"));
                return true;
            }
            Err(e) => {
                last = e;
                if let Some(d) = backoff.get(attempt - 1) {
                    cx.ui.message(&format!(
                        "Cleanup of VM {vmid} failed ({last}); retrying in {} (attempt {}/{attempts})",
                        crate::ui::fmt_duration(*d),
                        attempt + 1
                    ));
                    tokio::time::sleep(*d).await;
                }
            }
        }
    }
    cx.ui.error(&format!(
        "Could not make sure VM {vmid} is deleted after {attempts} attempts: {last}\n  \
         it may still exist — delete it by hand: {}",
        vm_manual_commands(node, vmid)
    ));
    false
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::{Masker, Ui, UiOptions};
    use kiln_pve::{Auth, Client, ConnectOptions, RetryPolicy, Secret, WaitOptions};
    use std::sync::{Arc, Mutex};
    use tokio_util::sync::CancellationToken;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const CONFIG: &str = "/api2/json/nodes/pve/qemu/100/config";
    const GONE: &str = "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist";

    fn client(server: &MockServer) -> Client {
        let _ = kiln_pve::crypto_provider();
        let mut o = ConnectOptions::new(
            server.uri(),
            Auth::Token {
                token_id: "kiln@pve!t".into(),
                secret: Secret::new("s3cret"),
            },
        );
        o.allow_http = true;
        o.timeout = Duration::from_secs(5);
        // no retries inside the client: the cleanup's own retries are under test
        o.retry = RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        Client::new_unauthenticated(o).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(status: u16, msg: &str) -> ResponseTemplate {
        ResponseTemplate::new(status)
            .set_body_json(serde_json::json!({ "data": null, "message": msg }))
    }

    fn ok(v: serde_json::Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({ "data": v }))
    }

    fn cx() -> (StepContext, Arc<Mutex<Vec<u8>>>) {
        let (ui, buf) = Ui::capture(UiOptions::default(), Arc::new(Masker::new()));
        (
            StepContext::new(ui.for_build("proxmox-iso.t"), CancellationToken::new()),
            buf,
        )
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default()
    }

    fn wait() -> WaitOptions {
        WaitOptions {
            poll_interval: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            log_lines_on_failure: 0,
        }
    }

    const FAST: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(10)];

    /// issue 11: after a create that "may have been processed", a 500 on the first GET config
    /// made the cleanup return at once, silently. Now a 500 is doubt: retried, and the VM that
    /// does exist is deleted.
    #[tokio::test]
    async fn a_500_on_the_first_config_read_is_retried_and_the_vm_deleted() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CONFIG))
            .respond_with(err(500, "internal error"))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(CONFIG))
            .respond_with(ok(serde_json::json!({"name": "x", "digest": "d"})))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
        // after the delete: gone
        Mock::given(method("GET"))
            .and(path(CONFIG))
            .respond_with(err(500, GONE))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api2/json/nodes/pve/qemu/100/status/current"))
            .respond_with(ok(serde_json::json!({"status": "stopped", "vmid": 100})))
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .and(path("/api2/json/nodes/pve/qemu/100"))
            .respond_with(ok(serde_json::Value::Null))
            .expect(1)
            .mount(&server)
            .await;
        let (cx, buf) = cx();
        let c = client(&server);
        let gone = remove_vm(&cx, &c, "pve", 100, &wait(), &FAST, Duration::ZERO).await;
        let out = text(&buf);
        assert!(gone, "{out}");
        assert!(out.contains("retrying"), "{out}");
        assert!(out.contains("Deleted VM 100"), "{out}");
    }

    /// When the doubt persists, the user gets the exact commands for the leftover.
    #[tokio::test]
    async fn persistent_errors_end_with_the_manual_command() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CONFIG))
            .respond_with(err(596, "Broken pipe"))
            .expect(3)
            .mount(&server)
            .await;
        let (cx, buf) = cx();
        let c = client(&server);
        let gone = remove_vm(&cx, &c, "pve", 100, &wait(), &FAST, Duration::ZERO).await;
        let out = text(&buf);
        assert!(!gone, "{out}");
        assert!(out.contains("after 3 attempts"), "{out}");
        assert!(out.contains("qm destroy 100 --purge"), "{out}");
        assert!(out.contains("pvesh delete /nodes/pve/qemu/100"), "{out}");
    }

    /// Only PVE's "does not exist" means gone — without any delete call.
    #[tokio::test]
    async fn does_not_exist_means_gone() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(CONFIG))
            .respond_with(err(500, GONE))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ok(serde_json::Value::Null))
            .expect(0)
            .mount(&server)
            .await;
        let (cx, buf) = cx();
        let c = client(&server);
        assert!(remove_vm(&cx, &c, "pve", 100, &wait(), &FAST, Duration::ZERO).await);
        assert!(text(&buf).contains("does not exist"));
    }
}
