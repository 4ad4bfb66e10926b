//! The `Communicator` trait: what the build and the provisioners need from a guest connection.
//! [`crate::SshCommunicator`] implements it over SSH; tests can fake it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

use crate::error::CommError;

/// Packer's exit code for "the command's connection dropped before it reported a status"
/// (`valid_exit_codes = [0, 2300218]` accepts a reboot).
pub const DISCONNECTED_EXIT_CODE: i64 = 2_300_218;

/// How a remote command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal exit with this code.
    Code(u32),
    /// Killed by a signal (`TERM`, `KILL`, ...). Always a failure.
    Signal { name: String, core_dumped: bool },
    /// The connection or channel closed without an exit status (reboot, sshd killed).
    Disconnected,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }
    /// The code, `None` for a signal or a disconnect.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            _ => None,
        }
    }
    /// The number Packer compares with `valid_exit_codes`: the code, 2300218 for a disconnect,
    /// -1 for a signal.
    pub fn packer_code(&self) -> i64 {
        match self {
            ExitStatus::Code(c) => i64::from(*c),
            ExitStatus::Disconnected => DISCONNECTED_EXIT_CODE,
            ExitStatus::Signal { .. } => -1,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal { name, core_dumped } => {
                write!(f, "killed by signal {name}")?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            ExitStatus::Disconnected => {
                f.write_str("connection closed before the command reported an exit status")
            }
        }
    }
}

/// Receives output one line at a time (without the trailing newline; a final partial line is delivered too).
pub type LineSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// A sink that drops everything.
pub fn discard(_: &str) {}

/// The operations provisioners need. All paths on the guest are plain strings (POSIX).
#[async_trait]
pub trait Communicator: Send + Sync {
    /// Run `cmd` through the remote user's shell; stream stdout and stderr line by line.
    /// Cancelling sends `TERM` to the command, closes the channel and returns `CommError::Cancelled`.
    /// A dropped connection returns `Ok(ExitStatus::Disconnected)`.
    async fn exec(
        &self,
        cmd: &str,
        stdout: LineSink<'_>,
        stderr: LineSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<ExitStatus, CommError>;

    /// Write everything `src` yields to the file `remote` (created or truncated), then set `mode` if given.
    async fn upload(
        &self,
        src: &mut (dyn AsyncRead + Send + Unpin),
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError>;

    /// Copy the *contents* of local directory `local` into remote directory `remote` (created, like
    /// `mkdir -p`), recursively, keeping file modes.
    async fn upload_dir(&self, local: &Path, remote: &str) -> Result<(), CommError>;

    /// Copy the remote file `remote` to the local file `local` (created or truncated).
    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError>;

    /// Copy the *contents* of remote directory `remote` into local directory `local` (created), recursively.
    async fn download_dir(&self, remote: &str, local: &Path) -> Result<(), CommError>;

    /// Is `remote` a directory? (`Ok(false)` when it does not exist or is a file.)
    async fn is_dir(&self, remote: &str) -> Result<bool, CommError>;

    /// Drop the current connection and connect again, retrying for up to `timeout`
    /// (after a reboot or an sshd restart).
    async fn reconnect(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), CommError>;

    /// Upload a local file, keeping its mode unless `mode` is given.
    async fn upload_file(
        &self,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError> {
        use std::os::unix::fs::PermissionsExt;
        let mut f = tokio::fs::File::open(local)
            .await
            .map_err(|source| CommError::Local {
                op: "open",
                path: local.to_path_buf(),
                source,
            })?;
        let mode = match mode {
            Some(m) => Some(m),
            None => f
                .metadata()
                .await
                .ok()
                .map(|m| m.permissions().mode() & 0o7777),
        };
        self.upload(&mut f, remote, mode).await
    }

    /// Upload bytes held in memory.
    async fn upload_bytes(
        &self,
        data: &[u8],
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError> {
        let mut r = data;
        self.upload(&mut r, remote, mode).await
    }

    /// Run `cmd` and collect its output (for short commands: `cloud-init status`, `test -d`...).
    async fn exec_capture(
        &self,
        cmd: &str,
        cancel: &CancellationToken,
    ) -> Result<CapturedOutput, CommError> {
        let out = std::sync::Mutex::new(String::new());
        let err = std::sync::Mutex::new(String::new());
        let push = |m: &std::sync::Mutex<String>, l: &str| {
            if let Ok(mut s) = m.lock() {
                s.push_str(l);
                s.push('\n');
            }
        };
        let status = self
            .exec(cmd, &|l| push(&out, l), &|l| push(&err, l), cancel)
            .await?;
        Ok(CapturedOutput {
            status,
            stdout: out.into_inner().unwrap_or_default(),
            stderr: err.into_inner().unwrap_or_default(),
        })
    }
}

/// Result of [`Communicator::exec_capture`].
#[derive(Clone, Debug)]
pub struct CapturedOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Splits a byte stream into lines for a [`LineSink`] (handles `\r\n` from a pty and invalid UTF-8).
#[derive(Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    /// Longest line kept whole; longer output is delivered in pieces.
    pub const MAX_LINE: usize = 64 * 1024;

    pub fn push(&mut self, data: &[u8], sink: LineSink<'_>) {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            sink(&String::from_utf8_lossy(&line));
        }
        // output without newlines (progress bars, binary): do not buffer it without bound
        if self.buf.len() > Self::MAX_LINE {
            let chunk = std::mem::take(&mut self.buf);
            sink(&String::from_utf8_lossy(&chunk));
        }
    }

    pub fn finish(&mut self, sink: LineSink<'_>) {
        if !self.buf.is_empty() {
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            sink(&String::from_utf8_lossy(&line));
        }
    }
}

/// Quote a string for a POSIX shell (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn line_buffer_splits_and_flushes() {
        let lines = Mutex::new(Vec::<String>::new());
        let sink = |l: &str| lines.lock().expect("lock").push(l.to_string());
        let mut b = LineBuffer::default();
        b.push(b"a\r\nb", &sink);
        b.push(b"c\n\nd", &sink);
        b.finish(&sink);
        b.finish(&sink);
        assert_eq!(*lines.lock().expect("lock"), vec!["a", "bc", "", "d"]);
        let big = vec![b'x'; LineBuffer::MAX_LINE + 1];
        lines.lock().expect("lock").clear();
        b.push(&big, &sink);
        assert_eq!(lines.lock().expect("lock").len(), 1);
    }

    #[test]
    fn exit_status_codes() {
        assert!(ExitStatus::Code(0).success());
        assert_eq!(ExitStatus::Code(3).packer_code(), 3);
        assert_eq!(ExitStatus::Disconnected.packer_code(), 2_300_218);
        let s = ExitStatus::Signal {
            name: "TERM".into(),
            core_dumped: false,
        };
        assert!(!s.success());
        assert_eq!(s.to_string(), "killed by signal TERM");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/tmp/a_b.sh"), "/tmp/a_b.sh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
