//! A real OpenSSH `sshd` for end-to-end tests (of this crate and of the provisioners).
//!
//! [`TestSshd::start`] runs `/usr/sbin/sshd -D` on `127.0.0.1:<random port>` inside a private mount
//! namespace (`unshare --mount`) where `/etc/passwd` and `/etc/shadow` are bind-mounted copies with
//! one extra user, [`TEST_USER`] (password [`TEST_PASSWORD`], home in a temp dir), and `/run` is a
//! fresh tmpfs holding `/run/sshd`. Nothing on the host is changed. Needs root, `openssh-server`,
//! `openssh-client` (`ssh-keygen`) and util-linux `unshare`. The server and every session it spawned
//! are killed on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The login created in the namespace.
pub const TEST_USER: &str = "kilntest";
/// Its password.
pub const TEST_PASSWORD: &str = "kiln-e2e-pass";
/// SHA-512 crypt of [`TEST_PASSWORD`] (salt `kilne2esalt`).
const TEST_PASSWORD_HASH: &str =
    "$6$kilne2esalt$TIvV.mfN0zeH1LvR5GyatNvqTE5qnbzJg1pPl7JEt6pzwDdxof81ccfU1glt1Z/79mKL7zZrbS0xzywo3Vt0v1";
/// uid/gid of [`TEST_USER`].
pub const TEST_UID: u32 = 64242;

/// A running test sshd.
pub struct TestSshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
    /// `ip netns exec` this namespace (see [`TestSshd::start_in_netns`]).
    netns: Option<String>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl TestSshd {
    /// Start a server with password and public-key authentication on a fresh port.
    pub fn start() -> Result<TestSshd, String> {
        Self::start_on(free_port()?, true)
    }

    /// Like [`TestSshd::start`], but without the `sftp` subsystem (as on a minimal guest).
    pub fn start_without_sftp() -> Result<TestSshd, String> {
        let mut s = Self::start_on(free_port()?, false)?;
        let p = s.dir.path().join("sshd_config");
        let cfg = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        let cfg: String = cfg
            .lines()
            .filter(|l| !l.starts_with("Subsystem"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, cfg).map_err(|e| e.to_string())?;
        s.launch()?;
        Ok(s)
    }

    /// Prepare everything for a server on a fresh port but do not start it (see [`TestSshd::launch`]).
    pub fn prepare() -> Result<TestSshd, String> {
        Self::start_on(free_port()?, false)
    }

    /// A server inside the network namespace `netns` (`ip netns exec`), on 127.0.0.1 there, logging
    /// at `DEBUG1` so that every forwarded `direct-tcpip` channel is in [`TestSshd::log_text`]
    /// (`server_request_direct_tcpip: originator …, target <host> port <port>`): a jump host
    /// (`ssh_bastion_*`) for end-to-end builds.
    pub fn start_in_netns(netns: &str) -> Result<TestSshd, String> {
        let mut s = Self::start_on(free_port()?, false)?;
        s.netns = Some(netns.to_string());
        let p = s.dir.path().join("sshd_config");
        let cfg = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        let cfg = cfg.replace(
            "LogLevel VERBOSE",
            "LogLevel DEBUG1\nAllowTcpForwarding yes",
        );
        std::fs::write(&p, cfg).map_err(|e| e.to_string())?;
        s.launch()?;
        Ok(s)
    }

    fn start_on(port: u16, launch: bool) -> Result<TestSshd, String> {
        if !Path::new("/usr/sbin/sshd").exists() {
            return Err("/usr/sbin/sshd missing: apt-get install -y openssh-server".to_string());
        }
        if nix::unistd::geteuid().as_raw() != 0 {
            return Err("the test sshd needs root".to_string());
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-sshd")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        // the temp dir must be traversable by the unprivileged user
        set_mode(d, 0o755)?;
        let home = d.join("home");
        std::fs::create_dir_all(home.join(".ssh")).map_err(|e| e.to_string())?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_ed25519")))?;
        let mut passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
        passwd.push_str(&format!(
            "{TEST_USER}:x:{TEST_UID}:{TEST_UID}:kiln test:{}:/bin/sh\n",
            home.display()
        ));
        std::fs::write(d.join("passwd"), passwd).map_err(|e| e.to_string())?;
        let mut group = std::fs::read_to_string("/etc/group").map_err(|e| e.to_string())?;
        group.push_str(&format!("{TEST_USER}:x:{TEST_UID}:\n"));
        std::fs::write(d.join("group"), group).map_err(|e| e.to_string())?;
        let mut shadow = std::fs::read_to_string("/etc/shadow").map_err(|e| e.to_string())?;
        shadow.push_str(&format!(
            "{TEST_USER}:{TEST_PASSWORD_HASH}:19000:0:99999:7:::\n"
        ));
        std::fs::write(d.join("shadow"), shadow).map_err(|e| e.to_string())?;
        set_mode(&d.join("shadow"), 0o640)?;
        std::fs::write(home.join(".ssh/authorized_keys"), "").map_err(|e| e.to_string())?;
        chown_r(&home, TEST_UID)?;
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthorizedKeysFile .ssh/authorized_keys\nStrictModes no\nPermitRootLogin no\n\
             Subsystem sftp internal-sftp\nLogLevel VERBOSE\nMaxStartups 50\nMaxAuthTries 10\n",
            hk = d.join("host_ed25519").display()
        );
        std::fs::write(d.join("sshd_config"), cfg).map_err(|e| e.to_string())?;
        let log = d.join("sshd.log");
        let mut s = TestSshd {
            child: None,
            dir,
            port,
            log,
            netns: None,
        };
        if launch {
            s.launch()?;
        }
        Ok(s)
    }

    /// Start (or restart) the server process; waits until the port accepts connections.
    pub fn launch(&mut self) -> Result<(), String> {
        self.stop();
        let d = self.dir.path();
        let script = format!(
            "set -e; mount --bind {d}/passwd /etc/passwd; mount --bind {d}/shadow /etc/shadow; \
             mount --bind {d}/group /etc/group; mount -t tmpfs tmpfs /run; mkdir -m 0755 /run/sshd; \
             exec /usr/sbin/sshd -D -e -f {d}/sshd_config",
            d = d.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        use std::os::unix::process::CommandExt;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare"]);
                c
            }
            None => Command::new("unshare"),
        };
        let child = cmd
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // in a namespace the port is not reachable from here: sshd says when it listens
            let ready = if self.netns.is_some() {
                self.log_text()
                    .contains(&format!("Server listening on 127.0.0.1 port {}", self.port))
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("sshd exited with {st}: {}", self.log_text()));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "sshd did not listen within 10 s: {}",
            self.log_text()
        ))
    }

    /// Kill the server and all its sessions.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user's home directory as seen from the host (same path inside).
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Allow a public key (OpenSSH line) for [`TEST_USER`].
    pub fn authorize_key(&self, openssh_line: &str) -> Result<(), String> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.home().join(".ssh/authorized_keys"))
            .map_err(|e| e.to_string())?;
        writeln!(f, "{openssh_line}").map_err(|e| e.to_string())
    }

    /// Generate a key file with `ssh-keygen` (`ed25519`, `rsa`, `ecdsa`; PEM format with `pem`),
    /// authorize it, and return its path.
    pub fn make_key(&self, kind: &str, pem: bool, passphrase: &str) -> Result<PathBuf, String> {
        let p = self.dir.path().join(format!(
            "id_{kind}{}{}",
            if pem { "_pem" } else { "" },
            if passphrase.is_empty() { "" } else { "_enc" }
        ));
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", kind, "-N", passphrase, "-f"]).arg(&p);
        if pem {
            c.args(["-m", "PEM"]);
        }
        if kind == "rsa" {
            c.args(["-b", "2048"]);
        }
        run(&mut c)?;
        let public = std::fs::read_to_string(p.with_extension("pub"))
            .or_else(|_| std::fs::read_to_string(format!("{}.pub", p.display())))
            .map_err(|e| e.to_string())?;
        self.authorize_key(public.trim())?;
        Ok(p)
    }

    /// The server's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A scratch directory next to the server's files.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

fn chown_r(p: &Path, uid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).map_err(|e| e.to_string())?;
    if p.is_dir() {
        for e in std::fs::read_dir(p).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            chown_r(&e.path(), uid)?;
        }
    }
    Ok(())
}
