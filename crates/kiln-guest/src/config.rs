//! Connection settings for the SSH communicator (Packer's `ssh_*` keys, already validated by kiln-config).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::keys::TempKeyPair;

/// A string that must never reach output, logs or process arguments.
///
/// `Debug` and `Display` print `***`; use [`Secret::expose`] where the value is really needed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value. Only hand it to the protocol or to a 0600 file, never to a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

/// One way to authenticate. Packer tries every configured method (agent, keys, password); so do we, in
/// the order of [`SshConfig::auth`].
#[derive(Clone, Debug)]
pub enum SshAuth {
    /// `ssh_password`: tried as `password`, then as `keyboard-interactive` (answering every prompt with it).
    Password(Secret),
    /// `ssh_private_key_file`: OpenSSH or PEM/PKCS#8 (ed25519, rsa, ecdsa), optionally encrypted.
    PrivateKeyFile {
        path: PathBuf,
        passphrase: Option<Secret>,
    },
    /// `ssh_agent_auth`: every identity of the agent at `SSH_AUTH_SOCK`.
    Agent,
    /// A key pair kiln generated for this build (see [`TempKeyPair`]).
    TempKey(Arc<TempKeyPair>),
}

impl SshAuth {
    /// Short name for messages ("password", "private key /x/id", "ssh-agent", "temporary key").
    pub fn describe(&self) -> String {
        match self {
            SshAuth::Password(_) => "password".to_string(),
            SshAuth::PrivateKeyFile { path, .. } => format!("private key {}", path.display()),
            SshAuth::Agent => "ssh-agent".to_string(),
            SshAuth::TempKey(_) => "temporary key pair".to_string(),
        }
    }
}

/// What to do with the server's host key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Accept any host key (Packer's behaviour); its SHA-256 fingerprint is logged and reported.
    #[default]
    Ignore,
    /// Accept only a key with one of these fingerprints (`SHA256:...` as printed by `ssh-keygen -lf`)
    /// or one of these OpenSSH public key lines (`ssh-ed25519 AAAA...`).
    Pinned(Vec<String>),
}

/// A jump host (`ssh_bastion_*`). The target connection is tunnelled through a `direct-tcpip` channel.
#[derive(Clone, Debug)]
pub struct BastionConfig {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Vec<SshAuth>,
}

/// Everything needed to open an SSH connection to the guest.
#[derive(Clone, Debug)]
pub struct SshConfig {
    pub host: String,
    /// `ssh_port`, default 22.
    pub port: u16,
    /// `ssh_username`.
    pub username: String,
    /// Methods tried in order until one succeeds.
    pub auth: Vec<SshAuth>,
    /// `ssh_handshake_attempts`: how many *authentication* failures are tolerated while waiting
    /// (Packer counts only errors that mention "authenticate"). `None` = unlimited. Packer default 10.
    pub handshake_attempts: Option<u32>,
    /// Limit for one attempt (TCP connect + SSH handshake + auth). Default 20 s.
    pub connect_timeout: Duration,
    /// `ssh_pty`: request a pseudo-terminal for every command (stderr is then merged into stdout).
    pub pty: bool,
    /// `ssh_keep_alive_interval`, default 5 s. `None` disables keepalives.
    pub keepalive: Option<Duration>,
    /// `ssh_bastion_*`.
    pub bastion: Option<Box<BastionConfig>>,
    pub host_key: HostKeyPolicy,
    /// How long a broken connection is retried when a command needs it again (sshd restarted by
    /// cloud-init, a reboot with `expect_disconnect`). Default 30 s.
    pub reconnect_timeout: Duration,
}

impl SshConfig {
    /// Packer's defaults for everything but the host, user and authentication.
    pub fn new(host: impl Into<String>, username: impl Into<String>, auth: Vec<SshAuth>) -> Self {
        SshConfig {
            host: host.into(),
            port: 22,
            username: username.into(),
            auth,
            handshake_attempts: Some(10),
            connect_timeout: Duration::from_secs(20),
            pty: false,
            keepalive: Some(Duration::from_secs(5)),
            bastion: None,
            host_key: HostKeyPolicy::Ignore,
            reconnect_timeout: Duration::from_secs(30),
        }
    }

    /// `host:port`, with brackets around IPv6 literals.
    pub fn address(&self) -> String {
        format_addr(&self.host, self.port)
    }
}

pub(crate) fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        let a = SshAuth::Password(s);
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(a.describe(), "password");
    }

    #[test]
    fn address_brackets_ipv6() {
        let mut c = SshConfig::new("fe80::1", "u", vec![]);
        assert_eq!(c.address(), "[fe80::1]:22");
        c.host = "10.0.0.2".into();
        c.port = 2222;
        assert_eq!(c.address(), "10.0.0.2:2222");
    }
}
