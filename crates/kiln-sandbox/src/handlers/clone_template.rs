//! Converting a VM to a template, full and linked clones, and destroying a VM with its disks.

use super::qemu_config::{prepare_drive, uuid4};
use super::{check_lock, conf_or_err, is_template, running, spawn, task_reply};
use crate::api::{ApiError, ApiResult, Params};
use crate::server::{Ctx, State};
use crate::storage::{self, Storage, LVM};
use crate::vms::{self, Conf};
use serde_json::json;
use std::sync::Arc;

pub(super) async fn template(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

pub(super) async fn clone_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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

pub(super) async fn destroy_vm(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
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
