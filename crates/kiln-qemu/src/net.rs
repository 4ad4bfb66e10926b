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
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        let bad = || NetError::InvalidSubnet(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=29).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }
    /// First host address (the bridge's address and the guests' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
    /// Dotted netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - self.prefix))
    }
    /// DHCP range handed to dnsmasq (second half of the subnet, without the broadcast address).
    pub fn dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let n = u32::from(self.network);
        (
            Ipv4Addr::from(n + self.size() / 2),
            Ipv4Addr::from(n + self.size() - 2),
        )
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
    /// Lower-case MAC address.
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

/// Bridge + dnsmasq in the current network namespace.
#[derive(Debug)]
pub struct SandboxNetwork {
    opts: NetOptions,
    created_bridge: bool,
    dnsmasq: Option<Child>,
    lease_file: PathBuf,
    torn_down: bool,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, NetError> {
    let line = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Command {
            cmd: line.clone(),
            msg: format!("cannot run {cmd}: {e} (install iproute2)"),
        })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: line,
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

impl SandboxNetwork {
    /// Create the bridge with the subnet's gateway address, bring `lo` and the bridge up, start
    /// dnsmasq (DHCP only, `--port=0`) on the bridge.
    pub fn setup(opts: NetOptions) -> Result<Self, NetError> {
        if in_root_namespace()? && !opts.allow_root_namespace {
            return Err(NetError::RootNamespace);
        }
        std::fs::create_dir_all(&opts.state_dir).map_err(|source| NetError::Io {
            what: format!("creating {}", opts.state_dir.display()),
            source,
        })?;
        let br = opts.bridge.as_str();
        let lease_file = opts.state_dir.join("dnsmasq.leases");
        let mut me = SandboxNetwork {
            created_bridge: false,
            dnsmasq: None,
            lease_file,
            torn_down: false,
            opts: opts.clone(),
        };
        run("ip", &["link", "set", "lo", "up"])?;
        if !link_exists(br) {
            run("ip", &["link", "add", br, "type", "bridge"])?;
            me.created_bridge = true;
        }
        let addr = format!("{}/{}", opts.subnet.gateway(), opts.subnet.prefix);
        if let Err(e) = run("ip", &["addr", "add", &addr, "dev", br]) {
            if !e.to_string().contains("File exists") {
                return Err(e);
            }
        }
        run("ip", &["link", "set", br, "up"])?;
        let (lo, hi) = opts.subnet.dhcp_range();
        let _ = std::fs::write(&me.lease_file, b"");
        let log = opts.state_dir.join("dnsmasq.log");
        let args = [
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--port=0".to_string(),
            format!("--interface={br}"),
            "--bind-interfaces".to_string(),
            "--except-interface=lo".to_string(),
            format!("--dhcp-range={lo},{hi},{},1h", opts.subnet.netmask()),
            "--dhcp-authoritative".to_string(),
            format!("--dhcp-option=option:router,{}", opts.subnet.gateway()),
            format!("--dhcp-leasefile={}", me.lease_file.display()),
            format!(
                "--pid-file={}",
                opts.state_dir.join("dnsmasq.pid").display()
            ),
            "--user=root".to_string(),
            "--log-dhcp".to_string(),
            format!("--log-facility={}", log.display()),
        ];
        let mut cmd = Command::new("dnsmasq");
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        set_pdeathsig(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| NetError::Command {
            cmd: "dnsmasq".into(),
            msg: format!("{e} (install dnsmasq-base)"),
        })?;
        // dnsmasq fails fast (bind errors, bad options); give it a moment
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(NetError::Command {
                cmd: format!("dnsmasq {}", args.join(" ")),
                msg: format!("exited with {status}: {} {}", err.trim(), log_text.trim()),
            });
        }
        me.dnsmasq = Some(child);
        tracing::info!(bridge = br, subnet = %opts.subnet, "sandbox network up");
        Ok(me)
    }

    pub fn bridge(&self) -> &str {
        &self.opts.bridge
    }

    pub fn subnet(&self) -> Subnet {
        self.opts.subnet
    }

    /// The bridge's address (guests' default gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        self.opts.subnet.gateway()
    }

    pub fn lease_file(&self) -> &Path {
        &self.lease_file
    }

    /// Create `tap{vmid}i{n}` attached to the bridge (idempotent); returns its name.
    pub fn add_tap(&self, vmid: u32, n: u32) -> Result<String, NetError> {
        let name = crate::spec::tap_name(vmid, n);
        ensure_tap(&name, &self.opts.bridge)?;
        Ok(name)
    }

    /// Current lease of a MAC address (case-insensitive), if any.
    pub fn lease_for(&self, mac: &str) -> Option<Lease> {
        let mac = mac.to_ascii_lowercase();
        self.leases().into_iter().find(|l| l.mac == mac)
    }

    /// All current leases.
    pub fn leases(&self) -> Vec<Lease> {
        parse_leases(&std::fs::read_to_string(&self.lease_file).unwrap_or_default())
    }

    /// Stop dnsmasq, delete the tap devices on the bridge and the bridge (if created here). Also
    /// done on drop.
    pub fn teardown(&mut self) -> Result<(), NetError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let br = self.opts.bridge.clone();
        let mut first_err = None;
        if let Ok(ports) = std::fs::read_dir(Path::new("/sys/class/net").join(&br).join("brif")) {
            for p in ports.flatten() {
                let name = p.file_name().to_string_lossy().to_string();
                if name.starts_with("tap") {
                    if let Err(e) = remove_tap(&name) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if self.created_bridge && link_exists(&br) {
            if let Err(e) = run("ip", &["link", "del", &br]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for SandboxNetwork {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("sandbox network teardown: {e}");
        }
    }
}

/// Parse dnsmasq's lease file (`expiry mac ip hostname client-id` per line).
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            Some(Lease {
                mac: f[1].to_ascii_lowercase(),
                ip: f[2].parse().ok()?,
                hostname: f.get(3).filter(|h| **h != "*").map(|h| h.to_string()),
            })
        })
        .collect()
}

fn set_pdeathsig(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Create (if missing) a tap device `name` and attach it to `bridge` in the current namespace.
pub fn ensure_tap(name: &str, bridge: &str) -> Result<(), NetError> {
    if !link_exists(bridge) {
        return Err(NetError::NoBridge(bridge.to_string()));
    }
    if !link_exists(name) {
        run("ip", &["tuntap", "add", "dev", name, "mode", "tap"])?;
    }
    run("ip", &["link", "set", name, "master", bridge, "up"])?;
    Ok(())
}

/// Delete a tap device (ignores a missing one).
pub fn remove_tap(name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    run("ip", &["link", "del", name]).map(drop)
}

/// True if this thread runs in the host's root network namespace.
///
/// Compares `/proc/thread-self/ns/net` with PID 1's namespace. Where PID 1's namespace cannot be
/// read (some sandboxes deny it even to root), the current namespace counts as "not root" only if
/// it is a named namespace (`/run/netns/*`) or has no interfaces besides `lo`, bridges and taps.
pub fn in_root_namespace() -> Result<bool, NetError> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/thread-self/ns/net").map_err(|source| NetError::Io {
        what: "reading /proc/thread-self/ns/net".into(),
        source,
    })?;
    if let Ok(init) = std::fs::metadata("/proc/1/ns/net") {
        return Ok(init.ino() == me.ino() && init.dev() == me.dev());
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            if std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == me.ino()) {
                return Ok(false);
            }
        }
    }
    let only_ours = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten().all(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name == "lo"
                    || e.path().join("bridge").exists()
                    || e.path().join("tun_flags").exists()
            })
        })
        .unwrap_or(false);
    Ok(!only_ours)
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME` (fails if it exists).
    pub fn create(name: &str) -> Result<Self, NetError> {
        run("ip", &["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Move the calling thread into this namespace (`setns`). Threads spawned afterwards inherit
    /// it; call before building a tokio runtime.
    pub fn enter(&self) -> Result<(), NetError> {
        use std::os::fd::AsRawFd;
        let path = Path::new("/run/netns").join(&self.name);
        let f = std::fs::File::open(&path).map_err(|source| NetError::Io {
            what: format!("opening {}", path.display()),
            source,
        })?;
        // SAFETY: setns(2) on a valid namespace fd owned by `f`.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(NetError::Io {
                what: format!("setns {}", self.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            tracing::warn!("deleting netns {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let s: Subnet = "10.77.0.9/24".parse().unwrap();
        assert_eq!(s.network, Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            s.dhcp_range(),
            (Ipv4Addr::new(10, 77, 0, 128), Ipv4Addr::new(10, 77, 0, 254))
        );
        assert_eq!(s.to_string(), "10.77.0.0/24");
        let s: Subnet = "192.168.100.0/28".parse().unwrap();
        assert_eq!(
            s.dhcp_range(),
            (
                Ipv4Addr::new(192, 168, 100, 8),
                Ipv4Addr::new(192, 168, 100, 14)
            )
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/30",
            "x/24",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lease_file() {
        let l = parse_leases(
            "1764130000 bc:24:11:5e:7a:01 10.77.0.150 ubuntu 01:bc:24:11:5e:7a:01\n\
             1764130001 BC:24:11:00:00:02 10.77.0.151 * *\nbroken\n",
        );
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].hostname.as_deref(), Some("ubuntu"));
        assert_eq!(l[1].mac, "bc:24:11:00:00:02");
        assert_eq!(l[1].hostname, None);
    }

    #[test]
    fn namespace_check_answers() {
        assert!(in_root_namespace().is_ok());
    }
}
