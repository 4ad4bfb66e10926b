//! Guest-agent endpoints (`/nodes/{node}/qemu/{vmid}/agent/*`): ping, info, exec and
//! exec-status, file read/write, through the VM's QGA socket.

use super::{conf_or_err, running, subdirs};
use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::server::State;
use crate::vms;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

/// `GET /nodes/{node}/qemu/{vmid}/agent`: the agent commands.
pub(super) fn agent_index(st: &State, p: &Params) -> ApiResult {
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

pub(super) async fn agent_simple(st: &State, p: &Params, cmd: &str) -> ApiResult {
    let qga = format!("guest-{cmd}");
    let res = agent_call(st, p, &qga, None).await?;
    Ok(Reply::data(json!({"result": res})))
}

pub(super) async fn agent_exec(st: &State, p: &Params) -> ApiResult {
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

pub(super) async fn agent_exec_status(st: &State, p: &Params) -> ApiResult {
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

pub(super) async fn agent_file_write(st: &State, p: &Params) -> ApiResult {
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

pub(super) async fn agent_file_read(st: &State, p: &Params) -> ApiResult {
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
