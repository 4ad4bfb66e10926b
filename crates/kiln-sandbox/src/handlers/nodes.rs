//! The node: `/version`, the node list entry, `/nodes/{node}/status` (host memory, uptime, CPUs)
//! and `/nodes/{node}/network` (the sandbox bridge).

use crate::api::{ApiResult, Reply};
use crate::server::State;
use serde_json::{json, Value};

const VERSION: &str = "9.1.1";
const RELEASE: &str = "9.1";
const REPOID: &str = "6f8e2b1c4d5a7e90";

/// `GET /version`.
pub(super) fn version() -> ApiResult {
    Ok(Reply::data(
        json!({"version": VERSION, "release": RELEASE, "repoid": REPOID}),
    ))
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

pub(super) fn node_entry(st: &State) -> Value {
    let (maxmem, mem) = host_mem();
    let (total, avail) = st.storage.space();
    json!({
        "node": st.cfg.node, "status": "online", "type": "node", "id": format!("node/{}", st.cfg.node),
        "cpu": 0.01, "maxcpu": ncpu(), "mem": mem, "maxmem": maxmem, "disk": total - avail, "maxdisk": total,
        "uptime": uptime(), "level": "", "ssl_fingerprint": st.fingerprint,
    })
}

pub(super) fn node_status(st: &State) -> Value {
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

pub(super) fn network(st: &State, ty: Option<&str>) -> Value {
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
