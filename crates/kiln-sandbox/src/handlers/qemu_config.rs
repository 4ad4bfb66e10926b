//! VM configuration: create (`POST /nodes/{node}/qemu`), config GET/POST/PUT, pending, disk
//! resize, and the drive handling they share (new disks, `efidisk0` from the OVMF vars template,
//! `tpmstate0`, `import-from`, cloud-init drives, sizes of existing volumes).

use super::qemu_status::do_start;
use super::{check_lock, conf_or_err, is_template, spawn, task_reply};
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

pub(super) fn vm_config(st: &State, p: &Params) -> ApiResult {
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

/// `GET /nodes/{node}/qemu/{vmid}/pending`: the config as a key/value list (without `lock`).
pub(super) fn vm_pending(st: &State, p: &Params) -> ApiResult {
    let conf = conf_or_err(st, p.vmid())?;
    let list: Vec<Value> = conf
        .iter()
        .filter(|(k, _)| *k != "lock")
        .map(|(k, v)| json!({"key": k, "value": typed_value(k, v)}))
        .collect();
    Ok(Reply::data(json!(list)))
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
pub(super) async fn prepare_drive(
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

pub(super) async fn create_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

pub(super) fn uuid4() -> String {
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

pub(super) async fn update_vm(st: &Arc<State>, ctx: &Ctx, p: Params, is_async: bool) -> ApiResult {
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

pub(super) async fn resize(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

#[cfg(test)]
mod tests {
    use super::*;

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
