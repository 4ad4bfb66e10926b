//! kiln-guest: the SSH communicator (Packer's `ssh` communicator) built on russh.
//!
//! - [`SshConfig`] / [`SshAuth`]: connection settings (`ssh_*` keys).
//! - [`wait_for_ssh`]: poll until SSH works, reporting [`WaitEvent`]s for the UI.
//! - [`Communicator`]: exec with streamed output, upload/download of files and directories, reconnect;
//!   implemented by [`SshCommunicator`], easy to fake in tests.
//! - [`TempKeyPair`]: a generated ed25519 key pair and its OpenSSH public key.

mod comm;
mod config;
mod error;
mod keys;
mod ssh;
mod wait;

pub mod testsupport;

pub use comm::{
    discard, shell_quote, CapturedOutput, Communicator, ExitStatus, LineBuffer, LineSink,
    DISCONNECTED_EXIT_CODE,
};
pub use config::{BastionConfig, HostKeyPolicy, Secret, SshAuth, SshConfig};
pub use error::{CommError, ConnectError, KeyError, WaitError};
pub use keys::{load_private_key, write_secret_file, TempKeyPair};
pub use ssh::SshCommunicator;
pub use wait::{wait_for_ssh, WaitEvent, WaitProgress, POLL_INTERVAL, SETTLE_GRACE};

/// Re-exported so callers use the same token type.
pub use tokio_util::sync::CancellationToken;
