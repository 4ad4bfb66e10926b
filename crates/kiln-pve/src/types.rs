//! Typed responses. Every struct ignores keys it does not know (real PVE
//! replies carry more than the schema says) and tolerates numbers sent as
//! strings and booleans sent as `0`/`1`.

use crate::de;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Form parameters for open-ended endpoints (create VM, config update, ...).
/// Sent in the given order, `application/x-www-form-urlencoded`. Booleans
/// must already be `"0"`/`"1"`.
pub type Params = Vec<(String, String)>;

/// `GET /version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Version {
    /// Full version, e.g. `9.1.9`.
    #[serde(default, deserialize_with = "de::string_lenient")]
    pub version: String,
    /// Release, e.g. `9.1`.
    #[serde(default, deserialize_with = "de::string_lenient")]
    pub release: String,
    /// Git id of the build.
    #[serde(default, deserialize_with = "de::string_lenient")]
    pub repoid: String,
}

impl Version {
    /// `(major, minor)` parsed from `release` (or `version`); `None` if unparsable.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let src = if self.release.is_empty() {
            &self.version
        } else {
            &self.release
        };
        let mut it = src.split('.');
        let major = it.next()?.trim().parse().ok()?;
        let minor = it.next().and_then(|m| m.trim().parse().ok()).unwrap_or(0);
        Some((major, minor))
    }
}

/// Filter for `GET /cluster/resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    /// QEMU VMs and LXC containers.
    Vm,
    /// Storages.
    Storage,
    /// Nodes.
    Node,
}

impl ResourceType {
    /// The `type=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Vm => "vm",
            ResourceType::Storage => "storage",
            ResourceType::Node => "node",
        }
    }
}

/// One entry of `GET /cluster/resources`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ClusterResource {
    /// `qemu/9000`, `storage/pve/local`, `node/pve` ...
    #[serde(default)]
    pub id: String,
    /// `qemu`, `lxc`, `storage`, `node`, ...
    #[serde(default, rename = "type")]
    pub kind: String,
    /// VM id (VMs only).
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    /// VM name (VMs only).
    #[serde(default)]
    pub name: Option<String>,
    /// Node the resource lives on.
    #[serde(default)]
    pub node: Option<String>,
    /// `running`, `stopped`, `available`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// `true` for templates.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub template: bool,
    /// Storage id (storages only).
    #[serde(default)]
    pub storage: Option<String>,
    /// Pool the resource belongs to.
    #[serde(default)]
    pub pool: Option<String>,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NodeInfo {
    /// Node name.
    #[serde(default)]
    pub node: String,
    /// `online`, `offline`, `unknown`.
    #[serde(default)]
    pub status: String,
    /// SSL fingerprint of the node certificate, if reported.
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

/// One entry of `GET /nodes/{node}/network`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct NetworkIface {
    /// Interface name (`vmbr0`).
    #[serde(default)]
    pub iface: String,
    /// `bridge`, `eth`, `vlan`, `OVSBridge`, ...
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Active right now.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub active: bool,
    /// IPv4 address.
    #[serde(default)]
    pub address: Option<String>,
    /// IPv4 CIDR.
    #[serde(default)]
    pub cidr: Option<String>,
    /// Bridge ports.
    #[serde(default)]
    pub bridge_ports: Option<String>,
    /// VLAN aware bridge.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub bridge_vlan_aware: bool,
}

impl NetworkIface {
    /// `true` for Linux and OVS bridges.
    pub fn is_bridge(&self) -> bool {
        self.kind == "bridge" || self.kind == "OVSBridge"
    }
}

/// One entry of `GET /nodes/{node}/qemu`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct QemuListEntry {
    /// VM id.
    #[serde(deserialize_with = "de::u32_lenient")]
    pub vmid: u32,
    /// VM name.
    #[serde(default)]
    pub name: Option<String>,
    /// `running` / `stopped`.
    #[serde(default)]
    pub status: String,
    /// `true` for templates.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub template: bool,
    /// Lock held (`create`, `clone`, `backup`, ...).
    #[serde(default)]
    pub lock: Option<String>,
}

/// `GET /nodes/{node}/qemu/{vmid}/status/current`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct VmStatus {
    /// `running` / `stopped`.
    #[serde(default)]
    pub status: String,
    /// QMP status (`running`, `paused`, `prelaunch`, `shutdown`...).
    #[serde(default)]
    pub qmpstatus: Option<String>,
    /// VM id.
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
    /// VM name.
    #[serde(default)]
    pub name: Option<String>,
    /// Lock held.
    #[serde(default)]
    pub lock: Option<String>,
    /// QEMU process id.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub pid: Option<u64>,
    /// Uptime in seconds.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub uptime: Option<u64>,
    /// Guest agent enabled in the config.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub agent: bool,
    /// `true` for templates.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub template: bool,
}

impl VmStatus {
    /// `true` when PVE says `running`.
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `GET /nodes/{node}/qemu/{vmid}/config`: every key as its wire text
/// (numbers and booleans converted to strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmConfig(pub BTreeMap<String, String>);

impl VmConfig {
    /// Value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// The config `digest` (for optimistic locking on update).
    pub fn digest(&self) -> Option<&str> {
        self.get("digest")
    }
    /// Keys named `unused0`, `unused1`, ... (detached disks).
    pub fn unused_disks(&self) -> Vec<String> {
        self.keys_with_prefix("unused")
    }
    /// Keys like `ide2`, `scsi0`, ... whose value has `media=cdrom`.
    pub fn cdrom_drives(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| is_drive_key(k) && v.split(',').any(|p| p.trim() == "media=cdrom"))
            .map(|(k, _)| k.clone())
            .collect()
    }
    /// Keys that start with `prefix` followed only by digits.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.0
            .keys()
            .filter(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .cloned()
            .collect()
    }
}

fn is_drive_key(k: &str) -> bool {
    ["ide", "sata", "scsi", "virtio"].iter().any(|p| {
        k.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

impl<'de> Deserialize<'de> for VmConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(d)?;
        Ok(VmConfig(
            m.into_iter()
                .map(|(k, v)| (k, de::value_to_string(&v)))
                .collect(),
        ))
    }
}

/// One IP address reported by the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AgentIpAddress {
    /// The address (IPv6 may carry a `%zone`).
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "ip-address-type", default)]
    pub ip_address_type: String,
    /// Prefix length.
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub prefix: Option<u32>,
}

impl AgentIpAddress {
    /// `true` for `ipv4`.
    pub fn is_ipv4(&self) -> bool {
        self.ip_address_type.eq_ignore_ascii_case("ipv4")
    }
    /// The address parsed, with any `%zone` removed.
    pub fn parsed(&self) -> Option<std::net::IpAddr> {
        let a = self.ip_address.split('%').next().unwrap_or_default();
        a.parse().ok()
    }
}

/// One interface from `agent/network-get-interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct AgentInterface {
    /// Interface name in the guest (`eth0`, `ens18`, `lo`).
    pub name: String,
    /// MAC address.
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    /// Addresses (may be absent).
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIpAddress>,
}

impl AgentInterface {
    /// Addresses that are not loopback (`127.0.0.0/8`, `::1`).
    pub fn non_loopback(&self) -> impl Iterator<Item = &AgentIpAddress> {
        self.ip_addresses
            .iter()
            .filter(|a| a.parsed().is_some_and(|ip| !ip.is_loopback()))
    }
}

/// Choose the guest IP the way Packer does, but better: with `interface` the
/// first non-loopback address of that interface (IPv4 preferred), else the
/// first non-loopback IPv4 of any interface, else `None` (IPv6-only guests
/// need `interface`). Link-local IPv6 (`fe80::/10`) is never chosen.
pub fn select_guest_ip(
    ifaces: &[AgentInterface],
    interface: Option<&str>,
) -> Option<std::net::IpAddr> {
    let usable = |a: &AgentIpAddress| match a.parsed() {
        Some(std::net::IpAddr::V6(v6)) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        Some(std::net::IpAddr::V4(v4)) => !v4.is_link_local(),
        None => false,
    };
    match interface {
        Some(name) => {
            let i = ifaces.iter().find(|i| i.name == name)?;
            let addrs: Vec<_> = i.non_loopback().filter(|a| usable(a)).collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .and_then(|a| a.parsed())
        }
        None => ifaces
            .iter()
            .flat_map(|i| i.non_loopback())
            .find(|a| a.is_ipv4() && usable(a))
            .and_then(|a| a.parsed()),
    }
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StorageInfo {
    /// Storage id.
    pub storage: String,
    /// Storage type (`dir`, `lvmthin`, `zfspool`, `nfs`, ...).
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Comma-separated content types (`iso,vztmpl,images`).
    #[serde(default)]
    pub content: String,
    /// Active on this node.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub active: bool,
    /// Enabled.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub enabled: bool,
    /// Shared between nodes.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub shared: bool,
    /// Bytes available.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub avail: Option<u64>,
    /// Bytes total.
    #[serde(default, deserialize_with = "de::opt_u64")]
    pub total: Option<u64>,
}

impl StorageInfo {
    /// `true` if the storage accepts that content type (`iso`, `images`, ...).
    pub fn supports(&self, content: &str) -> bool {
        self.content.split(',').any(|c| c.trim() == content)
    }
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StorageContent {
    /// Full volume id (`local:iso/debian.iso`).
    pub volid: String,
    /// Content type (`iso`, `images`, ...).
    #[serde(default)]
    pub content: Option<String>,
    /// Format (`iso`, `raw`, `qcow2`, ...).
    #[serde(default)]
    pub format: Option<String>,
    /// Size in bytes.
    #[serde(default, deserialize_with = "de::u64_lenient")]
    pub size: u64,
    /// Owner VM id for disk images.
    #[serde(default, deserialize_with = "de::opt_u32")]
    pub vmid: Option<u32>,
}

impl StorageContent {
    /// The file name part of the volume id (`debian.iso` for `local:iso/debian.iso`).
    pub fn file_name(&self) -> &str {
        let after_colon = self.volid.split_once(':').map_or(&*self.volid, |x| x.1);
        after_colon.rsplit('/').next().unwrap_or(after_colon)
    }
}

/// Content types accepted by upload / download-url.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadContent {
    /// ISO images (`.iso`, `.img`).
    Iso,
    /// Container templates.
    Vztmpl,
    /// Disk images to import (`.qcow2`, `.raw`, `.vmdk`, `.ova`).
    Import,
}

impl UploadContent {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadContent::Iso => "iso",
            UploadContent::Vztmpl => "vztmpl",
            UploadContent::Import => "import",
        }
    }
}

/// A checksum PVE verifies after upload/download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `md5`, `sha1`, `sha224`, `sha256`, `sha384`, `sha512`.
    pub algorithm: String,
    /// Hex digest.
    pub value: String,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct TaskStatus {
    /// `running` or `stopped`.
    #[serde(default)]
    pub status: String,
    /// Present when stopped: `OK`, `WARNINGS: n`, or the error text.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// Task type.
    #[serde(default, rename = "type")]
    pub task_type: Option<String>,
    /// Task object id.
    #[serde(default, deserialize_with = "de::string_lenient")]
    pub id: String,
    /// Node.
    #[serde(default)]
    pub node: Option<String>,
}

impl TaskStatus {
    /// Still running (no exit status yet).
    pub fn is_running(&self) -> bool {
        self.exitstatus.is_none() && self.status != "stopped"
    }
    /// Finished with `OK` or `WARNINGS: n`.
    pub fn is_ok(&self) -> bool {
        self.exitstatus
            .as_deref()
            .is_some_and(|s| s == "OK" || s.starts_with("WARNINGS"))
    }
}

/// One line of a task log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TaskLogLine {
    /// Line number (1-based).
    #[serde(default, deserialize_with = "de::u64_lenient")]
    pub n: u64,
    /// Text.
    #[serde(default)]
    pub t: String,
}

/// A page of a task log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskLog {
    /// Lines of this page.
    pub lines: Vec<TaskLogLine>,
    /// Total number of lines in the log.
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_tolerates_numbers_and_strings() {
        let c: VmConfig = serde_json::from_str(
            r#"{"memory":"2048","cores":2,"agent":"1","ide2":"local:iso/x.iso,media=cdrom,size=10M","unused0":"local:9000/a.raw","unused12":"x","unusedx":"y","digest":"abc"}"#,
        )
        .unwrap();
        assert_eq!(c.get("memory"), Some("2048"));
        assert_eq!(c.get("cores"), Some("2"));
        assert_eq!(c.digest(), Some("abc"));
        assert_eq!(c.unused_disks(), vec!["unused0", "unused12"]);
        assert_eq!(c.cdrom_drives(), vec!["ide2"]);
    }

    #[test]
    fn guest_ip_selection() {
        let j = r#"[
          {"name":"lo","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8},{"ip-address":"::1","ip-address-type":"ipv6","prefix":128}]},
          {"name":"docker0","ip-addresses":[{"ip-address":"fe80::1%docker0","ip-address-type":"ipv6","prefix":64}]},
          {"name":"eth0","hardware-address":"bc:24:11:00:00:01","ip-addresses":[{"ip-address":"fe80::be24:11ff:fe00:1%eth0","ip-address-type":"ipv6","prefix":64},{"ip-address":"2001:db8::5","ip-address-type":"ipv6","prefix":64},{"ip-address":"10.0.0.5","ip-address-type":"ipv4","prefix":"24"}]},
          {"name":"eth1"}
        ]"#;
        let ifs: Vec<AgentInterface> = serde_json::from_str(j).unwrap();
        assert_eq!(select_guest_ip(&ifs, None).unwrap().to_string(), "10.0.0.5");
        assert_eq!(
            select_guest_ip(&ifs, Some("eth0")).unwrap().to_string(),
            "10.0.0.5"
        );
        assert_eq!(select_guest_ip(&ifs, Some("docker0")), None);
        assert_eq!(select_guest_ip(&ifs, Some("eth1")), None);
        assert_eq!(select_guest_ip(&ifs, Some("nope")), None);
        assert_eq!(ifs[2].ip_addresses[2].prefix, Some(24));
    }

    #[test]
    fn task_status_ok() {
        let mut t = TaskStatus {
            status: "stopped".into(),
            exitstatus: Some("WARNINGS: 2".into()),
            ..Default::default()
        };
        assert!(t.is_ok() && !t.is_running());
        t.exitstatus = Some("can't lock file".into());
        assert!(!t.is_ok());
        t.status = "running".into();
        t.exitstatus = None;
        assert!(t.is_running());
    }

    #[test]
    fn version_parse() {
        let v: Version =
            serde_json::from_str(r#"{"release":"9.1","version":"9.1.9","repoid":"x"}"#).unwrap();
        assert_eq!(v.major_minor(), Some((9, 1)));
    }

    #[test]
    fn storage_content_name() {
        let c = StorageContent {
            volid: "local:iso/debian.iso".into(),
            ..Default::default()
        };
        assert_eq!(c.file_name(), "debian.iso");
    }
}
