//! VM runtime: the VM list and summaries, `status/current`, start/stop/shutdown/reboot/reset (QEMU
//! via `kiln-qemu`, with the exit watcher), and `sendkey`.

use super::{check_lock, conf_or_err, is_template, running, spawn, subdirs, task_reply};
use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::schema::Schema;
use crate::server::{Ctx, State};
use crate::storage::{self, LVM};
use crate::tasks::TaskLog;
use crate::vms::{self, Conf};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `GET /nodes/{node}/qemu/{vmid}`: the VM's subdirectories.
pub(super) fn vm_index(st: &State, p: &Params) -> ApiResult {
    conf_or_err(st, p.vmid())?;
    Ok(subdirs(&[
        "config",
        "pending",
        "status",
        "unlink",
        "vncproxy",
        "termproxy",
        "migrate",
        "resize",
        "move",
        "rrd",
        "rrddata",
        "monitor",
        "agent",
        "snapshot",
        "spiceproxy",
        "sendkey",
        "firewall",
        "mtunnel",
        "remote_migrate",
    ]))
}

/// `GET /nodes/{node}/qemu/{vmid}/status`: the status subdirectories.
pub(super) fn status_index(st: &State, p: &Params) -> ApiResult {
    conf_or_err(st, p.vmid())?;
    Ok(subdirs(&[
        "current", "start", "stop", "reset", "shutdown", "suspend", "reboot", "resume",
    ]))
}

pub(super) async fn vm_summary(st: &State, vmid: u32, conf: &Conf) -> Value {
    let run = running(st, vmid);
    let (status, uptime, pid) = match &run {
        Some(r) => {
            let s = r.status().await;
            (s.state.as_str().to_string(), s.uptime.as_secs(), s.pid)
        }
        None => ("stopped".to_string(), 0, None),
    };
    let cores: u64 = conf.get("cores").and_then(|c| c.parse().ok()).unwrap_or(1);
    let sockets: u64 = conf
        .get("sockets")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let maxmem = vms::memory_mib(conf) * 1024 * 1024;
    let mut maxdisk = 0u64;
    for (k, v) in conf {
        if vms::is_drive_key(k) && !vms::is_cdrom(v) && k != "efidisk0" && k != "tpmstate0" {
            if let Some(sz) = vms::get_opt(v, "size").and_then(|s| storage::parse_size(&s, 1)) {
                maxdisk = maxdisk.max(sz);
            }
        }
    }
    let mut v = json!({
        "vmid": vmid, "name": conf.get("name").cloned().unwrap_or_else(|| format!("VM {vmid}")),
        "status": status, "cpus": cores * sockets, "maxmem": maxmem, "maxdisk": maxdisk,
        "mem": if status == "running" { maxmem / 4 } else { 0 }, "disk": 0, "cpu": 0, "uptime": uptime,
        "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
    });
    if let Some(pid) = pid {
        v["pid"] = json!(pid);
    }
    if is_template(conf) {
        v["template"] = json!(1);
    }
    if let Some(t) = conf.get("tags") {
        v["tags"] = json!(t);
    }
    if let Some(l) = conf.get("lock") {
        v["lock"] = json!(l);
    }
    v
}

pub(super) async fn vmlist(st: &State) -> Vec<Value> {
    let mut out = Vec::new();
    for id in st.vms.ids() {
        if let Some(c) = st.vms.get(id) {
            out.push(vm_summary(st, id, &c).await);
        }
    }
    out
}

pub(super) async fn vm_status(st: &State, p: &Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    let mut v = vm_summary(st, vmid, &conf).await;
    let qmpstatus = match running(st, vmid) {
        Some(r) => r
            .status()
            .await
            .qmpstatus
            .unwrap_or_else(|| "running".into()),
        None => "stopped".into(),
    };
    v["qmpstatus"] = json!(qmpstatus);
    v["ha"] = json!({"managed": 0});
    if vms::agent_enabled(&conf) {
        v["agent"] = json!(1);
    }
    if conf.keys().any(|k| k.starts_with("serial")) {
        v["serial"] = json!(1);
    }
    if v.get("tags").is_none() {
        v["tags"] = json!("");
    }
    if qmpstatus != "stopped" {
        v["running-machine"] = json!("pc-i440fx-9.2+pve1");
        v["running-qemu"] = json!("9.2.0");
    }
    Ok(Reply::data(v))
}

/// The config handed to kiln-qemu: local-lvm volumes are qcow2 files here, whatever `format=` the
/// client gave (PVE's lvmthin volumes are raw block devices).
fn qemu_config(conf: &Conf) -> BTreeMap<String, String> {
    conf.iter()
        .map(|(k, v)| {
            let file = vms::drive_file(v);
            if vms::is_drive_key(k) && file.starts_with(&format!("{LVM}:")) && !vms::is_cloudinit(v)
            {
                (k.clone(), vms::set_opt(v, "format", "qcow2"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Start QEMU for a VM (caller holds the lock or runs in the task).
pub(super) async fn do_start(st: &Arc<State>, vmid: u32, log: &TaskLog) -> Result<(), String> {
    let conf = st
        .vms
        .get(vmid)
        .ok_or_else(|| format!("VM {vmid} does not exist"))?;
    if is_template(&conf) {
        return Err("you can't start a vm if it's a template".into());
    }
    check_lock(&conf)?;
    if running(st, vmid).is_some() {
        return Err(format!("VM {vmid} already running"));
    }
    let run_dir = st.cfg.state_dir.join("run").join(vmid.to_string());
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let st_res = st.clone();
    let spec = kiln_qemu::VmSpec {
        vmid,
        name: conf
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM{vmid}")),
        config: qemu_config(&conf),
        volume_path: Box::new(move |volid: &str| {
            if volid.ends_with("-cloudinit") {
                return st_res
                    .storage
                    .path_of(volid)
                    .map(|p| p.with_extension("iso"));
            }
            st_res.storage.resolve(volid)
        }),
        run_dir,
        accel: st.cfg.accel,
    };
    let vm = kiln_qemu::RunningVm::start(spec)
        .await
        .map_err(|e| format!("start failed: {e}"))?;
    log.log(format!("QEMU started: {}", vm.args().join(" ")));
    let vm = Arc::new(vm);
    let mut events = vm.subscribe();
    st.running
        .lock()
        .map_err(|_| "state poisoned".to_string())?
        .insert(vmid, vm.clone());
    st.events
        .log("vm", json!({"vmid": vmid, "action": "started"}));
    // watcher: a guest poweroff (or crash) makes the VM stopped
    let st2 = st.clone();
    let weak = Arc::downgrade(&vm);
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(kiln_qemu::VmEvent::Stopped { reason }) => {
                    st2.events.log(
                        "vm",
                        json!({"vmid": vmid, "action": "stopped", "reason": format!("{reason:?}")}),
                    );
                    if let Ok(mut m) = st2.running.lock() {
                        if let (Some(cur), Some(me)) = (m.get(&vmid), weak.upgrade()) {
                            if Arc::ptr_eq(cur, &me) {
                                m.remove(&vmid);
                            }
                        }
                    }
                    break;
                }
                Ok(kiln_qemu::VmEvent::Rebooted { pid }) => {
                    st2.events.log(
                        "vm",
                        json!({"vmid": vmid, "action": "rebooted", "pid": pid}),
                    );
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    Ok(())
}

pub(super) async fn vm_start(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    conf_or_err(st, vmid)?;
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(
        st,
        ctx,
        "qmstart",
        &vmid.to_string(),
        move |log| async move {
            let _g = st2.locks.lock(vmid, lt).await?;
            do_start(&st2, vmid, &log).await
        },
    );
    task_reply(upid)
}

async fn do_stop(
    st: &Arc<State>,
    vmid: u32,
    shutdown: bool,
    timeout: u64,
    force: bool,
    log: &TaskLog,
) -> Result<(), String> {
    let Some(vm) = running(st, vmid) else {
        return Ok(());
    };
    if shutdown {
        let conf = st.vms.get(vmid).unwrap_or_default();
        let mut asked = false;
        if vms::agent_enabled(&conf) && !st.faults.agent_disabled() {
            asked = vm
                .agent_timeout("guest-shutdown", None, Duration::from_secs(10))
                .await
                .is_ok();
        }
        if !asked {
            vm.powerdown().await.map_err(|e| e.to_string())?;
        }
        if !vm.wait_stopped(Duration::from_secs(timeout)).await {
            if !force {
                return Err("VM quit/powerdown failed - got timeout".into());
            }
            log.log("VM quit/powerdown failed - terminating now with SIGTERM");
            vm.stop().await.map_err(|e| e.to_string())?;
        }
    } else {
        vm.stop().await.map_err(|e| e.to_string())?;
    }
    if let Ok(mut m) = st.running.lock() {
        m.remove(&vmid);
    }
    st.events.log(
        "vm",
        json!({"vmid": vmid, "action": if shutdown { "shutdown" } else { "stop" }}),
    );
    Ok(())
}

pub(super) async fn vm_stop(st: &Arc<State>, ctx: &Ctx, p: Params, ty: &'static str) -> ApiResult {
    let vmid = p.vmid();
    conf_or_err(st, vmid)?;
    let shutdown = ty == "qmshutdown";
    let timeout = p
        .int("timeout")
        .map(|t| t.max(0) as u64)
        .unwrap_or(if shutdown { 180 } else { 5 });
    let force = p.flag("forceStop");
    let skiplock = p.flag("skiplock");
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(st, ctx, ty, &vmid.to_string(), move |log| async move {
        let _g = st2.locks.lock(vmid, lt).await?;
        if !skiplock {
            if let Some(c) = st2.vms.get(vmid) {
                check_lock(&c)?;
            }
        }
        do_stop(&st2, vmid, shutdown, timeout, force, &log).await
    });
    task_reply(upid)
}

pub(super) async fn vm_reboot(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    conf_or_err(st, vmid)?;
    if running(st, vmid).is_none() {
        return Err(ApiError::e500(format!("VM {vmid} not running")));
    }
    let timeout = p.int("timeout").map(|t| t.max(0) as u64).unwrap_or(180);
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(
        st,
        ctx,
        "qmreboot",
        &vmid.to_string(),
        move |log| async move {
            let _g = st2.locks.lock(vmid, lt).await?;
            do_stop(&st2, vmid, true, timeout, false, &log).await?;
            do_start(&st2, vmid, &log).await
        },
    );
    task_reply(upid)
}

pub(super) async fn vm_reset(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    conf_or_err(st, vmid)?;
    let vm = running(st, vmid).ok_or_else(|| ApiError::e500(format!("VM {vmid} not running")))?;
    let upid = spawn(
        st,
        ctx,
        "qmreset",
        &vmid.to_string(),
        move |_log| async move { vm.reset().await.map_err(|e| e.to_string()) },
    );
    task_reply(upid)
}

/// PVE passes the value to HMP `sendkey`: parts joined by `-`, each a QKeyCode name, `0x..` or `<`.
pub fn check_keys(key: &str) -> Result<(), String> {
    let codes = &Schema::get().qkeycodes;
    if key.is_empty() {
        return Err("invalid parameter: ".into());
    }
    for part in key.split('-') {
        let ok = codes.iter().any(|c| c == part)
            || part == "<"
            || (part.len() > 2
                && part.starts_with("0x")
                && u32::from_str_radix(&part[2..], 16).is_ok());
        if !ok {
            return Err(format!("invalid parameter: {part}"));
        }
    }
    Ok(())
}

pub(super) async fn sendkey(st: &Arc<State>, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if !p.flag("skiplock") {
        check_lock(&conf).map_err(ApiError::e500)?;
    }
    let key = p.string("key");
    let vm = running(st, vmid).ok_or_else(|| ApiError::e500(format!("VM {vmid} not running")))?;
    let res = match check_keys(&key) {
        Ok(()) => vm.send_key(&key).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    st.events
        .log("key", json!({"vmid": vmid, "key": key, "ok": res.is_ok()}));
    res.map_err(ApiError::e500)?;
    Ok(Reply::null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendkey_names() {
        assert!(check_keys("ret").is_ok());
        assert!(check_keys("shift-a").is_ok());
        assert!(check_keys("ctrl-alt-delete").is_ok());
        assert!(check_keys("0x1c").is_ok());
        assert_eq!(check_keys("enter").unwrap_err(), "invalid parameter: enter");
        assert_eq!(
            check_keys("shift-pageup").unwrap_err(),
            "invalid parameter: pageup"
        );
    }
}
