//! The cloud-init drive PVE generates for a VM with a `cloudinit` volume.
//!
//! Content follows `qemu-server`'s NoCloud generator: `user-data` (`#cloud-config` with hostname,
//! `manage_etc_hosts`, fqdn, `user`, `password` (the stored hash), `ssh_authorized_keys`, `chpasswd`,
//! `users: [default]`, `package_upgrade`), `network-config` (version 1, one `physical` entry per
//! `netN` that has an `ipconfigN`, matched by MAC, named `ethN`, plus a `nameserver` entry),
//! `meta-data` (`instance-id: <sha1 of user-data + network-config>`, so it changes whenever the
//! config does) and an empty `vendor-data`; `cicustom` snippets replace the generated parts.
//! The ISO (label `cidata`, Rock Ridge + Joliet so the lower-case names survive) is written in pure
//! Rust with `hadris-iso`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors building the cloud-init drive.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("invalid value for '{key}': {msg}")]
    Invalid { key: String, msg: String },
    #[error("cloud-init type '{0}' is not supported by the kiln sandbox (only nocloud)")]
    UnsupportedType(String),
    #[error("{0} is not in the snippets directory")]
    NotSnippet(String),
    #[error("Cloud-Init sum of snippets too big (> 3 MiB)")]
    TooBig,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing cloud-init ISO {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

/// DNS settings used when the config has no `nameserver`/`searchdomain` (PVE takes the host's
/// `/etc/resolv.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDns {
    pub search: Vec<String>,
    pub nameservers: Vec<String>,
}

impl HostDns {
    /// Parse `/etc/resolv.conf` (first three nameservers, `search`/`domain`).
    pub fn from_resolv_conf() -> Self {
        todo!()
    }
}

/// The generated files of a NoCloud drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCloudData {
    pub user_data: String,
    pub meta_data: String,
    pub network_config: String,
    pub vendor_data: String,
}

impl NoCloudData {
    /// The `instance-id` in `meta-data` (when not overridden by a `cicustom` meta snippet).
    pub fn instance_id(&self) -> Option<&str> {
        todo!()
    }
}

/// Generate the drive's files from a VM config. `snippet_path` resolves `cicustom` volume ids
/// (`local:snippets/user.yaml`) to files.
pub fn generate(
    vmid: u32,
    config: &BTreeMap<String, String>,
    host_dns: &HostDns,
    snippet_path: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<NoCloudData, CloudInitError> {
    todo!("{vmid}{config:?}{host_dns:?}{:?}", snippet_path("x"))
}

/// Write `data` as a NoCloud ISO (label `cidata`) to `path`.
pub fn write_iso(data: &NoCloudData, path: &Path) -> Result<(), CloudInitError> {
    todo!("{data:?}{path:?}")
}

/// Hash a plain-text `cipassword` the way PVE stores it (`crypt` SHA-256, `$5$<8-char salt>$…`).
/// Values that already look like a crypt hash (`$1$`, `$5$`, `$6$`, `$2a$`, `$2y$`) are returned
/// unchanged, as PVE does.
pub fn encrypt_password(plain: &str) -> String {
    todo!("{}", plain.len())
}

/// True if `value` is already a crypt hash PVE would store unchanged.
pub fn is_password_hash(value: &str) -> bool {
    todo!("{}", value.len())
}
