//! `source "proxmox-clone"`: clone the source VM or template (full, or linked with
//! `full_clone = false`), then apply the source block's hardware and cloud-init settings to the
//! clone in one config update. Replaces the ISO, HTTP, create and boot-command steps of a
//! `proxmox-iso` build; the steps after it (start, wait, provision, shutdown, finalize, template)
//! are the same. Its cleanup deletes the clone when the build fails, like the create step's.

use super::vm::{vm_key, vm_manual_commands, StepCreateVm};
use super::{pve_err, BuildState, StepError};
use crate::params::create_params;
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::{Communicator, IpConfig, ProxmoxIsoConfig};
use kiln_guest::TempKeyPair;
use kiln_pve::{CloneOptions, ResourceType};
use std::path::Path;
use std::sync::Arc;

/// The VM to clone, as found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneSource {
    pub vmid: u32,
    pub node: String,
    pub name: String,
}

pub struct StepCloneVm;

/// `clone_vm` / `clone_vm_id` → the source VM; a VM on the build node wins among several of
/// that name (as the plugin does).
async fn find_source(st: &BuildState) -> Result<CloneSource, StepError> {
    let client = st.client()?;
    let cfg = &st.run.config;
    let all = client
        .cluster_resources(Some(ResourceType::Vm))
        .await
        .map_err(|e| pve_err("listing the cluster's VMs to find the clone source", e))?;
    let qemu = all.into_iter().filter(|r| r.kind == "qemu");
    let pick = |r: kiln_pve::ClusterResource| CloneSource {
        vmid: r.vmid.unwrap_or_default(),
        node: r.node.clone().unwrap_or_else(|| st.node.clone()),
        name: r.name.clone().unwrap_or_default(),
    };
    if let Some(id) = cfg.clone_vm_id {
        return qemu
            .filter(|r| r.vmid == Some(id))
            .map(pick)
            .next()
            .ok_or_else(|| {
                StepError::failed(format!(
                    "clone_vm_id {id}: no VM with this id on the cluster (check the id, or use clone_vm with the template's name)"
                ))
            });
    }
    let name = cfg.clone_vm.clone().unwrap_or_default();
    let mut hits: Vec<CloneSource> = qemu
        .filter(|r| r.name.as_deref() == Some(name.as_str()))
        .map(pick)
        .collect();
    hits.sort_by_key(|h| (h.node != st.node, h.vmid));
    hits.into_iter().next().ok_or_else(|| {
        StepError::failed(format!(
            "clone_vm {name:?}: no VM with this name on the cluster (names are case-sensitive; `qm list` on the node shows them)"
        ))
    })
}

/// The public key line of `ssh_private_key_file` (for cloud-init `sshkeys`), as the plugin
/// derives it.
fn public_key(cfg: &ProxmoxIsoConfig, base: &Path) -> Result<Option<String>, String> {
    let Some(k) = cfg
        .communicator
        .ssh_private_key_file
        .as_deref()
        .filter(|k| !k.is_empty())
    else {
        return Ok(None);
    };
    let p = Path::new(k);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let key = kiln_guest::load_private_key(&p, None).map_err(|e| e.to_string())?;
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("{}: encoding its public key: {e}", p.display()))?;
    Ok(Some(line))
}

/// Whether the build makes an ephemeral key pair for the communicator, as the plugin's
/// proxmox-clone does (`StepSshKeyPair`): an SSH communicator with no `ssh_password`, no
/// `ssh_private_key_file` and no `ssh_agent_auth`.
pub fn wants_temp_key(c: &Communicator) -> bool {
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    c.r#type == "ssh" && !set(&c.ssh_password) && !set(&c.ssh_private_key_file) && !c.ssh_agent_auth
}

/// A fresh ephemeral key pair; its comment (`kiln_<16 hex>`) ends the public key line, so the
/// line can be found again in `authorized_keys` (see [`remove_key_commands`]).
pub fn generate_temp_key() -> Result<TempKeyPair, String> {
    let comment = format!("kiln_{:016x}", rand::random::<u64>());
    TempKeyPair::generate_ed25519(&comment).map_err(|e| e.to_string())
}

/// The comment at the end of an `authorized_keys` line (`type base64 comment`), if it has one
/// made only of characters that need no quoting in a `sed` address.
pub fn key_comment(line: &str) -> Option<&str> {
    line.split_whitespace().nth(2).filter(|c| {
        c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Packer's `StepCleanupTempKeys`: remove the lines ending in ` COMMENT` from the SSH user's
/// and root's `authorized_keys` (run after the provisioners; failures are only reported).
pub fn remove_key_commands(comment: &str) -> [String; 2] {
    [
        format!("sed -i.bak '/ {comment}$/d' ~/.ssh/authorized_keys; rm -f ~/.ssh/authorized_keys.bak"),
        format!(
            "sudo sed -i.bak '/ {comment}$/d' /root/.ssh/authorized_keys; sudo rm -f /root/.ssh/authorized_keys.bak"
        ),
    ]
}

/// The PVE `ipconfigN` value of an `ipconfig {}` block (`ip=…,gw=…,ip6=…,gw6=…`); empty when
/// nothing is set.
pub fn ipconfig_value(ip: &IpConfig) -> String {
    [
        ("ip", &ip.ip),
        ("gw", &ip.gateway),
        ("ip6", &ip.ip6),
        ("gw6", &ip.gateway6),
    ]
    .iter()
    .filter_map(|(k, v)| {
        v.as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| format!("{k}={v}"))
    })
    .collect::<Vec<_>>()
    .join(",")
}

/// PVE wants `sshkeys` URL-encoded (everything but `A-Za-z0-9-_.~`, as `qm set --sshkeys` does).
pub fn pve_urlencode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The config applied to the clone: the source block's hardware (as for a created VM, without
/// disks, ISOs and `pool`, which the clone call takes) and the cloud-init settings the plugin
/// sets (`ciuser` = `ssh_username`, `sshkeys` from `ssh_private_key_file`, `ipconfigN`,
/// `nameserver`, `searchdomain`).
pub fn clone_params(
    cfg: &ProxmoxIsoConfig,
    vmid: u32,
    name: &str,
    public_key: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let mut p: Vec<(String, String)> = create_params(cfg, vmid, name, &[])?
        .into_iter()
        .filter(|(k, _)| k != "pool")
        .collect();
    for (k, v) in p.iter_mut() {
        if k == "description" {
            *v = "kiln ephemeral build VM (clone)".into();
        }
    }
    if let Some(u) = cfg
        .communicator
        .ssh_username
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        p.push(("ciuser".into(), u.to_string()));
    }
    if let Some(k) = public_key {
        p.push(("sshkeys".into(), pve_urlencode(k.trim())));
    }
    for (i, ip) in cfg.ipconfig.iter().enumerate() {
        let v = ipconfig_value(ip);
        if !v.is_empty() {
            p.push((format!("ipconfig{i}"), v));
        }
    }
    if let Some(n) = cfg.nameserver.as_deref().filter(|n| !n.is_empty()) {
        p.push(("nameserver".into(), n.to_string()));
    }
    if let Some(s) = cfg.searchdomain.as_deref().filter(|s| !s.is_empty()) {
        p.push(("searchdomain".into(), s.to_string()));
    }
    if cfg.cloud_init_disable_upgrade_packages {
        p.push(("ciupgrade".into(), "0".into()));
    }
    Ok(p)
}

#[async_trait]
impl Step<BuildState> for StepCloneVm {
    fn name(&self) -> &str {
        "clone_vm"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        if st.flags.force {
            StepCreateVm.force_remove(cx, st).await?;
        }
        let client = st.client()?;
        let cfg = st.run.config.clone();
        let src = find_source(st).await?;
        let src_conf = client
            .qemu_config(&src.node, src.vmid, false)
            .await
            .map_err(|e| {
                pve_err(
                    &format!("reading the config of clone source {}", src.vmid),
                    e,
                )
            })?;
        let is_template = src_conf.get("template").is_some_and(|t| t == "1");
        if !cfg.full_clone && !is_template {
            return Err(StepError::failed(format!(
                "full_clone = false: VM {} ({}) is not a template, and Proxmox VE makes linked clones only of templates\n  \
                 convert it to a template (`qm template {}`), or set full_clone = true",
                src.vmid, src.name, src.vmid
            )));
        }
        // the communicator's key goes to the clone through cloud-init `sshkeys` (as the plugin's
        // StepSshKeyPair: the key file's public half, or an ephemeral key pair)
        let key = if wants_temp_key(&cfg.communicator) {
            cx.ui
                .say("Creating ephemeral key pair for SSH communicator...");
            let k = generate_temp_key()
                .map_err(|e| StepError::failed(format!("Error creating temporary keypair: {e}")))?;
            let line = k.public_key_openssh().to_string();
            st.temp_key = Some(Arc::new(k));
            cx.ui.say("Created ephemeral SSH key pair for communicator");
            Some(line)
        } else {
            let k = public_key(&cfg, &st.template_dir)
                .map_err(|e| StepError::failed(format!("ssh_private_key_file: {e}")))?;
            if k.is_some() {
                cx.ui
                    .say("Using existing SSH private key for the communicator...");
            } else if cfg.communicator.ssh_agent_auth {
                cx.ui.say(
                    "Using local SSH Agent to authenticate connections for the communicator...",
                );
            }
            k
        };
        let name = cfg
            .vm_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(kiln_config::model::default_vm_name);
        st.vm_name = name.clone();
        let kind = if cfg.full_clone { "full" } else { "linked" };
        cx.ui.say(&format!(
            "Cloning VM {} ({}{}) — {kind} clone",
            src.vmid,
            src.name,
            if is_template { ", a template" } else { "" }
        ));
        let fixed = cfg.vm_id.filter(|i| *i > 0);
        let mut attempt = 0;
        let vmid = loop {
            attempt += 1;
            let vmid = match fixed {
                Some(i) => i,
                None => client
                    .next_id()
                    .await
                    .map_err(|e| pve_err("getting a free VM id", e))?,
            };
            let opts = CloneOptions {
                newid: vmid,
                name: Some(name.clone()),
                full: Some(cfg.full_clone),
                storage: None,
                target: (src.node != st.node).then(|| st.node.clone()),
                pool: cfg.pool.clone().filter(|p| !p.is_empty()),
                description: None,
            };
            st.vmid = Some(vmid);
            st.vm_created = true; // from here on, cleanup tries to delete it
            crate::leftovers::add(
                &vm_key(&st.node, vmid),
                format!("VM {vmid} ({name}): {}", vm_manual_commands(&st.node, vmid)),
            );
            let r = match client.qemu_clone(&src.node, src.vmid, &opts).await {
                Ok(t) => client.wait_opt(t, &st.wait_opts()).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => break vmid,
                Err(e) if e.to_string().contains("already exists") => {
                    st.vm_created = false; // not ours
                    crate::leftovers::remove(&vm_key(&st.node, vmid));
                    if fixed.is_none() && attempt < 3 {
                        cx.ui
                            .message("Generated VM ID was already allocated, retrying");
                        continue;
                    }
                    return Err(StepError::failed(format!(
                        "Error cloning VM: {e}\n  VM {vmid} already exists: pick another vm_id, or pass -force to replace a template"
                    )));
                }
                Err(e) => {
                    let hint = if !cfg.full_clone {
                        "\n  a linked clone needs storage that supports it (e.g. LVM-thin, ZFS, Ceph, or qcow2 files on a directory storage); set full_clone = true to copy the disks instead"
                    } else {
                        ""
                    };
                    return Err(StepError::failed(format!(
                        "Error cloning VM {} to {vmid}: {e}{hint}",
                        src.vmid
                    )));
                }
            }
        };
        cx.ui.message(&format!(
            "Cloned VM {} to {vmid} ({name}) on node {}",
            src.vmid, st.node
        ));
        let params = clone_params(&cfg, vmid, &name, key.as_deref()).map_err(StepError::Failed)?;
        cx.ui.say("Applying the source's settings to the clone");
        let t = client
            .qemu_config_update_async(&st.node, vmid, &params)
            .await
            .map_err(|e| pve_err("Error updating the clone's config", e))?;
        client
            .wait_opt(t, &st.wait_opts())
            .await
            .map_err(|e| pve_err("Error updating the clone's config", e))?;
        Ok(())
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, outcome: Outcome) {
        super::vm::cleanup_vm(cx, st, outcome).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_config::model::NetworkAdapter;

    fn cfg() -> ProxmoxIsoConfig {
        let mut c = ProxmoxIsoConfig {
            clone_vm: Some("ubuntu-cloud".into()),
            memory: 1024,
            cores: 2,
            pool: Some("builds".into()),
            nameserver: Some("1.1.1.1 9.9.9.9".into()),
            searchdomain: Some("example.org".into()),
            ipconfig: vec![IpConfig {
                ip: Some("10.0.0.5/24".into()),
                gateway: Some("10.0.0.1".into()),
                ..IpConfig::default()
            }],
            network_adapters: vec![NetworkAdapter {
                bridge: "vmbr0".into(),
                model: kiln_config::model::NicModel::Virtio,
                mac_address: None,
                vlan_tag: None,
                firewall: false,
                mtu: None,
                packet_queues: None,
            }],
            ..ProxmoxIsoConfig::default()
        };
        c.communicator.ssh_username = Some("ubuntu".into());
        c
    }

    fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_clone_gets_the_hardware_and_cloud_init_settings() {
        let key = "ssh-ed25519 AAAAC3Nza+C1/lZDI1NTE5= me@host";
        let p = clone_params(&cfg(), 123, "b", Some(key)).unwrap();
        assert_eq!(get(&p, "memory"), Some("1024"));
        assert_eq!(get(&p, "cores"), Some("2"));
        assert_eq!(get(&p, "name"), Some("b"));
        assert_eq!(get(&p, "net0"), Some("virtio,bridge=vmbr0"));
        assert_eq!(get(&p, "ciuser"), Some("ubuntu"));
        assert_eq!(
            get(&p, "sshkeys"),
            Some("ssh-ed25519%20AAAAC3Nza%2BC1%2FlZDI1NTE5%3D%20me%40host")
        );
        assert_eq!(get(&p, "ipconfig0"), Some("ip=10.0.0.5/24,gw=10.0.0.1"));
        assert_eq!(get(&p, "nameserver"), Some("1.1.1.1 9.9.9.9"));
        assert_eq!(get(&p, "searchdomain"), Some("example.org"));
        // the pool goes with the clone call (PUT config refuses it); no disks or ISOs are added
        assert_eq!(get(&p, "pool"), None);
        assert!(!p.iter().any(|(k, _)| k.starts_with("scsi0")
            || k.starts_with("ide")
            || k.starts_with("efidisk")));
        assert_eq!(get(&p, "ciupgrade"), None);
        let v6 = IpConfig {
            ip: Some("dhcp".into()),
            ip6: Some("fd00::5/64".into()),
            gateway6: Some("fd00::1".into()),
            ..IpConfig::default()
        };
        assert_eq!(ipconfig_value(&v6), "ip=dhcp,ip6=fd00::5/64,gw6=fd00::1");
    }

    #[test]
    fn unset_cloud_init_keys_are_not_sent() {
        let mut c = cfg();
        c.nameserver = None;
        c.searchdomain = None;
        c.ipconfig = vec![IpConfig::default()];
        c.communicator.ssh_username = None;
        c.cloud_init_disable_upgrade_packages = true;
        let p = clone_params(&c, 123, "b", None).unwrap();
        for k in [
            "ciuser",
            "sshkeys",
            "ipconfig0",
            "nameserver",
            "searchdomain",
        ] {
            assert_eq!(get(&p, k), None, "{k}");
        }
        assert_eq!(get(&p, "ciupgrade"), Some("0"));
    }

    #[test]
    fn the_public_key_comes_from_the_private_key_file() {
        let d = tempfile::tempdir().unwrap();
        let k = kiln_guest::TempKeyPair::generate_ed25519("kiln_test").unwrap();
        k.write_private_key(&d.path().join("id")).unwrap();
        let mut c = cfg();
        c.communicator.ssh_private_key_file = Some("id".into());
        let line = public_key(&c, d.path()).unwrap().unwrap();
        let expected = k.public_key_openssh();
        // the comment may differ; the key type and material may not
        let head = |s: &str| s.split(' ').take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(head(&line), head(expected));
        c.communicator.ssh_private_key_file = Some("missing".into());
        assert!(public_key(&c, d.path()).is_err());
        c.communicator.ssh_private_key_file = None;
        assert_eq!(public_key(&c, d.path()).unwrap(), None);
    }

    #[test]
    fn an_ephemeral_key_only_without_other_credentials() {
        let mut c = cfg().communicator;
        c.r#type = "ssh".into();
        assert!(wants_temp_key(&c));
        c.ssh_password = Some(String::new()); // empty counts as unset
        assert!(wants_temp_key(&c));
        for set in [
            |c: &mut Communicator| c.ssh_password = Some("pw".into()),
            |c: &mut Communicator| c.ssh_private_key_file = Some("id".into()),
            |c: &mut Communicator| c.ssh_agent_auth = true,
            |c: &mut Communicator| c.r#type = "none".into(),
        ] {
            let mut c2 = c.clone();
            set(&mut c2);
            assert!(!wants_temp_key(&c2), "{c2:?}");
        }
    }

    #[test]
    fn the_ephemeral_key_reaches_sshkeys_with_its_comment() {
        let k = generate_temp_key().unwrap();
        let line = k.public_key_openssh();
        let comment = key_comment(line).unwrap();
        assert!(
            comment.starts_with("kiln_") && comment.len() == 21,
            "{line}"
        );
        assert_ne!(
            key_comment(generate_temp_key().unwrap().public_key_openssh()),
            Some(comment),
            "two builds got the same comment"
        );
        let p = clone_params(&cfg(), 123, "b", Some(line)).unwrap();
        let sent = get(&p, "sshkeys").unwrap();
        let back = percent_encoding::percent_decode_str(sent)
            .decode_utf8()
            .unwrap();
        assert_eq!(back, line);
        assert!(back.starts_with("ssh-ed25519 ") && back.ends_with(&format!(" {comment}")));
        // a comment a sed address would have to quote is not used for the cleanup
        assert_eq!(key_comment("ssh-ed25519 AAAA a/b"), None);
        assert_eq!(key_comment("ssh-ed25519 AAAA"), None);
    }

    #[test]
    fn the_cleanup_removes_only_the_ephemeral_line() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let keys = "ssh-ed25519 AAAAother me@host\n\
                    ssh-ed25519 AAAAtemp kiln_00112233aabbccdd\n\
                    ssh-rsa AAAAmore kiln_00112233aabbccdd-not\n";
        std::fs::write(ssh.join("authorized_keys"), keys).unwrap();
        let [user, root] = remove_key_commands("kiln_00112233aabbccdd");
        let out = std::process::Command::new("sh")
            .args(["-c", &user])
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(ssh.join("authorized_keys")).unwrap(),
            "ssh-ed25519 AAAAother me@host\nssh-rsa AAAAmore kiln_00112233aabbccdd-not\n"
        );
        assert!(!ssh.join("authorized_keys.bak").exists());
        assert!(root.starts_with(
            "sudo sed -i.bak '/ kiln_00112233aabbccdd$/d' /root/.ssh/authorized_keys"
        ));
    }
}
