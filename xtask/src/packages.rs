//! The one Debian package installer of `xtask test`, `xtask demo` and `xtask test-guest`.
//!
//! What it guarantees:
//!
//! * **apt never removes anything.** Every install is simulated first (`apt-get install -s`); a plan that
//!   removes a package, or downgrades one we did not choose to downgrade, is resolved or refused before
//!   anything changes. The real install runs with `--no-remove` as a second guard.
//! * **Resolution, not surprises.** The classic case: a machine ships `qemu-utils` 10.0 from
//!   bookworm-backports (without the backports source), and `qemu-system-x86` can only come from bookworm
//!   (7.2), whose `qemu-system-common` that `qemu-utils` `Breaks:`. apt's own answer is to remove
//!   `qemu-utils`. We instead try, in order: (1) the missing packages at the installed package's version
//!   (keeps the newer one, when its suite is reachable); (2) the conflicting installed package at a
//!   version of the same suite as the rest (the consistent set), said loudly. Otherwise we stop and say
//!   which package and why.
//! * **Binaries, not dpkg's word.** After installing, every binary and file the tests use is looked up;
//!   a missing one is an error naming the package that provides it.
//!
//! Each [`Need`] is a package with the binaries/files it must provide. The tables at the bottom say who
//! needs what.

use anyhow::{bail, Context, Result};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian package and what must exist once it is installed (a command on PATH, or an absolute path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub pkg: &'static str,
    pub provides: &'static [&'static str],
}

const fn need(pkg: &'static str, provides: &'static [&'static str]) -> Need {
    Need { pkg, provides }
}

// ---- what is needed, by whom ---------------------------------------------------------------------

/// QEMU guests (sandbox, test guest), UEFI firmware, disk images.
pub const QEMU: &[Need] = &[
    need("qemu-system-x86", &["qemu-system-x86_64"]),
    need("qemu-utils", &["qemu-img"]),
    need(
        "ovmf",
        &[
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        ],
    ),
    // tpmstate0: one swtpm per VM, as PVE runs it (swtpm_setup makes the state, swtpm serves it)
    need("swtpm", &["swtpm"]),
    need("swtpm-tools", &["swtpm_setup"]),
];

/// The sandbox's network: namespaces, a bridge, DHCP.
pub const NETWORK: &[Need] = &[
    need("iproute2", &["ip"]),
    need("dnsmasq-base", &["dnsmasq"]),
];

/// Building the test-guest ISO (`xtask/test-guest/build.sh`).
pub const GUEST_BUILD: &[Need] = &[
    need("debootstrap", &["debootstrap"]),
    need("grub-pc-bin", &["/usr/lib/grub/i386-pc/modinfo.sh"]),
    need(
        "grub-efi-amd64-bin",
        &["/usr/lib/grub/x86_64-efi/modinfo.sh"],
    ),
    need("grub-common", &["grub-mkrescue"]),
    need("xorriso", &["xorriso"]),
    need("mtools", &["mformat"]),
    need("cpio", &["cpio"]),
    need("busybox-static", &["/usr/bin/busybox"]),
    need("e2fsprogs", &["mke2fs", "debugfs"]), // debugfs: the cloud image from the installed disk
    need("dosfstools", &["mkfs.vfat"]),
    need("fdisk", &["sfdisk"]),
    need("zstd", &["zstd"]),
    need("bc", &["bc"]),
    need("kmod", &["depmod"]),
];

/// Communicator and provisioners.
pub const PROVISIONING: &[Need] = &[
    need("openssh-client", &["ssh", "ssh-keygen"]),
    need("ansible", &["ansible-playbook", "ansible-galaxy"]),
    need("curl", &["curl"]),
    need("ca-certificates", &["/etc/ssl/certs/ca-certificates.crt"]),
];

/// Only the test tiers: a real sshd, real Packer 1.6.6, the firewall backends, small tools.
pub const TEST_ONLY: &[Need] = &[
    need("openssh-server", &["/usr/sbin/sshd"]),
    need("packer", &["packer"]),
    need("iptables", &["iptables", "ip6tables"]),
    need("nftables", &["nft"]),
    need("ufw", &["ufw"]),
    need("python3", &["python3"]),
    need("socat", &["socat"]),
    need("dpkg", &["dpkg-deb"]),
    need("gzip", &["gzip"]),
];

/// The union of several tables, each package once.
pub fn union(tables: &[&[Need]]) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    for n in tables.iter().flat_map(|t| t.iter()) {
        if !out.iter().any(|o| o.pkg == n.pkg) {
            out.push(*n);
        }
    }
    out
}

/// What `cargo xtask test` needs.
pub fn for_tests() -> Vec<Need> {
    union(&[QEMU, NETWORK, GUEST_BUILD, PROVISIONING, TEST_ONLY])
}

/// What `cargo xtask demo` needs (it builds the test guest too).
pub fn for_demo() -> Vec<Need> {
    union(&[QEMU, NETWORK, GUEST_BUILD, PROVISIONING])
}

/// `cargo xtask packages`: the package step of `xtask test` (or `--demo`: of `xtask demo`) alone.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only check that every package, binary and file is there; install nothing
    #[arg(long)]
    check: bool,
    /// The demo's set instead of the test suite's
    #[arg(long)]
    demo: bool,
}

pub fn run(args: Args) -> Result<()> {
    let needs = if args.demo { for_demo() } else { for_tests() };
    ensure(
        "packages",
        &needs,
        Options {
            install: !args.check,
        },
    )
}

// ---- the installer ---------------------------------------------------------------------------------

/// How the installer may act.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Install what is missing (false: only report, and fail when something is missing).
    pub install: bool,
}

/// Makes sure every need is met: installs what is missing without letting apt remove anything, then
/// checks each binary/file. Prints one line per decision.
pub fn ensure(what: &str, needs: &[Need], opts: Options) -> Result<()> {
    let missing: Vec<Need> = needs.iter().copied().filter(|n| !is_met(n)).collect();
    if missing.is_empty() {
        eprintln!("{what}: all {} packages present", needs.len());
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|n| n.pkg).collect();
    if !opts.install || !is_root() {
        let why = if opts.install {
            "not root"
        } else {
            "--no-install"
        };
        bail!(
            "{what}: missing packages: {} ({why})\n  hint: install them first: sudo apt-get install -y --no-install-recommends {}",
            describe_missing(&missing),
            names.join(" ")
        );
    }
    eprintln!("{what}: installing {}", names.join(" "));
    let request: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let plan = match resolve(&request) {
        Ok(p) => p,
        Err(first) => {
            // a fresh machine may have stale or no package lists: update once and plan again
            eprintln!("{what}: planning failed ({first:#}); running apt-get update once");
            crate::run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
            resolve(&request)?
        }
    };
    for line in &plan.notes {
        eprintln!("{what}: {line}");
    }
    if let Err(e) = crate::run_cmd(&mut install_command(&plan)) {
        // a download 404 means stale lists: update once, then plan and install again
        eprintln!(
            "{what}: apt-get install failed ({e:#}); running apt-get update and retrying once"
        );
        crate::run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        let plan = resolve(&request)?;
        crate::run_cmd(&mut install_command(&plan))?;
    }
    verify(what, needs)
}

/// The real install of a simulated plan: never removes (`--no-remove`), downgrades only when the plan
/// chose to.
fn install_command(plan: &Plan) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--no-remove",
    ]);
    if !plan.sim.downgrades.is_empty() {
        cmd.arg("--allow-downgrades");
    }
    cmd.args(&plan.args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C");
    cmd
}

/// Every binary/file of every need exists; otherwise an error naming the package of each missing one.
pub fn verify(what: &str, needs: &[Need]) -> Result<()> {
    let missing: Vec<Need> = needs.iter().copied().filter(|n| !is_met(n)).collect();
    if missing.is_empty() {
        eprintln!(
            "{what}: verified {} packages' binaries and files",
            needs.len()
        );
        return Ok(());
    }
    bail!(
        "{what}: after installing, still missing: {}\n  hint: `apt-get install --reinstall {}`, and check `apt-cache policy` for the package's origin",
        describe_missing(&missing),
        missing.iter().map(|n| n.pkg).collect::<Vec<_>>().join(" ")
    )
}

fn describe_missing(missing: &[Need]) -> String {
    missing
        .iter()
        .map(|n| {
            let absent: Vec<&str> = n.provides.iter().copied().filter(|p| !have(p)).collect();
            if absent.is_empty() {
                format!("{} (not installed)", n.pkg)
            } else {
                format!("{} (provides {})", n.pkg, absent.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A need is met when dpkg says installed *and* everything it provides exists.
fn is_met(n: &Need) -> bool {
    dpkg_version(n.pkg).is_some() && n.provides.iter().all(|p| have(p))
}

/// A command on PATH (plus the sbin directories root has), or an absolute path that exists.
pub fn have(what: &str) -> bool {
    if what.starts_with('/') {
        return Path::new(what).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .any(|d| d.join(what).is_file())
}

/// The installed version of `pkg`, if dpkg has it installed.
fn dpkg_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", pkg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, version) = text.split_once('\t')?;
    status
        .contains("install ok installed")
        .then(|| version.trim().to_string())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---- planning ------------------------------------------------------------------------------------

/// A plan that apt will carry out without removing anything.
#[derive(Debug)]
struct Plan {
    /// Arguments for `apt-get install` (package names, some as `name=version`).
    args: Vec<String>,
    /// The simulated result of those arguments.
    sim: Simulation,
    /// What the user should be told (resolutions made).
    notes: Vec<String>,
}

/// Simulates `apt-get install` of `args`.
fn simulate(args: &[String]) -> Result<Simulation> {
    let out = Command::new("apt-get")
        .args(["install", "-s", "--no-install-recommends"])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .context("running apt-get install -s")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Simulation::parse(&text, out.status.success()))
}

/// Versions of `pkg` apt can install, best first (`apt-cache madison`).
fn available_versions(pkg: &str) -> Vec<String> {
    let Ok(out) = Command::new("apt-cache")
        .args(["madison", pkg])
        .env("LC_ALL", "C")
        .output()
    else {
        return Vec::new();
    };
    parse_madison(&String::from_utf8_lossy(&out.stdout), pkg)
}

/// Finds a plan without removals for installing `request`.
fn resolve(request: &[String]) -> Result<Plan> {
    let sim = simulate(request)?;
    if let Some(err) = &sim.error {
        if sim.breaks.is_empty() {
            bail!("apt-get cannot install {}: {err}", request.join(" "));
        }
    }
    let clean = sim.error.is_none() && sim.removals.is_empty() && sim.downgrades.is_empty();
    if clean {
        return Ok(Plan {
            args: request.to_vec(),
            sim,
            notes: Vec::new(),
        });
    }
    // The installed packages that stand in the way: the ones apt would remove, or the ones whose
    // `Breaks:` makes the request impossible.
    let mut conflicting: Vec<String> = sim.removals.iter().map(|r| r.name.clone()).collect();
    for b in &sim.breaks {
        if !conflicting.contains(&b.installed) {
            conflicting.push(b.installed.clone());
        }
    }
    if conflicting.is_empty() {
        bail!(
            "apt-get would downgrade {} to install {}; refusing (nothing was changed)",
            sim.downgrades
                .iter()
                .map(|d| format!("{} {} → {}", d.name, d.from, d.to))
                .collect::<Vec<_>>()
                .join(", "),
            request.join(" ")
        );
    }
    let mut tried: Vec<String> = Vec::new();
    for c in &conflicting {
        let Some(installed) = dpkg_version(c) else {
            continue;
        };
        let avail = available_versions(c);
        // (1) keep the installed package: ask for the requested packages built from the same source
        //     version, when apt can reach that suite.
        let same: Vec<String> = request
            .iter()
            .filter(|r| available_versions(r).contains(&installed))
            .map(|r| format!("{r}={installed}"))
            .collect();
        if !same.is_empty() {
            let args = replace_args(request, &same);
            let s = simulate(&args)?;
            if s.is_clean() {
                return Ok(Plan {
                    notes: vec![format!(
                        "{c} {installed} is installed; installing {} at the same version so apt removes nothing",
                        same.join(", ")
                    )],
                    args,
                    sim: s,
                });
            }
            tried.push(args.join(" "));
        }
        // (2) the consistent set: the conflicting package at a version of the suite the rest comes from
        for v in avail.iter().filter(|v| **v != installed) {
            let mut args = request.to_vec();
            args.retain(|a| a != c);
            args.push(format!("{c}={v}"));
            let s = simulate(&args)?;
            let only_this_downgrade = s.downgrades.iter().all(|d| d.name == *c);
            if s.error.is_none() && s.removals.is_empty() && only_this_downgrade {
                // why: apt's own words, asked for by keeping the installed version
                let breaks = match sim.breaks.iter().find(|b| b.installed == *c) {
                    Some(b) => Some(b.what.clone()),
                    None => {
                        let mut keep = request.to_vec();
                        keep.retain(|a| a != c);
                        keep.push(format!("{c}={installed}"));
                        simulate(&keep)?
                            .breaks
                            .into_iter()
                            .find(|b| b.installed == *c)
                            .map(|b| b.what)
                    }
                };
                let why = match breaks {
                    Some(what) => format!("it Breaks: {what}"),
                    None => "apt's plan removes it".to_string(),
                };
                return Ok(Plan {
                    notes: vec![format!(
                        "{c} {installed} cannot stay with the requested packages ({why}); apt would remove it. Installing the consistent set from one suite instead: {c} {v}"
                    )],
                    args,
                    sim: s,
                });
            }
            tried.push(args.join(" "));
        }
    }
    let problem = if !sim.removals.is_empty() {
        format!(
            "apt would REMOVE {}",
            sim.removals
                .iter()
                .map(|r| format!("{} {}", r.name, r.version))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if !sim.breaks.is_empty() {
        sim.breaks
            .iter()
            .map(|b| format!("{} Breaks: {}", b.installed, b.what))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        sim.error.clone().unwrap_or_default()
    };
    bail!(
        "cannot install {} without removing or downgrading other packages: {problem}\n  tried: {}\n  nothing was changed; hint: install a consistent set by hand (e.g. both QEMU packages from the same suite)",
        request.join(" "),
        if tried.is_empty() { "no alternative versions available".to_string() } else { tried.join(" | ") }
    )
}

/// `request` with each `name=version` of `pinned` replacing its bare `name`.
fn replace_args(request: &[String], pinned: &[String]) -> Vec<String> {
    request
        .iter()
        .map(|r| {
            pinned
                .iter()
                .find(|p| p.split_once('=').is_some_and(|(n, _)| n == r))
                .cloned()
                .unwrap_or_else(|| r.clone())
        })
        .collect()
}

// ---- parsing apt's simulation ----------------------------------------------------------------------

/// A package apt would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub name: String,
    pub version: String,
}

/// A package apt would move to another version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionChange {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// "installed Breaks: what" from apt's unmet-dependency report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaks {
    pub installed: String,
    pub what: String,
}

/// What `apt-get install -s` says it would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Simulation {
    pub installs: Vec<String>,
    pub upgrades: Vec<VersionChange>,
    pub downgrades: Vec<VersionChange>,
    pub removals: Vec<Removal>,
    pub breaks: Vec<Breaks>,
    /// apt's `E:` line when it refused.
    pub error: Option<String>,
}

impl Simulation {
    pub fn parse(text: &str, success: bool) -> Simulation {
        let mut s = Simulation::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Inst ") {
                // Inst NAME [OLD] (NEW origin [arch]) | Inst NAME (NEW origin [arch])
                let mut parts = rest.splitn(2, ' ');
                let name = parts.next().unwrap_or_default().to_string();
                let rest = parts.next().unwrap_or_default();
                let old = rest
                    .strip_prefix('[')
                    .and_then(|r| r.split_once(']'))
                    .map(|(o, _)| o.to_string());
                let new = rest
                    .split_once('(')
                    .and_then(|(_, r)| r.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
                match old {
                    Some(from) => {
                        let change = VersionChange {
                            name,
                            from: from.clone(),
                            to: new.clone(),
                        };
                        if compare_versions(&new, &from) == Ordering::Less {
                            s.downgrades.push(change);
                        } else {
                            s.upgrades.push(change);
                        }
                    }
                    None => s.installs.push(name),
                }
            } else if let Some(rest) = line.strip_prefix("Remv ") {
                let name = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let version = rest
                    .split_once('[')
                    .and_then(|(_, r)| r.split_once(']'))
                    .map(|(v, _)| v.to_string())
                    .unwrap_or_default();
                s.removals.push(Removal { name, version });
            } else if let Some(rest) = line.trim_start().strip_prefix("E: ") {
                s.error.get_or_insert_with(|| rest.trim().to_string());
            } else if let Some((pkg, what)) = line.trim().split_once(" : Breaks: ") {
                s.breaks.push(Breaks {
                    installed: pkg.trim().to_string(),
                    what: what.trim().to_string(),
                });
            }
        }
        if !success && s.error.is_none() {
            s.error = Some("apt-get install -s failed".into());
        }
        s
    }

    /// Installs and upgrades only.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.removals.is_empty() && self.downgrades.is_empty()
    }
}

/// The versions in `apt-cache madison PKG` output, in the order apt lists them (best first).
pub fn parse_madison(text: &str, pkg: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() >= 2 && cols[0] == pkg && !out.iter().any(|v| v == cols[1]) {
            out.push(cols[1].to_string());
        }
    }
    out
}

// ---- Debian version comparison (deb-version(7)) -----------------------------------------------------

/// Compares two Debian versions `[epoch:]upstream[-revision]` as dpkg does.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb)
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn char_order(c: Option<char>) -> i32 {
    match c {
        Some('~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        // non-digit prefix, compared char by char with dpkg's order
        let na = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
        let nb = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
        let (sa, sb) = (&a[..na], &b[..nb]);
        let (mut ca, mut cb) = (sa.chars(), sb.chars());
        loop {
            let (x, y) = (ca.next(), cb.next());
            if x.is_none() && y.is_none() {
                break;
            }
            let o = char_order(x).cmp(&char_order(y));
            if o != Ordering::Equal {
                return o;
            }
        }
        a = &a[na..];
        b = &b[nb..];
        // digit run, compared as numbers
        let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
        let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
        let x = a[..da].trim_start_matches('0');
        let y = b[..db].trim_start_matches('0');
        let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
        if o != Ordering::Equal {
            return o;
        }
        a = &a[da..];
        b = &b[db..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> String {
        let p = crate::workspace_root()
            .join("xtask/testdata/apt")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn a_plan_that_removes_is_seen() {
        let s = Simulation::parse(&rec("removal.txt"), true);
        assert_eq!(
            s.removals,
            vec![Removal {
                name: "qemu-utils".into(),
                version: "1:10.0.2+ds-2+deb13u1~bpo12+1".into()
            }]
        );
        assert!(!s.is_clean());
        assert!(s.installs.contains(&"qemu-system-x86".to_string()));
    }

    #[test]
    fn a_plan_that_downgrades_is_seen() {
        let s = Simulation::parse(&rec("downgrade.txt"), true);
        assert!(s.removals.is_empty());
        assert_eq!(
            s.downgrades,
            vec![VersionChange {
                name: "qemu-utils".into(),
                from: "1:10.0.2+ds-2+deb13u1~bpo12+1".into(),
                to: "1:7.2+dfsg-7+deb12u18+b2".into(),
            }]
        );
        assert!(s.upgrades.is_empty());
        assert!(!s.is_clean());
    }

    #[test]
    fn a_clean_plan_is_clean() {
        let s = Simulation::parse(&rec("clean.txt"), true);
        assert!(s.is_clean(), "{s:?}");
        assert_eq!(s.installs.len(), 7);
        assert!(s.installs.contains(&"socat".to_string()));
    }

    #[test]
    fn an_impossible_plan_names_the_breaking_package() {
        let s = Simulation::parse(&rec("breaks.txt"), false);
        assert_eq!(
            s.breaks,
            vec![Breaks {
                installed: "qemu-utils".into(),
                what: "qemu-system-common (< 1:8.0+dfsg-5~) but 1:7.2+dfsg-7+deb12u18+b2 is to be installed"
                    .into()
            }]
        );
        assert!(s
            .error
            .as_deref()
            .unwrap_or("")
            .contains("held broken packages"));
    }

    #[test]
    fn an_unknown_package_is_an_error() {
        let s = Simulation::parse(&rec("unknown.txt"), false);
        assert_eq!(
            s.error.as_deref(),
            Some("Unable to locate package no-such-package-kiln")
        );
    }

    #[test]
    fn upgrade_is_not_a_downgrade() {
        let s = Simulation::parse(
            "Inst libc6 [2.36-9] (2.36-9+deb12u4 Debian:12.5/stable [amd64])\n",
            true,
        );
        assert_eq!(s.upgrades.len(), 1);
        assert!(s.downgrades.is_empty());
        assert!(s.is_clean());
    }

    #[test]
    fn madison_versions_in_order() {
        let text = " qemu-utils | 1:7.2+dfsg-7+deb12u18+b2 | http://deb.debian.org/debian bookworm/main amd64 Packages\n qemu-utils | 1:7.2+dfsg-7+deb12u15 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n";
        assert_eq!(
            parse_madison(text, "qemu-utils"),
            vec!["1:7.2+dfsg-7+deb12u18+b2", "1:7.2+dfsg-7+deb12u15"]
        );
    }

    #[test]
    fn debian_version_order() {
        use Ordering::*;
        let cases = [
            (
                "1:10.0.2+ds-2+deb13u1~bpo12+1",
                "1:7.2+dfsg-7+deb12u18+b2",
                Greater,
            ),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0-1", Less),
            ("2:1.0", "1:9.9", Greater),
            ("1.0a", "1.0+", Less),
            ("1.10", "1.9", Greater),
            ("7.2+dfsg-7+deb12u18+b2", "7.2+dfsg-7+deb12u15", Greater),
            ("1.0-1", "1.0-1", Equal),
            ("0001.0", "1.0", Equal),
            ("1.0~~", "1.0~", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn tables_have_unique_packages_and_probes() {
        for n in for_tests() {
            assert!(
                !n.provides.is_empty(),
                "{} provides nothing to check",
                n.pkg
            );
        }
        let t = for_tests();
        let mut names: Vec<&str> = t.iter().map(|n| n.pkg).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), t.len());
    }
}
