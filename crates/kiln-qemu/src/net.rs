//! The sandbox LAN: a Linux bridge with a private address and dnsmasq as DHCP server, inside the
//! *current* network namespace, plus PVE-style tap devices (`tap{vmid}i{n}`) attached to it.
//!
//! [`SandboxNetwork::setup`] refuses to run in the host's root namespace (compares
//! `/proc/self/ns/net` with `/proc/1/ns/net`) unless [`NetOptions::allow_root_namespace`] is set.
//! Everything it creates is removed on [`SandboxNetwork::teardown`] / drop.
//!
//! Network namespaces are per thread. Either run the whole process inside one (`ip netns exec NAME
//! kiln sandbox serve …`, which is what the tests do by re-executing themselves), or call
//! [`Netns::enter`] on the main thread *before* starting the tokio runtime.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Errors of network setup.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("refusing to create the sandbox network in the host's root network namespace; run inside a namespace (e.g. `ip netns exec NAME …`) or pass the explicit override")]
    RootNamespace,
    #[error("invalid subnet '{0}' (expected an IPv4 CIDR like 10.77.0.0/24, prefix 8..=29)")]
    InvalidSubnet(String),
    #[error("`{cmd}` failed: {msg}")]
    Command { cmd: String, msg: String },
    #[error("bridge '{0}' does not exist")]
    NoBridge(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        todo!("{s}")
    }
}

impl Subnet {
    /// First host address (the bridge's address and the guests' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        todo!()
    }
    /// Dotted netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        todo!()
    }
    /// DHCP range handed to dnsmasq (second half of the subnet).
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        todo!()
    }
}

/// Options of [`SandboxNetwork::setup`].
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Bridge name (`vmbr0`).
    pub bridge: String,
    pub subnet: Subnet,
    /// dnsmasq lease file, pid file and log go here.
    pub state_dir: PathBuf,
    /// Allow running in the host's root namespace (never in tests).
    pub allow_root_namespace: bool,
}

impl NetOptions {
    pub fn new(bridge: &str, subnet: Subnet, state_dir: &Path) -> Self {
        NetOptions {
            bridge: bridge.to_string(),
            subnet,
            state_dir: state_dir.to_path_buf(),
            allow_root_namespace: false,
        }
    }
}

/// A DHCP lease from dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

/// Bridge + dnsmasq in the current network namespace.
#[derive(Debug)]
pub struct SandboxNetwork {
    _private: (),
}

impl SandboxNetwork {
    /// Create the bridge with the subnet's gateway address, bring `lo` and the bridge up, start
    /// dnsmasq (DHCP only, `--port=0`) on the bridge.
    pub fn setup(opts: NetOptions) -> Result<Self, NetError> {
        todo!("{opts:?}")
    }

    pub fn bridge(&self) -> &str {
        todo!()
    }

    /// The bridge's address (guests' default gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        todo!()
    }

    pub fn lease_file(&self) -> &Path {
        todo!()
    }

    /// Create `tap{vmid}i{n}` attached to the bridge (idempotent); returns its name.
    pub fn add_tap(&self, vmid: u32, n: u32) -> Result<String, NetError> {
        todo!("{vmid}{n}")
    }

    /// Current lease of a MAC address (case-insensitive), if any.
    pub fn lease_for(&self, mac: &str) -> Option<Lease> {
        todo!("{mac}")
    }

    /// All current leases.
    pub fn leases(&self) -> Vec<Lease> {
        todo!()
    }

    /// Stop dnsmasq, delete tap devices created here and the bridge. Also done on drop.
    pub fn teardown(&mut self) -> Result<(), NetError> {
        todo!()
    }
}

/// Create (if missing) a tap device `name` and attach it to `bridge` in the current namespace.
pub fn ensure_tap(name: &str, bridge: &str) -> Result<(), NetError> {
    todo!("{name}{bridge}")
}

/// Delete a tap device (ignores a missing one).
pub fn remove_tap(name: &str) -> Result<(), NetError> {
    todo!("{name}")
}

/// True if this thread runs in the host's root network namespace.
pub fn in_root_namespace() -> Result<bool, NetError> {
    todo!()
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME` (fails if it exists).
    pub fn create(name: &str) -> Result<Self, NetError> {
        todo!("{name}")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Move the calling thread into this namespace (`setns`). Threads spawned afterwards inherit
    /// it; call before building a tokio runtime.
    pub fn enter(&self) -> Result<(), NetError> {
        todo!()
    }
}
