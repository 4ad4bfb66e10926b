//! Endpoint handlers. PVE semantics (messages, task types, locks) are restated from the reference
//! material in `../shared/pve-api/README.md`.
//!
//! One module per PVE resource: `access` (tickets, permissions), `cluster`
//! (`/cluster/nextid`, `/cluster/resources`), `nodes` (version, node list and status, network),
//! `qemu_config` (create VM, config GET/POST/PUT, pending, drive allocation, resize),
//! `qemu_status` (VM list, status, start/stop/shutdown/reboot/reset, sendkey), `agent` (guest-agent
//! endpoints), `clone_template` (template, clone, destroy), `storage` (storage list/status/content,
//! allocation, upload, download-url, volume deletion) and `tasks` (task list, status, log). This
//! module holds the routing ([`dispatch`]) and the helpers they share.

mod access;
mod agent;
mod clone_template;
mod cluster;
mod nodes;
mod qemu_config;
mod qemu_status;
mod storage;
mod tasks;

pub use qemu_status::check_keys;
pub use storage::{upload, Hasher};

use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::schema::Endpoint;
use crate::server::{Ctx, State};
use crate::tasks::TaskLog;
use crate::vms::Conf;
use serde_json::json;
use std::sync::Arc;

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
        "POST /access/ticket" => access::create_ticket(st, p).await,
        "GET /access/ticket" => Ok(Reply::null()),
        "GET /access/permissions" => access::permissions(st, ctx, &p),
        "GET /version" => nodes::version(),
        "GET /cluster/nextid" => cluster::nextid(st, &p),
        "GET /nodes" => Ok(Reply::data(json!([nodes::node_entry(st)]))),
        "GET /cluster/resources" => Ok(Reply::data(cluster::resources(st, p.str("type")).await)),
        "GET /nodes/{node}/qemu" => Ok(Reply::data(json!(qemu_status::vmlist(st).await))),
        "POST /nodes/{node}/qemu" => qemu_config::create_vm(st, ctx, p).await,
        "GET /nodes/{node}/qemu/{vmid}" => qemu_status::vm_index(st, &p),
        "DELETE /nodes/{node}/qemu/{vmid}" => clone_template::destroy_vm(st, ctx, p).await,
        "GET /nodes/{node}/qemu/{vmid}/config" => qemu_config::vm_config(st, &p),
        "POST /nodes/{node}/qemu/{vmid}/config" => qemu_config::update_vm(st, ctx, p, true).await,
        "PUT /nodes/{node}/qemu/{vmid}/config" => qemu_config::update_vm(st, ctx, p, false).await,
        "GET /nodes/{node}/qemu/{vmid}/pending" => qemu_config::vm_pending(st, &p),
        "GET /nodes/{node}/qemu/{vmid}/status" => qemu_status::status_index(st, &p),
        "GET /nodes/{node}/qemu/{vmid}/status/current" => qemu_status::vm_status(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/start" => qemu_status::vm_start(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/stop" => {
            qemu_status::vm_stop(st, ctx, p, "qmstop").await
        }
        "POST /nodes/{node}/qemu/{vmid}/status/shutdown" => {
            qemu_status::vm_stop(st, ctx, p, "qmshutdown").await
        }
        "POST /nodes/{node}/qemu/{vmid}/status/reboot" => qemu_status::vm_reboot(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/status/reset" => qemu_status::vm_reset(st, ctx, p).await,
        "PUT /nodes/{node}/qemu/{vmid}/sendkey" => qemu_status::sendkey(st, p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent" => agent::agent_index(st, &p),
        "POST /nodes/{node}/qemu/{vmid}/agent" => {
            let cmd = p.string("command");
            agent::agent_simple(st, &p, &cmd).await
        }
        "POST /nodes/{node}/qemu/{vmid}/agent/ping" => agent::agent_simple(st, &p, "ping").await,
        "GET /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces" => {
            agent::agent_simple(st, &p, "network-get-interfaces").await
        }
        "GET /nodes/{node}/qemu/{vmid}/agent/get-osinfo" => {
            agent::agent_simple(st, &p, "get-osinfo").await
        }
        "GET /nodes/{node}/qemu/{vmid}/agent/info" => agent::agent_simple(st, &p, "info").await,
        "POST /nodes/{node}/qemu/{vmid}/agent/exec" => agent::agent_exec(st, &p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent/exec-status" => agent::agent_exec_status(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/agent/file-write" => agent::agent_file_write(st, &p).await,
        "GET /nodes/{node}/qemu/{vmid}/agent/file-read" => agent::agent_file_read(st, &p).await,
        "POST /nodes/{node}/qemu/{vmid}/template" => clone_template::template(st, ctx, p).await,
        "POST /nodes/{node}/qemu/{vmid}/clone" => clone_template::clone_vm(st, ctx, p).await,
        "PUT /nodes/{node}/qemu/{vmid}/resize" => qemu_config::resize(st, ctx, p).await,
        "GET /nodes/{node}/tasks" => tasks::task_list(st, &p),
        "GET /nodes/{node}/tasks/{upid}" => tasks::task_index(st, &p),
        "DELETE /nodes/{node}/tasks/{upid}" => tasks::task_delete(st, &p),
        "GET /nodes/{node}/tasks/{upid}/status" => tasks::task_status(st, &p),
        "GET /nodes/{node}/tasks/{upid}/log" => tasks::task_log(st, &p),
        "GET /nodes/{node}/storage" => storage::storage_list(st, ctx, &p),
        "GET /nodes/{node}/storage/{storage}/status" => storage::storage_status(st, &p),
        "GET /nodes/{node}/storage/{storage}/content" => storage::content_list(st, &p).await,
        "POST /nodes/{node}/storage/{storage}/content" => storage::alloc_disk(st, &p).await,
        "GET /nodes/{node}/storage/{storage}/content/{volume}" => {
            storage::volume_info(st, &p).await
        }
        "DELETE /nodes/{node}/storage/{storage}/content/{volume}" => {
            storage::delete_volume(st, ctx, p).await
        }
        "POST /nodes/{node}/storage/{storage}/download-url" => {
            storage::download_url(st, ctx, p).await
        }
        "GET /nodes/{node}/network" => Ok(Reply::data(nodes::network(st, p.str("type")))),
        "GET /nodes/{node}/status" => Ok(Reply::data(nodes::node_status(st))),
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
