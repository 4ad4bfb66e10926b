//! `/cluster`: the next free VM id and the resource list (VMs, storages, the node).

use super::is_template;
use super::nodes::node_entry;
use super::qemu_status::vm_summary;
use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::server::State;
use crate::storage::{self, LVM};
use serde_json::{json, Value};

pub(super) fn nextid(st: &State, p: &Params) -> ApiResult {
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

pub(super) async fn resources(st: &State, ty: Option<&str>) -> Value {
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
