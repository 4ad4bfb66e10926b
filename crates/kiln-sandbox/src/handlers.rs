//! Endpoint handlers. PVE semantics (messages, task types, locks) are restated from the reference
//! material in `../shared/pve-api/README.md`.

use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::schema::{Endpoint, Schema};
use crate::server::{Ctx, State};
use crate::storage::{self, Storage, LVM};
use crate::tasks::{parse_upid, TaskLog, Tasks};
use crate::vms::{self, Conf};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const VERSION: &str = "9.1.1";
const RELEASE: &str = "9.1";
const REPOID: &str = "6f8e2b1c4d5a7e90";

fn not_exist(node: &str, vmid: u32) -> ApiError {
    ApiError::e500(format!(
        "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
    ))
}

fn conf_or_err(st: &State, vmid: u32) -> Result<Conf, ApiError> {
    st.vms
        .get(vmid)
        .ok_or_else(|| not_exist(&st.cfg.node, vmid))
}

fn check_lock(conf: &Conf) -> Result<(), String> {
    match conf.get("lock") {
        Some(l) => Err(format!("VM is locked ({l})")),
        None => Ok(()),
    }
}

fn is_template(conf: &Conf) -> bool {
    conf.get("template").map(|t| t == "1").unwrap_or(false)
}

fn running(st: &State, vmid: u32) -> Option<Arc<kiln_qemu::RunningVm>> {
    st.running.lock().ok()?.get(&vmid).cloned()
}

fn task_reply(upid: String) -> ApiResult {
    Ok(Reply::data(json!(upid)))
}

/// Spawn a task, honouring injected task faults.
fn spawn<F, Fut>(st: &Arc<State>, ctx: &Ctx, ty: &str, id: &str, work: F) -> String
where
    F: FnOnce(TaskLog) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let injected = st.faults.for_task(ty);
    if injected.is_some() && ty == "qmcreate" {
        // PVE rolls a failed create back: the half-created VM (config `lock: create`) goes away
        if let Ok(vmid) = id.parse() {
            st.vms.remove(vmid);
        }
    }
    let upid = st
        .tasks
        .spawn(ty, id, &ctx.ident.upid_user(), injected, work);
    st.events
        .log("task", json!({"upid": upid, "type": ty, "id": id}));
    upid
}

/// Route a validated request to its handler.
pub async fn dispatch(st: &Arc<State>, ep: &Endpoint, ctx: &Ctx, p: Params) -> ApiResult {
    let key = format!("{} {}", ep.method, ep.path);
    match key.as_str() {
        "POST /access/ticket" => create_ticket(st, p).await,
        "GET /access/ticket" => Ok(Reply::null()),
        "GET /access/permissions" => Ok(Reply::data(
            st.cfg.privileges.permissions_reply(&ctx.ident, &p)?,
        )),
        "GET /version" => Ok(Reply::data(
            json!({"version": VERSION, "release": RELEASE, "repoid": REPOID}),
        )),
        "GET /cluster/nextid" => nextid(st, &p),
        "GET /nodes" => Ok(Reply::data(json!([node_entry(st)]))),
        "GET /cluster/resources" => Ok(Reply::data(resources(st, p.str("type")).await)),
        "GET /nodes/{node}/qemu" => Ok(Reply::data(json!(vmlist(st).await))),
        "POST /nodes/{node}/qemu" => create_vm(st, ctx, p).await,
        "GET /nodes/{node}/qemu/{vmid}" => {
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
        "DELETE /nodes/{node}/qemu/{vmid}" => destroy_vm(st, ctx, p).await,
        "GET /nodes/{node}/qemu/{vmid}/config" => vm_config(st, &p),
        "POST /nodes/{node}/qemu/{vmid}/config" => update_vm(st, ctx, p, true).await,
        "PUT /nodes/{node}/qemu/{vmid}/config" => update_vm(st, ctx, p, false).await,
        "GET /nodes/{node}/qemu/{vmid}/pending" => {
            let conf = conf_or_err(st, p.vmid())?;
            let list: Vec<Value> = conf
                .iter()
                .filter(|(k, _)| *k != "lock")
                .map(|(k, v)| json!({"key": k, "value": typed_value(k, v)}))
                .collect();
            Ok(Reply::data(json!(list)))
        }
        "GET /nodes/{node}/qemu/{vmid}/status" => {
            conf_or_err(st, p.vmid())?;
            Ok(subdirs(&[
                "current", "start", "stop", "reset", "shutdown", "suspend", "reboot", "resume",
            ]))
        }
        "GET /nodes/{node}/qemu/{vmid}/status/current" => vm_status(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/start" => vm_start(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/stop" => vm_stop(st, ctx, p, "qmstop").await,
        "POST /nodes/{node}/qemu/{vmid}/status/shutdown" => vm_stop(st, ctx, p, "qmshutdown").await,
        "POST /nodes/{node}/qemu/{vmid}/status/reboot" => vm_reboot(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/reset" => vm_reset(st, ctx, p).await,
        "PUT /nodes/{node}/qemu/{vmid}/sendkey" => sendkey(st, p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent" => {
            conf_or_err(st, p.vmid())?;
            Ok(subdirs(&[
                "exec",
                "exec-status",
                "file-read",
                "file-write",
                "fsfreeze-freeze",
                "fsfreeze-status",
                "fsfreeze-thaw",
                "fstrim",
                "get-fsinfo",
                "get-host-name",
                "get-memory-block-info",
                "get-memory-blocks",
                "get-osinfo",
                "get-time",
                "get-timezone",
                "get-users",
                "get-vcpus",
                "info",
                "network-get-interfaces",
                "ping",
                "set-user-password",
                "shutdown",
                "suspend-disk",
                "suspend-hybrid",
                "suspend-ram",
            ]))
        }
        "POST /nodes/{node}/qemu/{vmid}/agent" => {
            let cmd = p.string("command");
            agent_simple(st, &p, &cmd).await
        }
        "POST /nodes/{node}/qemu/{vmid}/agent/ping" => agent_simple(st, &p, "ping").await,
        "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces" => {
            agent_simple(st, &p, "network-get-interfaces").await
        }
        "GET /nodes/{node}/qemu/{vmid}/agent/get-osinfo" => {
            agent_simple(st, &p, "get-osinfo").await
        }
        "GET /nodes/{node}/qemu/{vmid}/agent/info" => agent_simple(st, &p, "info").await,
        "POST /nodes/{node}/qemu/{vmid}/agent/exec" => agent_exec(st, &p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent/exec-status" => agent_exec_status(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/agent/file-write" => agent_file_write(st, &p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent/file-read" => agent_file_read(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/template" => template(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/clone" => clone_vm(st, ctx, p).await,
        "PUT /nodes/{node}/qemu/{vmid}/resize" => resize(st, ctx, p).await,
        "GET /nodes/{node}/tasks" => {
            let errors = p.flag("errors");
            let mut list = st
                .tasks
                .list_json(p.str("vmid"), p.str("typefilter"), errors);
            let total = list.len();
            let start = p.int("start").unwrap_or(0).max(0) as usize;
            let limit = p.int("limit").unwrap_or(50).max(0) as usize;
            list = list.into_iter().skip(start).take(limit).collect();
            Ok(Reply {
                data: json!(list),
                extra: vec![("total".into(), json!(total))],
            })
        }
        "GET /nodes/{node}/tasks/{upid}" => {
            find_task(st, &p)?;
            Ok(Reply::data(json!([{"name": "log"}, {"name": "status"}])))
        }
        "DELETE /nodes/{node}/tasks/{upid}" => {
            find_task(st, &p)?;
            Ok(Reply::null())
        }
        "GET /nodes/{node}/tasks/{upid}/status" => {
            let t = find_task(st, &p)?;
            let t = t
                .lock()
                .map_err(|_| ApiError::e500("task state poisoned"))?;
            Ok(Reply::data(Tasks::status_json(&t)))
        }
        "GET /nodes/{node}/tasks/{upid}/log" => {
            let t = find_task(st, &p)?;
            let t = t
                .lock()
                .map_err(|_| ApiError::e500("task state poisoned"))?;
            let start = p.int("start").unwrap_or(0).max(0) as usize;
            let limit = p.int("limit").unwrap_or(50).max(0) as usize;
            let lines: Vec<Value> = t
                .log
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(i, l)| json!({"n": i + 1, "t": l}))
                .collect();
            Ok(Reply {
                data: json!(lines),
                extra: vec![("total".into(), json!(t.log.len()))],
            })
        }
        "GET /nodes/{node}/storage" => {
            let mut out = Vec::new();
            for s in [storage::LOCAL, LVM] {
                if p.str("storage").is_some_and(|x| x != s) {
                    continue;
                }
                // PVE lists only the storages the user may audit or allocate on
                let audit = crate::access::Check {
                    path: format!("/storage/{s}"),
                    privs: vec!["Datastore.Audit", "Datastore.AllocateSpace"],
                    any: true,
                };
                if st.cfg.privileges.check(&ctx.ident, &[audit]).is_err() {
                    continue;
                }
                if let Some(c) = p.str("content") {
                    let kinds = storage::contents(s).unwrap_or(&[]);
                    if !c.split(',').all(|x| kinds.contains(&x)) {
                        continue;
                    }
                }
                out.push(st.storage.status_json(s));
            }
            Ok(Reply::data(json!(out)))
        }
        "GET /nodes/{node}/storage/{storage}/status" => {
            let s = storage_or_err(st, &p)?;
            Ok(Reply::data(st.storage.status_json(&s)))
        }
        "GET /nodes/{node}/storage/{storage}/content" => {
            let s = storage_or_err(st, &p)?;
            let vmid = p.int("vmid").map(|v| v as u32);
            Ok(Reply::data(json!(
                st.storage.list(&s, p.str("content"), vmid).await
            )))
        }
        "POST /nodes/{node}/storage/{storage}/content" => alloc_disk(st, &p).await,
        "GET /nodes/{node}/storage/{storage}/content/{volume}" => {
            let s = storage_or_err(st, &p)?;
            let volid = Storage::full_volid(&s, &p.string("volume"));
            let path = st
                .storage
                .resolve(&volid)
                .ok_or_else(|| ApiError::e500(format!("volume '{volid}' does not exist")))?;
            let meta = std::fs::metadata(&path).map_err(|e| ApiError::e500(e.to_string()))?;
            let size = if s == LVM {
                storage::virtual_size(&path).await.unwrap_or(meta.len())
            } else {
                meta.len()
            };
            Ok(Reply::data(json!({
                "path": path.to_string_lossy(), "size": size, "used": meta.len(),
                "format": if s == LVM { "raw" } else { "iso" },
            })))
        }
        "DELETE /nodes/{node}/storage/{storage}/content/{volume}" => {
            delete_volume(st, ctx, p).await
        }
        "POST /nodes/{node}/storage/{storage}/download-url" => download_url(st, ctx, p).await,
        "GET /nodes/{node}/network" => Ok(Reply::data(network(st, p.str("type")))),
        "GET /nodes/{node}/status" => Ok(Reply::data(node_status(st))),
        _ => Err(ApiError::Status(
            501,
            format!("Method '{} {}' not implemented", ctx.method, ctx.path),
        )),
    }
}

fn subdirs(names: &[&str]) -> Reply {
    Reply::data(json!(names
        .iter()
        .map(|n| json!({"subdir": n}))
        .collect::<Vec<_>>()))
}

fn storage_or_err(st: &State, p: &Params) -> Result<String, ApiError> {
    let s = p.string("storage");
    if !st.storage.exists(&s) {
        return Err(ApiError::e500(format!("storage '{s}' does not exist")));
    }
    Ok(s)
}

fn find_task(
    st: &State,
    p: &Params,
) -> Result<Arc<std::sync::Mutex<crate::tasks::Task>>, ApiError> {
    let upid = p.string("upid");
    if parse_upid(&upid).is_none() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    st.tasks
        .find(&upid)
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

// ---------------------------------------------------------------- access, cluster, node

async fn create_ticket(st: &Arc<State>, p: Params) -> ApiResult {
    match st
        .auth
        .login(&p.string("username"), p.str("realm"), &p.string("password"))
    {
        Some(user) => Ok(Reply::data(json!({
            "username": user,
            "ticket": st.auth.make_ticket(&user),
            "CSRFPreventionToken": st.auth.csrf_token(&user),
            "cap": {
                "vms": {"VM.Allocate": 1, "VM.Config.Disk": 1, "VM.Config.CDROM": 1, "VM.Config.CPU": 1,
                        "VM.Config.Memory": 1, "VM.Config.Network": 1, "VM.Config.HWType": 1,
                        "VM.Config.Options": 1, "VM.Config.Cloudinit": 1, "VM.PowerMgmt": 1, "VM.Console": 1,
                        "VM.Audit": 1, "VM.Clone": 1, "VM.GuestAgent.Audit": 1, "VM.GuestAgent.Unrestricted": 1},
                "storage": {"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1,
                            "Datastore.AllocateTemplate": 1, "Datastore.Audit": 1},
                "nodes": {"Sys.Audit": 1, "Sys.Modify": 1, "Sys.PowerMgmt": 1, "Sys.Console": 1},
                "access": {"User.Modify": 1, "Permissions.Modify": 1},
                "dc": {"Sys.Audit": 1, "SDN.Use": 1},
                "sdn": {"SDN.Use": 1},
                "mapping": {}
            }
        }))),
        None => {
            if !st.cfg.auth_failure_delay.is_zero() {
                tokio::time::sleep(st.cfg.auth_failure_delay).await;
            }
            Err(ApiError::Status(401, "authentication failure".to_string()))
        }
    }
}

fn nextid(st: &State, p: &Params) -> ApiResult {
    if let Some(v) = p.int("vmid") {
        if st.vms.exists(v as u32) {
            return Err(ApiError::param("vmid", format!("VM {v} already exists")));
        }
        return Ok(Reply::data(json!(v.to_string())));
    }
    let ids = st.vms.ids();
    let mut id = 100u32;
    while ids.contains(&id) {
        id += 1;
    }
    Ok(Reply::data(json!(id)))
}

fn host_mem() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let total = get("MemTotal:");
    (total, total.saturating_sub(get("MemAvailable:")))
}

fn uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn ncpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn node_entry(st: &State) -> Value {
    let (maxmem, mem) = host_mem();
    let (total, avail) = st.storage.space();
    json!({
        "node": st.cfg.node, "status": "online", "type": "node", "id": format!("node/{}", st.cfg.node),
        "cpu": 0.01, "maxcpu": ncpu(), "mem": mem, "maxmem": maxmem, "disk": total - avail, "maxdisk": total,
        "uptime": uptime(), "level": "", "ssl_fingerprint": st.fingerprint,
    })
}

fn node_status(st: &State) -> Value {
    let (maxmem, mem) = host_mem();
    let (total, avail) = st.storage.space();
    json!({
        "uptime": uptime(), "cpu": 0.01, "wait": 0, "idle": 0,
        "loadavg": ["0.10", "0.10", "0.10"],
        "memory": {"total": maxmem, "used": mem, "free": maxmem - mem, "available": maxmem - mem},
        "swap": {"total": 0, "used": 0, "free": 0},
        "rootfs": {"total": total, "used": total - avail, "avail": avail, "free": avail},
        "ksm": {"shared": 0},
        "cpuinfo": {"cpus": ncpu(), "sockets": 1, "cores": ncpu(), "model": "kiln sandbox (QEMU TCG)", "mhz": "2600", "hvm": "1", "flags": "", "user_hz": 100},
        "kversion": "Linux kiln-sandbox",
        "current-kernel": {"sysname": "Linux", "release": "6.14.8-2-pve", "version": "#1 SMP PREEMPT_DYNAMIC PMX", "machine": "x86_64"},
        "boot-info": {"mode": "legacy-bios"},
        "pveversion": format!("pve-manager/{VERSION}/{REPOID}"),
    })
}

fn network(st: &State, ty: Option<&str>) -> Value {
    let addr = st
        .bridge_addr
        .clone()
        .unwrap_or_else(|| "10.88.0.1".to_string());
    let bridge = json!({
        "iface": st.cfg.bridge, "type": "bridge", "method": "static", "method6": "manual",
        "address": addr, "netmask": "24", "cidr": format!("{addr}/24"), "families": ["inet"],
        "bridge_ports": "", "bridge_stp": "off", "bridge_fd": "0", "autostart": 1, "active": 1,
        "exists": 1, "priority": 10,
    });
    let keep = match ty {
        None => true,
        Some(t) => matches!(
            t,
            "bridge" | "any_bridge" | "include_sdn" | "any_local_bridge"
        ),
    };
    if keep {
        json!([bridge])
    } else {
        json!([])
    }
}

async fn vm_summary(st: &State, vmid: u32, conf: &Conf) -> Value {
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

async fn vmlist(st: &State) -> Vec<Value> {
    let mut out = Vec::new();
    for id in st.vms.ids() {
        if let Some(c) = st.vms.get(id) {
            out.push(vm_summary(st, id, &c).await);
        }
    }
    out
}

async fn resources(st: &State, ty: Option<&str>) -> Value {
    let mut out = Vec::new();
    if ty.is_none() || ty == Some("vm") {
        for id in st.vms.ids() {
            if let Some(c) = st.vms.get(id) {
                let s = vm_summary(st, id, &c).await;
                let mut r = json!({"id": format!("qemu/{id}"), "type": "qemu", "node": st.cfg.node,
                    "template": if is_template(&c) { 1 } else { 0 }, "maxcpu": s["cpus"]});
                for k in [
                    "vmid",
                    "name",
                    "status",
                    "maxmem",
                    "maxdisk",
                    "cpu",
                    "mem",
                    "disk",
                    "uptime",
                    "netin",
                    "netout",
                    "diskread",
                    "diskwrite",
                    "tags",
                    "lock",
                ] {
                    if let Some(v) = s.get(k) {
                        r[k] = v.clone();
                    }
                }
                out.push(r);
            }
        }
    }
    if ty.is_none() || ty == Some("storage") {
        for s in [storage::LOCAL, LVM] {
            let stt = st.storage.status_json(s);
            out.push(json!({
                "id": format!("storage/{}/{s}", st.cfg.node), "type": "storage", "storage": s,
                "node": st.cfg.node, "status": "available", "plugintype": storage::storage_type(s),
                "content": stt["content"], "shared": 0, "disk": stt["used"], "maxdisk": stt["total"],
            }));
        }
    }
    if ty.is_none() || ty == Some("node") {
        let n = node_entry(st);
        out.push(json!({
            "id": n["id"], "type": "node", "node": st.cfg.node, "status": "online", "cpu": n["cpu"],
            "maxcpu": n["maxcpu"], "mem": n["mem"], "maxmem": n["maxmem"], "disk": n["disk"],
            "maxdisk": n["maxdisk"], "uptime": n["uptime"], "level": "",
        }));
    }
    json!(out)
}

// ---------------------------------------------------------------- VM config

/// The JSON type of a config value, from the create schema: integer/number/boolean keys are numbers.
fn typed_value(key: &str, v: &str) -> Value {
    let ep = Schema::get().endpoint("POST", "/nodes/{node}/qemu");
    let ty = ep
        .and_then(|e| e.params.get(key))
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    match ty {
        Some("integer") | Some("boolean") => v.parse::<i64>().map(|n| json!(n)).unwrap_or(json!(v)),
        Some("number") => v.parse::<f64>().map(|n| json!(n)).unwrap_or(json!(v)),
        _ => json!(v),
    }
}

fn vm_config(st: &State, p: &Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if let Some(s) = p.str("snapshot") {
        return Err(ApiError::e500(format!("snapshot '{s}' does not exist")));
    }
    let mut m = serde_json::Map::new();
    for (k, v) in &conf {
        m.insert(k.clone(), typed_value(k, v));
    }
    m.insert("digest".into(), json!(vms::digest(&conf)));
    Ok(Reply::data(Value::Object(m)))
}

/// Keys that are parameters of create/update but not config keys.
const NON_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "storage",
    "pool",
    "start",
    "archive",
    "force",
    "unique",
    "live-restore",
    "bwlimit",
    "delete",
    "revert",
    "digest",
    "skiplock",
    "background_delay",
    "import-working-storage",
];

/// New-disk syntax `STORAGE:SIZE_GiB` (qemu-server `$NEW_DISK_RE`).
fn new_disk(file: &str) -> Option<(Option<String>, f64)> {
    let re = crate::validate::perl_regex(r"(([^/:\s]+):)?(\d+(\.\d+)?)")?;
    let c = re.captures(file)?;
    Some((c.get(2).map(|m| m.as_str().to_string()), c[3].parse().ok()?))
}

/// Resolve drive values at create/update: allocate new disks, cloud-init drives, EFI vars; check that
/// referenced volumes exist. Returns the value to store.
async fn prepare_drive(
    st: &State,
    vmid: u32,
    key: &str,
    value: &str,
    default_storage: Option<&str>,
    conf: &Conf,
    log: Option<&TaskLog>,
) -> Result<String, String> {
    let file = vms::drive_file(value);
    if file == "none" || file == "cdrom" || file.starts_with('/') {
        return Ok(value.to_string());
    }
    if let Some(storage) = file.strip_suffix(":cloudinit") {
        if !st.storage.exists(storage) {
            return Err(format!("storage '{storage}' does not exist"));
        }
        let name = format!("vm-{vmid}-cloudinit");
        let volid = format!("{storage}:{name}");
        if st.storage.resolve(&volid).is_none() {
            st.storage
                .alloc(storage, vmid, Some(&name), 4 << 20)
                .await?;
        }
        if let Some(l) = log {
            l.log(format!(
                "{key}: successfully created disk '{volid},media=cdrom'"
            ));
        }
        let v = vms::with_drive_file(value, &volid);
        return Ok(if vms::is_cdrom(&v) {
            v
        } else {
            vms::set_opt(&v, "media", "cdrom")
        });
    }
    if !vms::is_cdrom(value) {
        if let Some((storage, gib)) = new_disk(&file) {
            let storage = storage
                .or_else(|| default_storage.map(str::to_string))
                .ok_or_else(|| format!("{key}: missing storage for new disk '{file}'"))?;
            let volid;
            let bytes;
            if key == "efidisk0" {
                let tmpl = kiln_qemu::spec::efivars_template(&efi_conf(conf, value))
                    .map_err(|e| format!("{key}: {e}"))?;
                let len = std::fs::metadata(&tmpl)
                    .map(|m| m.len())
                    .map_err(|e| format!("{}: {e}", tmpl.display()))?;
                volid = st.storage.alloc(&storage, vmid, None, len).await?;
                let dst = st.storage.path_of(&volid).unwrap_or_default();
                let (s, d) = (
                    tmpl.to_string_lossy().into_owned(),
                    dst.to_string_lossy().into_owned(),
                );
                storage::qemu_img(&["convert", "-q", "-f", "raw", "-O", "qcow2", &s, &d]).await?;
                bytes = len;
            } else if key == "tpmstate0" {
                bytes = 4 << 20;
                volid = st.storage.alloc(&storage, vmid, None, bytes).await?;
            } else if let Some(src) = vms::get_opt(value, "import-from") {
                let src_path = if src.starts_with('/') {
                    std::path::PathBuf::from(&src)
                } else {
                    st.storage
                        .resolve(&src)
                        .ok_or_else(|| format!("volume '{src}' does not exist"))?
                };
                if !st.storage.exists(&storage) {
                    return Err(format!("storage '{storage}' does not exist"));
                }
                let name = st.storage.free_disk_name(vmid);
                volid = format!("{storage}:{name}");
                let dst = st.storage.path_of(&volid).ok_or_else(|| {
                    format!("storage '{storage}' does not support content-type 'images'")
                })?;
                let (s, d) = (
                    src_path.to_string_lossy().into_owned(),
                    dst.to_string_lossy().into_owned(),
                );
                storage::qemu_img(&["convert", "-q", "-O", "qcow2", &s, &d]).await?;
                bytes = storage::virtual_size(&dst).await.unwrap_or(0);
            } else {
                bytes = (gib * (1u64 << 30) as f64) as u64;
                volid = st.storage.alloc(&storage, vmid, None, bytes).await?;
            }
            if let Some(l) = log {
                l.log(format!(
                    "{key}: successfully created disk '{volid},size={}'",
                    storage::size_str(bytes)
                ));
            }
            let v = vms::remove_opt(&vms::with_drive_file(value, &volid), "import-from");
            let v = vms::remove_opt(&v, "size");
            return Ok(format!("{v},size={}", storage::size_str(bytes)));
        }
    }
    // an existing volume
    let path = st
        .storage
        .resolve(&file)
        .ok_or_else(|| format!("volume '{file}' does not exist"))?;
    if vms::get_opt(value, "size").is_none() {
        let sz = if file.starts_with(&format!("{LVM}:")) {
            storage::virtual_size(&path).await.unwrap_or(0)
        } else {
            std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        };
        let sz = if vms::is_cdrom(value) {
            (sz + (1 << 20) - 1) >> 20 << 20
        } else {
            sz
        };
        return Ok(format!("{value},size={}", storage::size_str(sz)));
    }
    Ok(value.to_string())
}

fn efi_conf(conf: &Conf, value: &str) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> =
        conf.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    m.insert("efidisk0".into(), value.to_string());
    m
}

/// Check `boot: order=...` against the devices of the config.
fn check_boot(conf: &Conf) -> Result<(), String> {
    let Some(b) = conf.get("boot") else {
        return Ok(());
    };
    let Some(order) = vms::get_opt(b, "order") else {
        return Ok(());
    };
    for dev in order.split(';').filter(|d| !d.is_empty()) {
        if !conf.contains_key(dev) {
            return Err(format!("invalid bootorder: device '{dev}' does not exist'"));
        }
    }
    Ok(())
}

/// Build the config changes from create/update params (without drives resolved).
fn config_changes(p: &Params) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in &p.0 {
        if NON_CONFIG.contains(&k.as_str()) {
            continue;
        }
        let v = crate::validate::scalar_text(v).unwrap_or_default();
        if k == "cdrom" {
            let v = if vms::get_opt(&v, "media").is_some() {
                v
            } else {
                format!("{v},media=cdrom")
            };
            out.push(("ide2".to_string(), v));
        } else {
            out.push((k.clone(), v));
        }
    }
    out
}

/// `import-from` with an absolute path is for `root@pam` only (as PVE's storage access check:
/// a volume id is checked against the storage's permissions, a host path cannot be).
fn check_import_paths(ctx: &Ctx, changes: &[(String, String)]) -> Result<(), ApiError> {
    let root = ctx.ident.user == "root@pam" && ctx.ident.tokenid.is_none();
    for (k, v) in changes {
        if !vms::is_drive_key(k) {
            continue;
        }
        if let Some(src) = vms::get_opt(v, "import-from") {
            if src.starts_with('/') && !root {
                return Err(ApiError::e500(
                    "Only root can pass arbitrary filesystem paths.",
                ));
            }
        }
    }
    Ok(())
}

async fn create_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let node = st.cfg.node.clone();
    if p.has("archive") {
        return Err(ApiError::Status(
            501,
            "restore from 'archive' is not supported by the kiln sandbox".into(),
        ));
    }
    if let Some(s) = p.str("storage") {
        if !st.storage.exists(s) {
            return Err(ApiError::e500(format!("storage '{s}' does not exist")));
        }
    }
    let changes = config_changes(&p);
    check_import_paths(ctx, &changes)?;
    // boot order must refer to devices of the new config
    let mut probe = Conf::new();
    for (k, v) in &changes {
        probe.insert(k.clone(), v.clone());
    }
    check_boot(&probe).map_err(ApiError::e500)?;
    let mut lockconf = Conf::new();
    lockconf.insert("lock".into(), "create".into());
    if !st.vms.create(vmid, lockconf) {
        return Err(ApiError::e500(format!(
            "unable to create VM {vmid} - VM {vmid} already exists on node '{node}'"
        )));
    }
    let st2 = st.clone();
    let default_storage = p.str("storage").map(str::to_string);
    let start = p.flag("start");
    let template = p.flag("template");
    let user = ctx.ident.upid_user();
    let upid = spawn(
        st,
        ctx,
        "qmcreate",
        &vmid.to_string(),
        move |log| async move {
            let res = async {
                let mut conf = Conf::new();
                for (k, v) in &changes {
                    let v = if vms::is_drive_key(k) {
                        prepare_drive(
                            &st2,
                            vmid,
                            k,
                            v,
                            default_storage.as_deref(),
                            &conf,
                            Some(&log),
                        )
                        .await?
                    } else if k.starts_with("net") && k[3..].parse::<u32>().is_ok() {
                        ensure_mac(v)
                    } else {
                        v.clone()
                    };
                    conf.insert(k.clone(), v);
                }
                conf.insert(
                    "meta".into(),
                    format!("creation-qemu=9.2.0,ctime={}", crate::auth::now()),
                );
                conf.entry("smbios1".into())
                    .or_insert_with(|| format!("uuid={}", uuid4()));
                conf.entry("vmgenid".into()).or_insert_with(uuid4);
                conf.shift_remove("template");
                if template {
                    conf.insert("template".into(), "1".into());
                }
                st2.vms.put(vmid, conf);
                st2.events.log(
                    "vm",
                    json!({"vmid": vmid, "action": "created", "user": user}),
                );
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = res {
                // PVE removes the half-created VM and its new disks
                for v in st2.storage.list(LVM, None, Some(vmid)).await {
                    if let Some(volid) = v["volid"].as_str() {
                        let _ = st2.storage.delete(volid);
                    }
                }
                st2.vms.remove(vmid);
                return Err(format!("unable to create VM {vmid} - {e}"));
            }
            if start && !template {
                log.log("starting VM");
                do_start(&st2, vmid, &log).await?;
            }
            Ok(())
        },
    );
    task_reply(upid)
}

fn uuid4() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fill in a MAC for `net` values that have none (`virtio,bridge=vmbr0` → `virtio=BC:24:11:..,…`).
fn ensure_mac(v: &str) -> String {
    let Some(parsed) = crate::validate::parse_config_property("net0", v) else {
        return v.to_string();
    };
    let model = parsed
        .get("model")
        .cloned()
        .unwrap_or_else(|| "e1000".into());
    let mac = parsed
        .get("macaddr")
        .cloned()
        .unwrap_or_else(vms::random_mac);
    let mut parts = vec![format!("{model}={mac}")];
    for part in v.split(',') {
        let k = part.split_once('=').map(|(k, _)| k).unwrap_or(part);
        if k == "model" || k == "macaddr" || k == model || !part.contains('=') {
            continue;
        }
        parts.push(part.to_string());
    }
    parts.join(",")
}

async fn update_vm(st: &Arc<State>, ctx: &Ctx, p: Params, is_async: bool) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if let Some(d) = p.str("digest") {
        if d != vms::digest(&conf) {
            return Err(ApiError::e500(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    let deletes: Vec<String> = p
        .str("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let changes = config_changes(&p);
    check_import_paths(ctx, &changes)?;
    if changes.is_empty() && deletes.is_empty() && !p.has("revert") {
        return Err(ApiError::e500("no options specified"));
    }
    for d in &deletes {
        if changes.iter().any(|(k, _)| k == d) {
            return Err(ApiError::param(
                d,
                "cannot set and delete the same option at the same time",
            ));
        }
    }
    if is_template(&conf) {
        for (k, v) in &changes {
            if k == "template" && v == "0" {
                return Err(ApiError::e500(
                    "unable to remove template flag (template: 1)",
                ));
            }
            if vms::is_drive_key(k) && !vms::is_cdrom(v) && !vms::is_cloudinit(v) {
                return Err(ApiError::e500(format!(
                    "unable to modify disk '{k}' of a template"
                )));
            }
        }
        for d in &deletes {
            if d == "template" {
                return Err(ApiError::e500(
                    "unable to remove template flag (template: 1)",
                ));
            }
            if let Some(v) = conf.get(d) {
                if vms::is_drive_key(d) && !vms::is_cdrom(v) {
                    return Err(ApiError::e500(format!(
                        "unable to delete disk '{d}' of a template"
                    )));
                }
            }
        }
    }
    let skiplock = p.flag("skiplock");
    let default_storage = p.str("storage").map(str::to_string);
    let st2 = st.clone();
    let lock_timeout = st.cfg.lock_timeout;
    let work = move |log: Option<TaskLog>| async move {
        let _g = st2.locks.lock(vmid, lock_timeout).await?;
        let mut conf = st2
            .vms
            .get(vmid)
            .ok_or_else(|| format!("VM {vmid} does not exist"))?;
        if !skiplock {
            check_lock(&conf)?;
        }
        for d in &deletes {
            let Some(old) = conf.shift_remove(d) else {
                continue;
            };
            if let Some(l) = &log {
                l.log(format!("delete {d}"));
            }
            if vms::is_drive_key(d) && !vms::is_cdrom(&old) {
                // a disk becomes unusedN
                let file = vms::drive_file(&old);
                let n = (0..256)
                    .find(|i| !conf.contains_key(&format!("unused{i}")))
                    .unwrap_or(0);
                conf.insert(format!("unused{n}"), file);
            } else if vms::is_drive_key(d) && vms::is_cloudinit(&old) {
                let _ = st2.storage.delete(&vms::drive_file(&old));
            } else if d.starts_with("unused") {
                let _ = st2.storage.delete(&old);
            }
        }
        for (k, v) in &changes {
            let v = if vms::is_drive_key(k) {
                prepare_drive(
                    &st2,
                    vmid,
                    k,
                    v,
                    default_storage.as_deref(),
                    &conf,
                    log.as_ref(),
                )
                .await?
            } else if k.starts_with("net") && k[3..].parse::<u32>().is_ok() {
                ensure_mac(v)
            } else {
                v.clone()
            };
            if let Some(l) = &log {
                l.log(format!("update VM {vmid}: -{k} {v}"));
            }
            conf.insert(k.clone(), v);
        }
        check_boot(&conf)?;
        st2.vms.put(vmid, conf);
        Ok::<(), String>(())
    };
    if is_async {
        let upid = spawn(st, ctx, "qmconfig", &vmid.to_string(), move |log| {
            work(Some(log))
        });
        if let Some(delay) = p.int("background_delay") {
            let status = st
                .tasks
                .wait(&upid, Duration::from_secs(delay.max(0) as u64))
                .await;
            match status.as_deref() {
                Some("OK") => return Ok(Reply::null()),
                Some(e) => return Err(ApiError::e500(e.to_string())),
                None => {}
            }
        }
        task_reply(upid)
    } else {
        work(None).await.map_err(ApiError::e500)?;
        Ok(Reply::null())
    }
}

// ---------------------------------------------------------------- VM runtime

async fn vm_status(st: &State, p: &Params) -> ApiResult {
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
async fn do_start(st: &Arc<State>, vmid: u32, log: &TaskLog) -> Result<(), String> {
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

async fn vm_start(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

async fn vm_stop(st: &Arc<State>, ctx: &Ctx, p: Params, ty: &'static str) -> ApiResult {
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

async fn vm_reboot(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

async fn vm_reset(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

async fn sendkey(st: &Arc<State>, p: Params) -> ApiResult {
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

// ---------------------------------------------------------------- guest agent

async fn agent_vm(st: &State, p: &Params) -> Result<Arc<kiln_qemu::RunningVm>, ApiError> {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if !vms::agent_enabled(&conf) {
        return Err(ApiError::e500("No QEMU guest agent configured"));
    }
    let vm =
        running(st, vmid).ok_or_else(|| ApiError::e500(format!("VM {vmid} is not running")))?;
    if st.faults.agent_disabled() {
        return Err(ApiError::e500("QEMU guest agent is not running"));
    }
    Ok(vm)
}

fn agent_err(e: kiln_qemu::AgentError) -> ApiError {
    ApiError::e500(e.to_string())
}

async fn agent_call(
    st: &State,
    p: &Params,
    cmd: &str,
    args: Option<Value>,
) -> Result<Value, ApiError> {
    let vm = agent_vm(st, p).await?;
    // PVE pings first (3 s) and reports a dead agent as "not running"
    vm.agent("guest-ping", None).await.map_err(|e| match e {
        kiln_qemu::AgentError::Command { .. } => agent_err(e),
        // no answer in time (socket there, agent not up yet) is "not running" for PVE
        _ => ApiError::e500("QEMU guest agent is not running"),
    })?;
    vm.agent(cmd, args).await.map_err(agent_err)
}

async fn agent_simple(st: &State, p: &Params, cmd: &str) -> ApiResult {
    let qga = format!("guest-{cmd}");
    let res = agent_call(st, p, &qga, None).await?;
    Ok(Reply::data(json!({"result": res})))
}

async fn agent_exec(st: &State, p: &Params) -> ApiResult {
    let cmd: Vec<String> = match p.0.get("command") {
        Some(Value::Array(a)) => a.iter().filter_map(crate::validate::scalar_text).collect(),
        Some(v) => crate::validate::scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    };
    let Some((path, args)) = cmd.split_first() else {
        return Err(ApiError::param(
            "command",
            "property is missing and it is not optional",
        ));
    };
    let mut a = json!({"path": path, "arg": args, "capture-output": true});
    if let Some(input) = p.str("input-data") {
        a["input-data"] = json!(base64::engine::general_purpose::STANDARD.encode(input));
    }
    let res = agent_call(st, p, "guest-exec", Some(a)).await?;
    Ok(Reply::data(json!({"pid": res["pid"]})))
}

async fn agent_exec_status(st: &State, p: &Params) -> ApiResult {
    let pid = p.int("pid").unwrap_or(0);
    let res = agent_call(st, p, "guest-exec-status", Some(json!({"pid": pid}))).await?;
    let mut out = serde_json::Map::new();
    if let Value::Object(m) = res {
        for (k, v) in m {
            let v = match (k.as_str(), v) {
                (_, Value::Bool(b)) => json!(if b { 1 } else { 0 }),
                ("out-data" | "err-data", Value::String(s)) => {
                    let dec = base64::engine::general_purpose::STANDARD
                        .decode(s.as_bytes())
                        .unwrap_or_default();
                    json!(String::from_utf8_lossy(&dec))
                }
                (_, v) => v,
            };
            out.insert(k, v);
        }
    }
    Ok(Reply::data(Value::Object(out)))
}

async fn agent_file_write(st: &State, p: &Params) -> ApiResult {
    let content = p.string("content");
    let data = if p.str("encode") == Some("0") {
        content
    } else {
        base64::engine::general_purpose::STANDARD.encode(content.as_bytes())
    };
    let h = agent_call(
        st,
        p,
        "guest-file-open",
        Some(json!({"path": p.string("file"), "mode": "wb"})),
    )
    .await?;
    let vm = agent_vm(st, p).await?;
    let w = vm
        .agent(
            "guest-file-write",
            Some(json!({"handle": h, "buf-b64": data})),
        )
        .await;
    let _ = vm
        .agent("guest-file-close", Some(json!({"handle": h})))
        .await;
    w.map_err(agent_err)?;
    Ok(Reply::null())
}

async fn agent_file_read(st: &State, p: &Params) -> ApiResult {
    let h = agent_call(
        st,
        p,
        "guest-file-open",
        Some(json!({"path": p.string("file"), "mode": "r"})),
    )
    .await?;
    let vm = agent_vm(st, p).await?;
    let count = p.int("count").unwrap_or(16 * 1024 * 1024);
    let r = vm
        .agent(
            "guest-file-read",
            Some(json!({"handle": h, "count": count})),
        )
        .await;
    let _ = vm
        .agent("guest-file-close", Some(json!({"handle": h})))
        .await;
    let r = r.map_err(agent_err)?;
    let b64 = r["buf-b64"].as_str().unwrap_or("");
    let content = if p.str("decode") == Some("0") {
        b64.to_string()
    } else {
        let d = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        String::from_utf8_lossy(&d).into_owned()
    };
    let mut out = json!({"content": content});
    if r["eof"] == json!(false) {
        out["truncated"] = json!(1);
    }
    Ok(Reply::data(out))
}

// ---------------------------------------------------------------- template, clone, resize, destroy

async fn template(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if is_template(&conf) {
        return Err(ApiError::e500("you can't convert a template to a template"));
    }
    if running(st, vmid).is_some() {
        return Err(ApiError::e500(
            "you can't convert a VM to template if VM is running",
        ));
    }
    let only = p.str("disk").map(str::to_string);
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(
        st,
        ctx,
        "qmtemplate",
        &vmid.to_string(),
        move |log| async move {
            let _g = st2.locks.lock(vmid, lt).await?;
            let mut conf = st2
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            check_lock(&conf)?;
            if running(&st2, vmid).is_some() {
                return Err("you can't convert a VM to template if VM is running".into());
            }
            let keys: Vec<String> = conf.keys().cloned().collect();
            for k in keys {
                if only.as_deref().is_some_and(|d| d != k) || !vms::is_drive_key(&k) {
                    continue;
                }
                let v = conf[&k].clone();
                if vms::is_cdrom(&v) {
                    continue;
                }
                let file = vms::drive_file(&v);
                let Some((storage, name)) = storage::split_volid(&file) else {
                    continue;
                };
                let Some(rest) = name.strip_prefix("vm-") else {
                    continue;
                };
                let new_name = format!("base-{rest}");
                log.log(format!("{k}: converting '{file}' to base image"));
                let newvol = st2.storage.rename(&file, &new_name)?;
                let _ = storage;
                conf.insert(k.clone(), vms::with_drive_file(&v, &newvol));
            }
            conf.insert("template".into(), "1".into());
            st2.vms.put(vmid, conf);
            st2.events
                .log("vm", json!({"vmid": vmid, "action": "template"}));
            Ok(())
        },
    );
    task_reply(upid)
}

async fn clone_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let newid = p.int("newid").unwrap_or(0) as u32;
    let conf = conf_or_err(st, vmid)?;
    let node = st.cfg.node.clone();
    if p.has("snapname") {
        return Err(ApiError::e500(format!(
            "snapshot '{}' does not exist",
            p.string("snapname")
        )));
    }
    let template = is_template(&conf);
    let full = p.str("full").map(|f| f == "1").unwrap_or(!template);
    if !template && !full {
        return Err(ApiError::param(
            "full",
            "linked clone feature is only available for templates",
        ));
    }
    if let Some(s) = p.str("storage") {
        if !st.storage.exists(s) {
            return Err(ApiError::e500(format!("storage '{s}' does not exist")));
        }
    }
    let mut lockconf = Conf::new();
    lockconf.insert("lock".into(), "clone".into());
    if !st.vms.create(newid, lockconf) {
        return Err(ApiError::e500(format!(
            "unable to create VM {newid}: VM {newid} already exists on node '{node}'"
        )));
    }
    let name = p.str("name").map(str::to_string).unwrap_or_else(|| {
        format!(
            "Copy-of-VM-{}",
            conf.get("name")
                .cloned()
                .unwrap_or_else(|| vmid.to_string())
        )
    });
    let description = p.str("description").map(str::to_string);
    let target_storage = p.str("storage").map(str::to_string);
    let st2 = st.clone();
    let upid = spawn(
        st,
        ctx,
        "qmclone",
        &vmid.to_string(),
        move |log| async move {
            let res = async {
                let mut newconf = Conf::new();
                for (k, v) in &conf {
                    if matches!(
                        k.as_str(),
                        "template" | "lock" | "vmgenid" | "smbios1" | "meta"
                    ) || k.starts_with("unused")
                    {
                        continue;
                    }
                    let v = if vms::is_drive_key(k) && !vms::is_cdrom(v) {
                        let file = vms::drive_file(v);
                        let storage = target_storage.clone().unwrap_or_else(|| {
                            storage::split_volid(&file)
                                .map(|(s, _)| s.to_string())
                                .unwrap_or_else(|| LVM.into())
                        });
                        log.log(format!(
                            "create {} clone of drive {k} ({file})",
                            if full { "full" } else { "linked" }
                        ));
                        let newvol = if full {
                            st2.storage
                                .copy_volume(&file, &storage, newid, None)
                                .await?
                        } else {
                            linked_clone(&st2.storage, &file, &storage, newid).await?
                        };
                        vms::with_drive_file(v, &newvol)
                    } else if vms::is_drive_key(k) && vms::is_cloudinit(v) {
                        let f = vms::drive_file(v);
                        let (s, _) = storage::split_volid(&f).unwrap_or((LVM, ""));
                        prepare_drive(
                            &st2,
                            newid,
                            k,
                            &format!("{s}:cloudinit,media=cdrom"),
                            None,
                            &newconf,
                            Some(&log),
                        )
                        .await?
                    } else if k.starts_with("net") && k[3..].parse::<u32>().is_ok() {
                        // new MAC for the clone
                        let parsed =
                            crate::validate::parse_config_property("net0", v).unwrap_or_default();
                        let model = parsed
                            .get("model")
                            .cloned()
                            .unwrap_or_else(|| "e1000".into());
                        let rest: Vec<&str> = v.split(',').skip(1).collect();
                        let mut s = format!("{model}={}", vms::random_mac());
                        for r in rest {
                            s.push(',');
                            s.push_str(r);
                        }
                        s
                    } else {
                        v.clone()
                    };
                    newconf.insert(k.clone(), v);
                }
                newconf.insert("name".into(), name.clone());
                if let Some(d) = &description {
                    newconf.insert("description".into(), d.clone());
                }
                newconf.insert(
                    "meta".into(),
                    format!("creation-qemu=9.2.0,ctime={}", crate::auth::now()),
                );
                newconf.insert("smbios1".into(), format!("uuid={}", uuid4()));
                newconf.insert("vmgenid".into(), uuid4());
                st2.vms.put(newid, newconf);
                st2.events.log(
                    "vm",
                    json!({"vmid": newid, "action": "cloned", "from": vmid, "full": full}),
                );
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = res {
                for v in st2.storage.list(LVM, None, Some(newid)).await {
                    if let Some(volid) = v["volid"].as_str() {
                        let _ = st2.storage.delete(volid);
                    }
                }
                st2.vms.remove(newid);
                return Err(format!("clone failed: {e}"));
            }
            Ok(())
        },
    );
    task_reply(upid)
}

async fn linked_clone(s: &Storage, src: &str, storage: &str, newid: u32) -> Result<String, String> {
    let from = s
        .resolve(src)
        .ok_or_else(|| format!("volume '{src}' does not exist"))?;
    let name = s.free_disk_name(newid);
    let volid = format!("{storage}:{name}");
    let to = s
        .path_of(&volid)
        .ok_or_else(|| format!("storage '{storage}' does not support content-type 'images'"))?;
    let (f, t) = (
        from.to_string_lossy().into_owned(),
        to.to_string_lossy().into_owned(),
    );
    storage::qemu_img(&["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", &f, &t]).await?;
    Ok(volid)
}

async fn resize(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if let Some(d) = p.str("digest") {
        if d != vms::digest(&conf) {
            return Err(ApiError::e500(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
    }
    let disk = p.string("disk");
    let value = conf
        .get(&disk)
        .cloned()
        .ok_or_else(|| ApiError::e500(format!("disk '{disk}' does not exist")))?;
    if vms::is_cdrom(&value) {
        return Err(ApiError::e500("you can't resize a cdrom"));
    }
    if is_template(&conf) {
        return Err(ApiError::e500("you can't resize a template"));
    }
    let size = p.string("size");
    let re = crate::validate::perl_regex(r"(\+)?(\d+(\.\d+)?)([KMGT])?")
        .ok_or_else(|| ApiError::e500("regex"))?;
    let Some(c) = re.captures(&size) else {
        return Err(ApiError::param(
            "size",
            "value does not match the regex pattern",
        ));
    };
    let rel = c.get(1).is_some();
    let bytes =
        storage::parse_size(&size[c.get(2).map(|m| m.start()).unwrap_or(0)..], 1).unwrap_or(0);
    let file = vms::drive_file(&value);
    let path = st
        .storage
        .resolve(&file)
        .ok_or_else(|| ApiError::e500(format!("volume '{file}' does not exist")))?;
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(
        st,
        ctx,
        "resize",
        &vmid.to_string(),
        move |log| async move {
            let _g = st2.locks.lock(vmid, lt).await?;
            let cur = storage::virtual_size(&path).await.unwrap_or(0);
            let new = if rel { cur + bytes } else { bytes };
            if new < cur {
                return Err("shrinking disks is not supported".into());
            }
            let p = path.to_string_lossy().into_owned();
            storage::qemu_img(&["resize", "-q", &p, &new.to_string()]).await?;
            log.log(format!("resized {disk} to {}", storage::size_str(new)));
            st2.vms.update(vmid, |c| {
                if let Some(v) = c.get(&disk).cloned() {
                    c.insert(
                        disk.clone(),
                        vms::set_opt(&v, "size", &storage::size_str(new)),
                    );
                }
            });
            Ok(())
        },
    );
    task_reply(upid)
}

async fn destroy_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let vmid = p.vmid();
    let conf = conf_or_err(st, vmid)?;
    if !p.flag("skiplock") {
        check_lock(&conf).map_err(ApiError::e500)?;
    }
    if running(st, vmid).is_some() {
        return Err(ApiError::e500(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    let unreferenced = p
        .str("destroy-unreferenced-disks")
        .map(|v| v == "1")
        .unwrap_or(true);
    let st2 = st.clone();
    let lt = st.cfg.lock_timeout;
    let upid = spawn(
        st,
        ctx,
        "qmdestroy",
        &vmid.to_string(),
        move |log| async move {
            let _g = st2.locks.lock(vmid, lt).await?;
            let conf = st2
                .vms
                .get(vmid)
                .ok_or_else(|| format!("VM {vmid} does not exist"))?;
            for (k, v) in &conf {
                if !(vms::is_drive_key(k) || k.starts_with("unused")) {
                    continue;
                }
                let file = if k.starts_with("unused") {
                    v.clone()
                } else {
                    vms::drive_file(v)
                };
                let Some((_, name)) = storage::split_volid(&file) else {
                    continue;
                };
                // only disks owned by this VM (not ISOs, not other VMs' base images)
                if storage::volume_owner(name) == Some(vmid) && st2.storage.resolve(&file).is_some()
                {
                    log.log(format!("removing volume '{file}'"));
                    st2.storage.delete(&file)?;
                }
            }
            if unreferenced {
                for v in st2.storage.list(LVM, None, Some(vmid)).await {
                    if let Some(volid) = v["volid"].as_str() {
                        log.log(format!("removing unreferenced volume '{volid}'"));
                        let _ = st2.storage.delete(volid);
                    }
                }
            }
            st2.vms.remove(vmid);
            let _ = std::fs::remove_dir_all(st2.cfg.state_dir.join("run").join(vmid.to_string()));
            st2.events
                .log("vm", json!({"vmid": vmid, "action": "destroyed"}));
            Ok(())
        },
    );
    task_reply(upid)
}

// ---------------------------------------------------------------- storage content

async fn alloc_disk(st: &Arc<State>, p: &Params) -> ApiResult {
    let s = storage_or_err(st, p)?;
    let vmid = p.vmid();
    let name = p.string("filename");
    let re = crate::validate::perl_regex(&format!(r"(vm|base)-{vmid}-\S+"))
        .ok_or_else(|| ApiError::e500("regex"))?;
    if !re.is_match(&name) {
        return Err(ApiError::e500(format!(
            "illegal name '{name}' - should be 'vm-{vmid}-*'"
        )));
    }
    let size = p.string("size");
    let kib = if let Some(n) = size.strip_suffix('G') {
        n.parse::<u64>().ok().map(|n| n * 1024 * 1024)
    } else if let Some(n) = size.strip_suffix('M') {
        n.parse::<u64>().ok().map(|n| n * 1024)
    } else {
        size.parse::<u64>().ok()
    }
    .ok_or_else(|| ApiError::param("size", "unable to parse size"))?;
    let name = name
        .strip_suffix(".qcow2")
        .or_else(|| name.strip_suffix(".raw"))
        .unwrap_or(&name)
        .to_string();
    let volid = st
        .storage
        .alloc(&s, vmid, Some(&name), kib * 1024)
        .await
        .map_err(ApiError::e500)?;
    Ok(Reply::data(json!(volid)))
}

async fn delete_volume(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let s = storage_or_err(st, &p)?;
    let volid = Storage::full_volid(&s, &p.string("volume"));
    if st.storage.resolve(&volid).is_none() {
        return Err(ApiError::e500(format!("volume '{volid}' does not exist")));
    }
    // PVE refuses to delete a disk that is still referenced by a VM config
    if let Some((_, name)) = storage::split_volid(&volid) {
        if let Some(owner) = storage::volume_owner(name) {
            if let Some(c) = st.vms.get(owner) {
                if c.values()
                    .any(|v| vms::drive_file(v) == volid || *v == volid)
                {
                    return Err(ApiError::e500(format!(
                        "unable to delete volume '{volid}' - volume is still in use (referenced by VM {owner})"
                    )));
                }
            }
        }
    }
    let st2 = st.clone();
    let v2 = volid.clone();
    let upid = spawn(st, ctx, "imgdel", &volid, move |log| async move {
        log.log(format!("removing volume '{v2}'"));
        st2.storage.delete(&v2)
    });
    if let Some(delay) = p.int("delay") {
        match st
            .tasks
            .wait(&upid, Duration::from_secs(delay.max(0) as u64))
            .await
            .as_deref()
        {
            Some("OK") => return Ok(Reply::null()),
            Some(e) => return Err(ApiError::e500(e.to_string())),
            None => {}
        }
    }
    task_reply(upid)
}

/// Checksum state for upload/download verification.
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: &str) -> Option<Self> {
        use sha2::Digest;
        Some(match alg {
            "md5" => Hasher::Md5(md5::Md5::new()),
            "sha1" => Hasher::Sha1(sha1::Sha1::new()),
            "sha224" => Hasher::Sha224(sha2::Sha224::new()),
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => return None,
        })
    }
    pub fn update(&mut self, d: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => h.update(d),
            Hasher::Sha1(h) => h.update(d),
            Hasher::Sha224(h) => h.update(d),
            Hasher::Sha256(h) => h.update(d),
            Hasher::Sha384(h) => h.update(d),
            Hasher::Sha512(h) => h.update(d),
        }
    }
    pub fn hex(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha224(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

fn sanitize_filename(f: &str) -> String {
    let base = f.rsplit(['/', '\\']).next().unwrap_or(f);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Upload (`multipart/form-data`, streamed to a temp file, renamed on completion).
pub async fn upload(
    st: &Arc<State>,
    ep: &Endpoint,
    ctx: &Ctx,
    req: hyper::Request<hyper::body::Incoming>,
    path_params: indexmap::IndexMap<String, String>,
    query: &str,
) -> (ApiResult, Option<indexmap::IndexMap<String, Value>>) {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if req.headers().get("content-length").is_none() {
        return (
            Err(ApiError::Status(
                501,
                "upload without content-length is not supported".into(),
            )),
            None,
        );
    }
    let Ok(boundary) = multer::parse_boundary(&ct) else {
        return (
            Err(ApiError::Status(
                506,
                format!("upload 'Content-Type '{ct}' not implemented"),
            )),
            None,
        );
    };
    let mut params: indexmap::IndexMap<String, Value> = indexmap::IndexMap::new();
    crate::api::decode_urlencoded(query, &mut params);
    for (k, v) in &path_params {
        params.insert(k.clone(), json!(v));
    }
    let tmpdir = st.cfg.state_dir.join("tmp");
    let _ = std::fs::create_dir_all(&tmpdir);
    let tmpname = tmpdir.join(format!(
        "pveupload-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let stream = req.into_body().into_data_stream();
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut hasher: Option<Hasher> = None;
    let mut size: u64 = 0;
    let mut got_file = false;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = std::fs::remove_file(&tmpname);
                return (
                    Err(ApiError::param(
                        "filename",
                        format!("multipart parse error: {e}"),
                    )),
                    Some(params),
                );
            }
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "filename" && field.file_name().is_some() {
            let fname = field.file_name().unwrap_or("").to_string();
            params.insert("filename".into(), json!(fname));
            if let Some(alg) = params.get("checksum-algorithm").and_then(Value::as_str) {
                hasher = Hasher::new(alg);
            }
            let mut file = match tokio::fs::File::create(&tmpname).await {
                Ok(f) => f,
                Err(e) => return (Err(ApiError::e500(format!("temp file: {e}"))), Some(params)),
            };
            let mut field = field;
            loop {
                match field.next().await {
                    Some(Ok(chunk)) => {
                        size += chunk.len() as u64;
                        if let Some(h) = hasher.as_mut() {
                            h.update(&chunk);
                        }
                        if let Err(e) = file.write_all(&chunk).await {
                            let _ = std::fs::remove_file(&tmpname);
                            return (
                                Err(ApiError::e500(format!("writing upload failed: {e}"))),
                                Some(params),
                            );
                        }
                    }
                    Some(Err(e)) => {
                        let _ = std::fs::remove_file(&tmpname);
                        return (
                            Err(ApiError::e500(format!("upload aborted: {e}"))),
                            Some(params),
                        );
                    }
                    None => break,
                }
            }
            if let Err(e) = file.flush().await {
                return (
                    Err(ApiError::e500(format!("writing upload failed: {e}"))),
                    Some(params),
                );
            }
            got_file = true;
        } else {
            let text = field.text().await.unwrap_or_default();
            params.insert(name, json!(text));
        }
    }
    let cleanup = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
    };
    if !got_file {
        cleanup(&tmpname);
        return (
            Err(ApiError::param(
                "filename",
                "property is missing and it is not optional",
            )),
            Some(params),
        );
    }
    if let Err(errs) = crate::validate::validate(ep, &mut params) {
        cleanup(&tmpname);
        return (Err(ApiError::Params(errs)), Some(params));
    }
    let p = Params(params.clone());
    let storage = p.string("storage");
    let content = p.string("content");
    if !st.storage.exists(&storage) {
        cleanup(&tmpname);
        return (
            Err(ApiError::e500(format!(
                "storage '{storage}' does not exist"
            ))),
            Some(params),
        );
    }
    if !storage::contents(&storage)
        .unwrap_or(&[])
        .contains(&content.as_str())
        || content == "snippets"
    {
        cleanup(&tmpname);
        return (
            Err(ApiError::e500(format!(
                "storage '{storage}' does not support '{content}' content"
            ))),
            Some(params),
        );
    }
    let filename = sanitize_filename(&p.string("filename"));
    if !storage::extension_ok(&content, &filename) {
        cleanup(&tmpname);
        return (
            Err(ApiError::param("filename", "wrong file extension")),
            Some(params),
        );
    }
    let dest = st
        .storage
        .content_dir(&storage, &content)
        .unwrap_or_default()
        .join(&filename);
    let expected = p.str("checksum").map(|c| c.to_ascii_lowercase());
    let digest = hasher.map(Hasher::hex);
    let st2 = st.clone();
    let tmp2 = tmpname.clone();
    let upid = spawn(st, ctx, "imgcopy", "", move |log| async move {
        log.log(format!("starting file import from: {}", tmp2.display()));
        if let (Some(exp), Some(got)) = (&expected, &digest) {
            log.log("calculating checksum...");
            if exp != got {
                let _ = std::fs::remove_file(&tmp2);
                return Err(format!("checksum mismatch: got '{got}' != expect '{exp}'"));
            }
            log.log("checksum verified");
        }
        log.log(format!("target node: {}", st2.cfg.node));
        log.log(format!("target file: {}", dest.display()));
        log.log(format!("file size is: {size}"));
        std::fs::rename(&tmp2, &dest)
            .map_err(|e| format!("moving file to destination failed: {e}"))?;
        log.log("finished file import successfully");
        Ok(())
    });
    (task_reply(upid), Some(params))
}

async fn download_url(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let storage = storage_or_err(st, &p)?;
    let content = p.string("content");
    if !storage::contents(&storage)
        .unwrap_or(&[])
        .contains(&content.as_str())
    {
        return Err(ApiError::e500(format!(
            "storage '{storage}' does not support '{content}' content"
        )));
    }
    let filename = sanitize_filename(&p.string("filename"));
    if !storage::extension_ok(&content, &filename) {
        return Err(ApiError::param("filename", "wrong file extension"));
    }
    let url_s = p.string("url");
    let url =
        url::Url::parse(&url_s).map_err(|e| ApiError::param("url", format!("invalid URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    // PVE's schema pattern `https?://.*` (checked before this handler) already refuses file://
    // and every other scheme with "value does not match the regex pattern"; refuse them here
    // too, with the same answer, so no path can read a local file
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::param(
            "url",
            "value does not match the regex pattern",
        ));
    }
    if !loopback {
        return Err(ApiError::e500(format!(
            "download-url: the kiln sandbox only downloads from loopback http(s) URLs, not '{url_s}'"
        )));
    }
    let alg = p.str("checksum-algorithm").map(str::to_string);
    let expected = p.str("checksum").map(|c| c.to_ascii_lowercase());
    if expected.is_some() && alg.is_none() {
        return Err(ApiError::param(
            "checksum-algorithm",
            "missing property required by 'checksum'",
        ));
    }
    let verify = p.str("verify-certificates") != Some("0");
    let dest = st
        .storage
        .content_dir(&storage, &content)
        .unwrap_or_default()
        .join(&filename);
    let tmp = st.cfg.state_dir.join("tmp").join(format!(
        "download-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let _ = std::fs::create_dir_all(st.cfg.state_dir.join("tmp"));
    let upid = spawn(st, ctx, "download", &filename, move |log| async move {
        use tokio::io::AsyncWriteExt;
        log.log(format!("downloading {url_s} to {}", dest.display()));
        let mut hasher = alg.as_deref().and_then(Hasher::new);
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("temp file: {e}"))?;
        let mut total = 0u64;
        {
            use futures::StreamExt;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(!verify)
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| format!("download failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("download failed: HTTP {}", resp.status()));
            }
            let mut s = resp.bytes_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| format!("download failed: {e}"))?;
                total += chunk.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        }
        out.flush().await.map_err(|e| e.to_string())?;
        log.log(format!("downloaded {total} bytes"));
        if let (Some(exp), Some(h)) = (expected, hasher) {
            let got = h.hex();
            if got != exp {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("checksum mismatch: got '{got}' != expect '{exp}'"));
            }
            log.log("checksum verified");
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|e| format!("moving file to destination failed: {e}"))?;
        log.log("download of '".to_string() + &url_s + "' finished");
        Ok(())
    });
    task_reply(upid)
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

    #[test]
    fn mac_filled() {
        let v = ensure_mac("virtio,bridge=vmbr0,firewall=0");
        assert!(v.starts_with("virtio=BC:24:11:"), "{v}");
        assert!(v.ends_with(",bridge=vmbr0,firewall=0"), "{v}");
        assert_eq!(
            ensure_mac("virtio=72:E6:B2:99:2D:00,bridge=vmbr0"),
            "virtio=72:E6:B2:99:2D:00,bridge=vmbr0"
        );
        assert_eq!(
            new_disk("local-lvm:32"),
            Some((Some("local-lvm".into()), 32.0))
        );
        assert_eq!(new_disk("local-lvm:vm-100-disk-0"), None);
    }
}
