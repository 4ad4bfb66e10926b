//! A network namespace for tap-networked guests: bridge `br0` (gateway address), tap `tap0`
//! enslaved to it, and dnsmasq serving DHCP (no DNS) on the bridge. Nothing touches the root
//! namespace. Everything is removed on drop (dnsmasq killed, namespace deleted).
//! Needs root, iproute2 and dnsmasq (Debian: dnsmasq-base).

use crate::{io, run, Result};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

pub struct NetNs {
    name: String,
    dir: PathBuf,
    created: bool,
}

impl NetNs {
    /// Bridge address inside the namespace (the guest's gateway and where test servers listen).
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
    pub const TAP: &'static str = "tap0";
    pub const BRIDGE: &'static str = "br0";

    /// Create `kiln-<tag>-<pid>` with bridge, tap and dnsmasq (range .100–.200).
    pub fn create(tag: &str) -> Result<NetNs> {
        let name = format!("kiln-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let mut ns = NetNs {
            name,
            dir,
            created: true,
        };
        ns.setup()?;
        Ok(ns)
    }

    fn setup(&mut self) -> Result<()> {
        let n = self.name.clone();
        let ip = |args: &[&str]| run(Command::new("ip").arg("-n").arg(&n).args(args));
        ip(&["link", "set", "lo", "up"])?;
        ip(&["link", "add", Self::BRIDGE, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::GATEWAY),
            "dev",
            Self::BRIDGE,
        ])?;
        ip(&["link", "set", Self::BRIDGE, "up"])?;
        ip(&["tuntap", "add", "dev", Self::TAP, "mode", "tap"])?;
        ip(&["link", "set", Self::TAP, "master", Self::BRIDGE])?;
        ip(&["link", "set", Self::TAP, "up"])?;
        let d = self.dir.display().to_string();
        run(self.command("dnsmasq").args([
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            &format!("--interface={}", Self::BRIDGE),
            "--bind-interfaces",
            "--dhcp-range=192.168.77.100,192.168.77.200,255.255.255.0,1h",
            "--dhcp-authoritative",
            "--dhcp-option=option:router,192.168.77.1",
            &format!("--dhcp-leasefile={d}/leases"),
            &format!("--pid-file={d}/dnsmasq.pid"),
            "--log-dhcp",
            &format!("--log-facility={d}/dnsmasq.log"),
        ]))?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// dnsmasq's lease file ("expiry mac ip hostname clientid" lines).
    pub fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("leases")).unwrap_or_default()
    }

    /// dnsmasq's log.
    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("dnsmasq.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        if self.created {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
