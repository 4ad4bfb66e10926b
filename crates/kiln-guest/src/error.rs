//! Error types of the communicator. Messages say what failed, why, and what to try.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read random bytes for a temporary key: {0}")]
    Random(#[source] std::io::Error),
    #[error("could not encode an SSH key: {0}")]
    Encode(String),
    #[error("could not write private key file {0}: {1}")]
    Write(PathBuf, #[source] std::io::Error),
    #[error("could not read private key file {0}: {1} (check ssh_private_key_file)")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("could not parse private key file {0}: {1} (OpenSSH or PEM ed25519/rsa/ecdsa keys are supported)")]
    Parse(PathBuf, String),
    #[error("private key file {0} is encrypted: give its passphrase")]
    NeedsPassphrase(PathBuf),
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source} (port closed or host unreachable: is sshd running yet?)")]
    PortClosed {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("SSH handshake with {addr} failed: {message}")]
    Handshake { addr: String, message: String },
    #[error("host key of {addr} ({fingerprint}) is not one of the pinned keys")]
    HostKeyRejected { addr: String, fingerprint: String },
    #[error("failed to authenticate as {user:?} on {addr} with {tried} (the server accepts: {server_accepts}); check ssh_username and ssh_password / ssh_private_key_file")]
    AuthFailed {
        addr: String,
        user: String,
        tried: String,
        server_accepts: String,
    },
    #[error("no authentication method configured for {user:?}: set ssh_password, ssh_private_key_file or ssh_agent_auth")]
    NoAuthMethod { user: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("ssh-agent: {0} (is SSH_AUTH_SOCK set and the agent running?)")]
    Agent(String),
    #[error("bastion {addr}: {message}")]
    Bastion { addr: String, message: String },
}

impl ConnectError {
    /// Configuration problems that no amount of retrying fixes.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ConnectError::Key(_)
                | ConnectError::NoAuthMethod { .. }
                | ConnectError::HostKeyRejected { .. }
        )
    }
    /// Counts towards `ssh_handshake_attempts`.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            ConnectError::AuthFailed { .. } | ConnectError::Agent(_)
        )
    }
}

/// Failure of a communicator operation.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("SSH connection lost: {0}")]
    Disconnected(String),
    #[error("SSH channel error: {0}")]
    Channel(String),
    #[error("{op} {path}: {message}")]
    Remote {
        op: &'static str,
        path: String,
        message: String,
    },
    #[error("{op} {path}: {source}")]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

/// Why waiting for SSH gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("Timeout waiting for SSH after {waited:?}; last error: {last}")]
    Timeout { waited: Duration, last: String },
    #[error(
        "SSH authentication failed {attempts} times (ssh_handshake_attempts); last error: {last}"
    )]
    TooManyAuthFailures { attempts: u32, last: String },
    #[error(transparent)]
    Fatal(ConnectError),
    #[error("cancelled while waiting for SSH")]
    Cancelled,
}
