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
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

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
        Self::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    }

    /// Parse resolv.conf text.
    pub fn parse(text: &str) -> Self {
        let mut dns = HostDns::default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("search") | Some("domain") => {
                    dns.search = f.map(str::to_string).collect();
                }
                Some("nameserver") if dns.nameservers.len() < 3 => {
                    if let Some(ns) = f.next() {
                        dns.nameservers.push(ns.to_string());
                    }
                }
                _ => {}
            }
        }
        dns
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
        self.meta_data
            .lines()
            .find_map(|l| l.strip_prefix("instance-id:"))
            .map(str::trim)
    }
}

const WINDOWS_OSTYPES: &[&str] = &[
    "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
];

/// Parse a PVE property string into key → value (`default_key` for a leading bare value).
fn props(
    key: &str,
    value: &str,
    default_key: Option<&str>,
) -> Result<BTreeMap<String, String>, CloudInitError> {
    let mut m = BTreeMap::new();
    for (i, part) in value.split(',').filter(|p| !p.is_empty()).enumerate() {
        let (k, v) = match (part.split_once('='), default_key) {
            (Some((k, v)), _) => (k.to_string(), v.to_string()),
            (None, Some(d)) if i == 0 => (d.to_string(), part.to_string()),
            (None, _) => {
                return Err(CloudInitError::Invalid {
                    key: key.into(),
                    msg: format!("'{part}' is not key=value"),
                })
            }
        };
        m.insert(k, v);
    }
    Ok(m)
}

/// Percent-decoding like Perl's `URI::Escape::uri_unescape` (`+` stays `+`).
fn uri_unescape(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn ipv4_netmask(prefix: &str, key: &str) -> Result<Ipv4Addr, CloudInitError> {
    let p: u32 =
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| CloudInitError::Invalid {
                key: key.into(),
                msg: format!("bad prefix length '{prefix}'"),
            })?;
    Ok(Ipv4Addr::from(if p == 0 {
        0
    } else {
        u32::MAX << (32 - p)
    }))
}

fn hostname_fqdn(vmid: u32, config: &BTreeMap<String, String>) -> (String, String) {
    let name = config
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("VM{vmid}"));
    if let Some((host, _)) = name.split_once('.') {
        (host.to_string(), name.clone())
    } else if let Some(search) = config.get("searchdomain").filter(|s| !s.is_empty()) {
        (name.clone(), format!("{name}.{search}"))
    } else {
        (name.clone(), name)
    }
}

/// `user-data` as qemu-server writes it.
pub fn user_data(vmid: u32, config: &BTreeMap<String, String>) -> String {
    let (hostname, fqdn) = hostname_fqdn(vmid, config);
    let mut s = String::from("#cloud-config\n");
    let _ = writeln!(s, "hostname: {hostname}");
    s.push_str("manage_etc_hosts: true\n");
    let _ = writeln!(s, "fqdn: {fqdn}");
    let user = config.get("ciuser");
    if let Some(u) = user {
        let _ = writeln!(s, "user: {u}");
        if u == "root" {
            s.push_str("disable_root: False\n");
        }
    }
    if let Some(p) = config.get("cipassword") {
        let _ = writeln!(s, "password: {p}");
    }
    if let Some(keys) = config.get("sshkeys") {
        s.push_str("ssh_authorized_keys:\n");
        for k in uri_unescape(keys).split('\n') {
            let k = k.strip_suffix('\r').unwrap_or(k);
            if k.trim().is_empty() {
                continue;
            }
            let _ = writeln!(s, "  - {k}");
        }
    }
    s.push_str("chpasswd:\n  expire: False\n");
    if user.map(String::as_str) != Some("root") {
        s.push_str("users:\n  - default\n");
    }
    let upgrade = config
        .get("ciupgrade")
        .is_none_or(|v| !matches!(v.as_str(), "0" | ""));
    if upgrade {
        s.push_str("package_upgrade: true\n");
    }
    s
}

fn dns_conf(config: &BTreeMap<String, String>, host: &HostDns) -> (Vec<String>, Vec<String>) {
    let search = match config.get("searchdomain") {
        Some(s) => s.split_whitespace().map(str::to_string).collect(),
        None => host.search.clone(),
    };
    let ns = match config.get("nameserver") {
        Some(s) => s.split_whitespace().map(str::to_string).collect(),
        None => host.nameservers.clone(),
    };
    (search, ns)
}

/// `network-config` (version 1) as qemu-server writes it for NoCloud.
pub fn network_config(
    config: &BTreeMap<String, String>,
    host_dns: &HostDns,
) -> Result<String, CloudInitError> {
    let mut s = String::from("version: 1\nconfig:\n");
    // Perl's `sort` on the key names: net0, net1, net10, net2, …
    for (key, value) in config {
        let Some(id) = key.strip_prefix("net") else {
            continue;
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(ipcfg) = config
            .get(&format!("ipconfig{id}"))
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        let net = props(key, value, None).or_else(|_| props(key, value, Some("model")))?;
        let mac = net
            .get("macaddr")
            .cloned()
            .or_else(|| {
                net.iter()
                    .find(|(k, v)| {
                        !matches!(
                            k.as_str(),
                            "model"
                                | "bridge"
                                | "firewall"
                                | "link_down"
                                | "mtu"
                                | "queues"
                                | "rate"
                                | "tag"
                                | "trunks"
                        ) && v.len() == 17
                            && v.matches(':').count() == 5
                    })
                    .map(|(_, v)| v.clone())
            })
            .ok_or_else(|| CloudInitError::Invalid {
                key: key.clone(),
                msg: format!("network interface '{key}' has no mac address"),
            })?
            .to_ascii_lowercase();
        let ipc = props(&format!("ipconfig{id}"), ipcfg, None)?;
        let _ = write!(
            s,
            "    - type: physical\n      name: eth{id}\n      mac_address: '{mac}'\n      subnets:\n"
        );
        let i = "        ";
        if let Some(ip) = ipc.get("ip") {
            if ip == "dhcp" {
                let _ = writeln!(s, "{i}- type: dhcp4");
            } else {
                let (addr, prefix) = ip.split_once('/').ok_or_else(|| CloudInitError::Invalid {
                    key: format!("ipconfig{id}"),
                    msg: format!("not a CIDR: {ip}"),
                })?;
                let mask = ipv4_netmask(prefix, &format!("ipconfig{id}"))?;
                let _ = write!(
                    s,
                    "{i}- type: static\n{i}  address: '{addr}'\n{i}  netmask: '{mask}'\n"
                );
                if let Some(gw) = ipc.get("gw") {
                    let _ = writeln!(s, "{i}  gateway: '{gw}'");
                }
            }
        }
        if let Some(ip6) = ipc.get("ip6") {
            match ip6.as_str() {
                "dhcp" => {
                    let _ = writeln!(s, "{i}- type: dhcp6");
                }
                "auto" => {
                    let _ = writeln!(s, "{i}- type: ipv6_slaac");
                }
                _ => {
                    let _ = write!(s, "{i}- type: static6\n{i}  address: '{ip6}'\n");
                    if let Some(gw) = ipc.get("gw6") {
                        let _ = writeln!(s, "{i}  gateway: '{gw}'");
                    }
                }
            }
        }
    }
    let (search, ns) = dns_conf(config, host_dns);
    s.push_str("    - type: nameserver\n");
    if !ns.is_empty() {
        s.push_str("      address:\n");
        for n in &ns {
            let _ = writeln!(s, "      - '{n}'");
        }
    }
    if !search.is_empty() {
        s.push_str("      search:\n");
        for d in &search {
            let _ = writeln!(s, "      - '{d}'");
        }
    }
    Ok(s)
}

/// Generate the drive's files from a VM config. `snippet_path` resolves `cicustom` volume ids
/// (`local:snippets/user.yaml`) to files.
pub fn generate(
    vmid: u32,
    config: &BTreeMap<String, String>,
    host_dns: &HostDns,
    snippet_path: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<NoCloudData, CloudInitError> {
    let citype = match config.get("citype") {
        Some(t) => t.as_str(),
        None if config
            .get("ostype")
            .is_some_and(|o| WINDOWS_OSTYPES.contains(&o.as_str())) =>
        {
            "configdrive2"
        }
        None => "nocloud",
    };
    if citype != "nocloud" {
        return Err(CloudInitError::UnsupportedType(citype.to_string()));
    }
    let custom = match config.get("cicustom") {
        Some(v) => props("cicustom", v, None)?,
        None => BTreeMap::new(),
    };
    let read_snippet = |kind: &str| -> Result<Option<String>, CloudInitError> {
        let Some(volid) = custom.get(kind) else {
            return Ok(None);
        };
        let is_snippet = volid
            .split_once(':')
            .is_some_and(|(_, name)| name.starts_with("snippets/"));
        if !is_snippet {
            return Err(CloudInitError::NotSnippet(volid.clone()));
        }
        let path = snippet_path(volid).ok_or_else(|| CloudInitError::Read {
            path: PathBuf::from(volid),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let bytes = std::fs::read(&path).map_err(|source| CloudInitError::Read {
            path: path.clone(),
            source,
        })?;
        if bytes.len() > 1024 * 1024 {
            return Err(CloudInitError::Invalid {
                key: "cicustom".into(),
                msg: format!("{volid} is larger than 1 MiB"),
            });
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let user = match read_snippet("user")? {
        Some(u) => u,
        None => user_data(vmid, config),
    };
    let network = match read_snippet("network")? {
        Some(n) => n,
        None => network_config(config, host_dns)?,
    };
    let vendor = read_snippet("vendor")?.unwrap_or_default();
    let meta = match read_snippet("meta")? {
        Some(m) => m,
        None => {
            let mut h = Sha1::new();
            h.update(user.as_bytes());
            h.update(network.as_bytes());
            format!("instance-id: {}\n", hex::encode(h.finalize()))
        }
    };
    if user.len() + network.len() + meta.len() + vendor.len() > 3 * 1024 * 1024 {
        return Err(CloudInitError::TooBig);
    }
    Ok(NoCloudData {
        user_data: user,
        meta_data: meta,
        network_config: network,
        vendor_data: vendor,
    })
}

/// The ISO image bytes of a NoCloud drive (label `cidata`, Rock Ridge + Joliet).
pub fn iso_bytes(data: &NoCloudData) -> Result<Vec<u8>, String> {
    use hadris_iso::joliet::JolietLevel;
    use hadris_iso::read::PathSeparator;
    use hadris_iso::rrip::RripOptions;
    use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
    use hadris_iso::write::{File, InputFiles, IsoImageWriter};
    use std::sync::Arc;

    let file = |name: &str, contents: &str| File::File {
        name: Arc::new(name.to_string()),
        contents: contents.as_bytes().to_vec(),
    };
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: vec![
            file("meta-data", &data.meta_data),
            file("network-config", &data.network_config),
            file("user-data", &data.user_data),
            file("vendor-data", &data.vendor_data),
        ],
    };
    let options = IsoFormatOptions {
        volume_name: "cidata".into(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("kiln".into()),
        sector_size: 2048,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level3 {
                supports_lowercase: true,
                supports_rrip: true,
            },
            long_filenames: true,
            joliet: Some(JolietLevel::Level3),
            rock_ridge: Some(RripOptions::default()),
            el_torito: None,
            hybrid_boot: None,
        },
        path_separator: PathSeparator::ForwardSlash,
        strict_charset: false,
    };
    let cursor = std::io::Cursor::new(Vec::new());
    let out = IsoImageWriter::create(cursor, files, options).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// Write `data` as a NoCloud ISO (label `cidata`) to `path` (atomically: temp file + rename).
pub fn write_iso(data: &NoCloudData, path: &Path) -> Result<(), CloudInitError> {
    let err = |msg: String| CloudInitError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = iso_bytes(data).map_err(err)?;
    let tmp = path.with_extension("tmp-kiln");
    std::fs::write(&tmp, &bytes).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// True if `value` is already a crypt hash PVE would store unchanged
/// (`^\$(?:[156]|2[ay])(\$.+){2}`).
pub fn is_password_hash(value: &str) -> bool {
    let rest = ["$1", "$5", "$6", "$2a", "$2y"]
        .iter()
        .find_map(|p| value.strip_prefix(p));
    let Some(rest) = rest else { return false };
    // (\$.+){2}: at least two more `$`-introduced non-empty parts
    let Some(r) = rest.strip_prefix('$') else {
        return false;
    };
    match r.find('$') {
        Some(i) => i > 0 && r.len() > i + 1,
        None => false,
    }
}

/// Hash a plain-text `cipassword` the way PVE stores it (`crypt` SHA-256, `$5$<8-char salt>$…`).
/// Values that already look like a crypt hash are returned unchanged, as PVE does.
pub fn encrypt_password(plain: &str) -> String {
    if is_password_hash(plain) {
        return plain.to_string();
    }
    const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let salt: String = (0..8)
        .map(|_| SALT_CHARS[rand::random_range(0..SALT_CHARS.len())] as char)
        .collect();
    sha256_crypt(plain, &salt)
}

/// glibc-compatible `crypt(pw, "$5$salt$")` (5000 rounds).
pub fn sha256_crypt(plain: &str, salt: &str) -> String {
    const B64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let salt: String = salt.chars().take(16).collect();
    let raw = sha_crypt::sha256_crypt(
        plain.as_bytes(),
        salt.as_bytes(),
        sha_crypt::Params::RECOMMENDED,
    );
    let mut out = format!("$5${salt}$");
    let mut put = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = (u32::from(b2) << 16) | (u32::from(b1) << 8) | u32::from(b0);
        for _ in 0..n {
            out.push(B64[(w & 0x3f) as usize] as char);
            w >>= 6;
        }
    };
    let r = &raw;
    for (a, b, c) in [
        (0, 10, 20),
        (21, 1, 11),
        (12, 22, 2),
        (3, 13, 23),
        (24, 4, 14),
        (15, 25, 5),
        (6, 16, 26),
        (27, 7, 17),
        (18, 28, 8),
        (9, 19, 29),
    ] {
        put(r[a], r[b], r[c], 4);
    }
    put(0, r[31], r[30], 3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn no_snippets(_: &str) -> Option<PathBuf> {
        None
    }

    #[test]
    fn crypt_sha256_matches_glibc() {
        // vectors from glibc crypt(3) / `openssl passwd -5 -salt …`
        assert_eq!(
            sha256_crypt("x", "abcdefgh"),
            "$5$abcdefgh$sI6g8tHKrJ6RX7w.YoN9B7a/5wK5jYEOMmMnt3tPl0/"
        );
        assert_eq!(
            sha256_crypt("pässword", "Zz9./XYq"),
            "$5$Zz9./XYq$khnzFoAOpgEOtG5IVDR1Myiumkf2sc9PJtQPIcqF5n6"
        );
        let h = encrypt_password("secret");
        assert!(h.starts_with("$5$") && h.len() == 3 + 8 + 1 + 43, "{h}");
        assert!(!h.contains("secret"));
        let salt = &h[3..11];
        assert_eq!(sha256_crypt("secret", salt), h);
        // already hashed values stay as they are
        for v in [
            "$6$rounds=4096$abc$def",
            "$5$abcdefgh$sI6g8tHKrJ6RX7w.YoN9B7a/5wK5jYEOMmMnt3tPl0/",
            "$1$x$y",
            "$2y$10$abc",
        ] {
            assert!(is_password_hash(v), "{v}");
            assert_eq!(encrypt_password(v), v);
        }
        for v in ["$6$", "$6$abc", "$7$a$b", "plain", "$$a$b"] {
            assert!(!is_password_hash(v), "{v}");
        }
    }

    #[test]
    fn user_data_like_pve() {
        let c = cfg(&[
            ("name", "tpl"),
            ("ciuser", "ubuntu"),
            ("cipassword", "$5$abcdefgh$hash"),
            (
                "sshkeys",
                "ssh-ed25519%20AAAAC3Nz%20me%40host%0Assh-rsa%20AAAAB3%20other%0A%0A",
            ),
        ]);
        assert_eq!(
            user_data(100, &c),
            "#cloud-config\nhostname: tpl\nmanage_etc_hosts: true\nfqdn: tpl\nuser: ubuntu\n\
             password: $5$abcdefgh$hash\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nz me@host\n\
             \x20 - ssh-rsa AAAAB3 other\nchpasswd:\n  expire: False\nusers:\n  - default\n\
             package_upgrade: true\n"
        );
        let root = user_data(
            9000,
            &cfg(&[
                ("ciuser", "root"),
                ("searchdomain", "example.org"),
                ("ciupgrade", "0"),
            ]),
        );
        assert_eq!(
            root,
            "#cloud-config\nhostname: VM9000\nmanage_etc_hosts: true\nfqdn: VM9000.example.org\n\
             user: root\ndisable_root: False\nchpasswd:\n  expire: False\n"
        );
        let fqdn = user_data(1, &cfg(&[("name", "web.example.com")]));
        assert!(fqdn.contains("hostname: web\n") && fqdn.contains("fqdn: web.example.com\n"));
    }

    #[test]
    fn network_config_like_pve() {
        let c = cfg(&[
            ("net0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0"),
            ("ipconfig0", "ip=dhcp"),
            ("net1", "model=e1000,macaddr=BC:24:11:00:00:02,bridge=vmbr0"),
            (
                "ipconfig1",
                "ip=192.0.2.10/24,gw=192.0.2.1,ip6=2001:db8::5/64,gw6=2001:db8::1",
            ),
            ("net2", "virtio=BC:24:11:00:00:03,bridge=vmbr0"),
            ("nameserver", "192.0.2.53 192.0.2.54"),
            ("searchdomain", "example.org"),
        ]);
        let host = HostDns::default();
        assert_eq!(
            network_config(&c, &host).unwrap(),
            "version: 1\nconfig:\n\
             \x20   - type: physical\n      name: eth0\n      mac_address: 'bc:24:11:5e:7a:01'\n      subnets:\n\
             \x20       - type: dhcp4\n\
             \x20   - type: physical\n      name: eth1\n      mac_address: 'bc:24:11:00:00:02'\n      subnets:\n\
             \x20       - type: static\n          address: '192.0.2.10'\n          netmask: '255.255.255.0'\n          gateway: '192.0.2.1'\n\
             \x20       - type: static6\n          address: '2001:db8::5/64'\n          gateway: '2001:db8::1'\n\
             \x20   - type: nameserver\n      address:\n      - '192.0.2.53'\n      - '192.0.2.54'\n      search:\n      - 'example.org'\n"
        );
        // host resolv.conf is the fallback
        let host = HostDns::parse("# x\nsearch a.test b.test\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n");
        let n = network_config(&cfg(&[]), &host).unwrap();
        assert_eq!(
            n,
            "version: 1\nconfig:\n    - type: nameserver\n      address:\n      - '10.0.0.1'\n      - '10.0.0.2'\n      - '10.0.0.3'\n      search:\n      - 'a.test'\n      - 'b.test'\n"
        );
        // an ipconfig for a NIC without MAC is an error
        assert!(network_config(
            &cfg(&[("net0", "virtio,bridge=vmbr0"), ("ipconfig0", "ip=dhcp")]),
            &HostDns::default()
        )
        .is_err());
        assert!(network_config(
            &cfg(&[
                ("net0", "virtio=BC:24:11:00:00:01"),
                ("ipconfig0", "ip=10.0.0.1")
            ]),
            &HostDns::default()
        )
        .is_err());
    }

    #[test]
    fn instance_id_follows_the_config() {
        let host = HostDns::default();
        let a = generate(100, &cfg(&[("ciuser", "a")]), &host, &no_snippets).unwrap();
        let a2 = generate(100, &cfg(&[("ciuser", "a")]), &host, &no_snippets).unwrap();
        let b = generate(100, &cfg(&[("ciuser", "b")]), &host, &no_snippets).unwrap();
        assert_eq!(a.instance_id(), a2.instance_id());
        assert_ne!(a.instance_id(), b.instance_id());
        let mut h = Sha1::new();
        h.update(a.user_data.as_bytes());
        h.update(a.network_config.as_bytes());
        assert_eq!(a.instance_id().unwrap(), hex::encode(h.finalize()));
        assert_eq!(a.vendor_data, "");
        assert!(matches!(
            generate(
                100,
                &cfg(&[("citype", "configdrive2")]),
                &host,
                &no_snippets
            ),
            Err(CloudInitError::UnsupportedType(_))
        ));
        assert!(matches!(
            generate(100, &cfg(&[("ostype", "win11")]), &host, &no_snippets),
            Err(CloudInitError::UnsupportedType(_))
        ));
    }

    #[test]
    fn cicustom_snippets_replace_parts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("user.yaml");
        std::fs::write(&p, "#cloud-config\nruncmd: [true]\n").unwrap();
        let resolve = |v: &str| (v == "local:snippets/user.yaml").then(|| p.clone());
        let d = generate(
            100,
            &cfg(&[("cicustom", "user=local:snippets/user.yaml")]),
            &HostDns::default(),
            &resolve,
        )
        .unwrap();
        assert_eq!(d.user_data, "#cloud-config\nruncmd: [true]\n");
        assert!(d.network_config.starts_with("version: 1\n"));
        assert!(matches!(
            generate(
                100,
                &cfg(&[("cicustom", "user=local:iso/x.iso")]),
                &HostDns::default(),
                &resolve
            ),
            Err(CloudInitError::NotSnippet(_))
        ));
    }

    #[test]
    fn iso_has_cidata_label_and_files() {
        use hadris_iso::read::IsoImage;
        let data = generate(
            100,
            &cfg(&[("ciuser", "ubuntu"), ("name", "x")]),
            &HostDns::default(),
            &no_snippets,
        )
        .unwrap();
        let bytes = iso_bytes(&data).unwrap();
        // primary volume descriptor at sector 16: "CD001", volume id at offset 40
        let pvd = &bytes[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(
            std::str::from_utf8(&pvd[40..72]).unwrap().trim_end(),
            "cidata"
        );
        let image = IsoImage::open(std::io::Cursor::new(bytes)).unwrap();
        let _ = image; // opened and parsed; file names are checked with isoinfo/blkid in the e2e test
    }
}
