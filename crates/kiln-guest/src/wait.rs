//! `wait_for_ssh`: poll the guest until SSH accepts our credentials, saying what it sees.

use std::fmt;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::comm::{discard, Communicator};
use crate::config::SshConfig;
use crate::error::{ConnectError, WaitError};
use crate::ssh::{connect_once, SshCommunicator};

/// Time between attempts after an authentication failure or a dropped fresh connection (Packer waits
/// 5 s after every failure). A refused or timed-out connection and a failed handshake retry sooner,
/// see [`pause_after`].
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a refused connection (nothing listens yet): the guest's sshd answers within this
/// much of starting, instead of up to a whole [`POLL_INTERVAL`] later.
pub const REFUSED_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a failed SSH handshake (sshd is starting up or restarting).
pub const HANDSHAKE_PAUSE: Duration = Duration::from_millis(250);
/// After the first success the connection is checked once; if it drops (cloud-init restarting sshd),
/// retries continue for this long without counting towards the handshake attempts.
pub const SETTLE_GRACE: Duration = Duration::from_secs(15);

/// What the wait loop observed; `Display` gives a line for the build UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    /// Attempt number `n` starts.
    Attempt { n: u32, addr: String },
    /// TCP connect failed (nothing listening yet, host unreachable).
    PortClosed { addr: String, message: String },
    /// TCP accepted but the attempt took too long.
    TimedOut { addr: String },
    /// SSH protocol handshake failed (sshd starting up, not an SSH server...).
    HandshakeFailed { addr: String, message: String },
    /// The server rejected the credentials; counts towards `ssh_handshake_attempts`.
    AuthFailed {
        attempt: u32,
        max: Option<u32>,
        message: String,
    },
    /// Authenticated.
    Connected {
        addr: String,
        host_key_fingerprint: Option<String>,
        after: Duration,
    },
    /// The fresh connection broke right away (sshd restarted); retrying.
    ConnectionDropped { message: String },
}

impl fmt::Display for WaitEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitEvent::Attempt { n, addr } => write!(f, "SSH attempt {n} to {addr}"),
            WaitEvent::PortClosed { addr, message } => {
                write!(f, "SSH port {addr} not reachable yet ({message})")
            }
            WaitEvent::TimedOut { addr } => write!(f, "SSH connection to {addr} timed out"),
            WaitEvent::HandshakeFailed { addr, message } => {
                write!(f, "SSH handshake with {addr} failed: {message}")
            }
            WaitEvent::AuthFailed {
                attempt,
                max,
                message,
            } => match max {
                Some(m) => write!(f, "SSH authentication failed ({attempt}/{m}): {message}"),
                None => write!(f, "SSH authentication failed ({attempt}): {message}"),
            },
            WaitEvent::Connected {
                addr,
                host_key_fingerprint,
                after,
            } => {
                write!(
                    f,
                    "Connected to SSH at {addr} after {:.1}s",
                    after.as_secs_f64()
                )?;
                if let Some(fp) = host_key_fingerprint {
                    write!(f, " (host key {fp}, not verified)")?;
                }
                Ok(())
            }
            WaitEvent::ConnectionDropped { message } => {
                write!(
                    f,
                    "SSH connection dropped right after connecting ({message}); retrying"
                )
            }
        }
    }
}

/// How long to wait before the next attempt, after an attempt that observed `e`.
///
/// No fixed back-off where the failure is cheap and says "not yet": a refused connection costs one
/// round trip, so the next attempt follows after [`REFUSED_PAUSE`]; an attempt that timed out has
/// already waited its `connect_timeout`, so the next one starts at once.
pub fn pause_after(e: &WaitEvent) -> Duration {
    match e {
        WaitEvent::PortClosed { .. } => REFUSED_PAUSE,
        WaitEvent::TimedOut { .. } => Duration::ZERO,
        WaitEvent::HandshakeFailed { .. } => HANDSHAKE_PAUSE,
        _ => POLL_INTERVAL,
    }
}

/// Progress callback for [`wait_for_ssh`].
pub type WaitProgress<'a> = &'a (dyn Fn(&WaitEvent) + Send + Sync);

fn classify(e: &ConnectError, auth_failures: u32, max: Option<u32>) -> WaitEvent {
    match e {
        ConnectError::PortClosed { addr, source } => WaitEvent::PortClosed {
            addr: addr.clone(),
            message: source.to_string(),
        },
        ConnectError::Timeout { addr, .. } => WaitEvent::TimedOut { addr: addr.clone() },
        ConnectError::AuthFailed { .. } | ConnectError::Agent(_) => WaitEvent::AuthFailed {
            attempt: auth_failures,
            max,
            message: e.to_string(),
        },
        ConnectError::Handshake { addr, message } => WaitEvent::HandshakeFailed {
            addr: addr.clone(),
            message: message.clone(),
        },
        other => WaitEvent::HandshakeFailed {
            addr: String::new(),
            message: other.to_string(),
        },
    }
}

/// Wait until SSH to `cfg` works, for at most `timeout` (`None` = until cancelled).
///
/// Tries at once, then again after [`pause_after`] the failure it saw. Authentication failures count towards
/// `cfg.handshake_attempts`; port-closed and handshake errors do not (the guest is still booting).
/// After the first success the connection is checked with a trivial command; if that fails the loop
/// keeps retrying for [`SETTLE_GRACE`] (cloud-init restarts sshd right after it first answers).
pub async fn wait_for_ssh(
    cfg: SshConfig,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
    progress: WaitProgress<'_>,
) -> Result<SshCommunicator, WaitError> {
    let start = Instant::now();
    info!(addr = %cfg.address(), ?timeout, "Waiting for SSH to become available");
    let mut n = 0u32;
    let mut auth_failures = 0u32;
    let mut last = String::from("no attempt made");
    let mut grace_until: Option<Instant> = None;
    loop {
        if cancel.is_cancelled() {
            return Err(WaitError::Cancelled);
        }
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let in_grace = grace_until.is_some_and(|g| Instant::now() < g);
        if left == Some(Duration::ZERO) && !in_grace {
            return Err(WaitError::Timeout {
                waited: start.elapsed(),
                last,
            });
        }
        n += 1;
        progress(&WaitEvent::Attempt {
            n,
            addr: cfg.address(),
        });
        let per_try = left.map_or(cfg.connect_timeout, |l| {
            cfg.connect_timeout.min(l.max(Duration::from_secs(2)))
        });
        let r = tokio::select! {
            _ = cancel.cancelled() => return Err(WaitError::Cancelled),
            r = connect_once(&cfg, per_try) => r,
        };
        let mut pause: Duration;
        match r {
            Ok(conn) => {
                let fp = conn.host_key_fingerprint.clone();
                let comm = SshCommunicator::from_conn(cfg.clone(), conn);
                // settle check: a command must run on this connection
                let check = tokio::select! {
                    _ = cancel.cancelled() => return Err(WaitError::Cancelled),
                    r = tokio::time::timeout(cfg.connect_timeout, comm.exec("true", &discard, &discard, cancel)) => r,
                };
                match check {
                    Ok(Ok(status)) if status != crate::comm::ExitStatus::Disconnected => {
                        progress(&WaitEvent::Connected {
                            addr: cfg.address(),
                            host_key_fingerprint: fp,
                            after: start.elapsed(),
                        });
                        return Ok(comm);
                    }
                    other => {
                        let message = match other {
                            Ok(Ok(s)) => s.to_string(),
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer to a test command".to_string(),
                        };
                        debug!(%message, "fresh SSH connection failed its check");
                        progress(&WaitEvent::ConnectionDropped {
                            message: message.clone(),
                        });
                        last = message;
                        pause = POLL_INTERVAL;
                        grace_until.get_or_insert(Instant::now() + SETTLE_GRACE);
                    }
                }
            }
            Err(e) if e.is_fatal() => return Err(WaitError::Fatal(e)),
            Err(e) => {
                if e.is_auth_failure() {
                    auth_failures += 1;
                }
                let seen = classify(&e, auth_failures, cfg.handshake_attempts);
                pause = pause_after(&seen);
                progress(&seen);
                last = e.to_string();
                if e.is_auth_failure() {
                    if let Some(max) = cfg.handshake_attempts {
                        if max > 0 && auth_failures >= max {
                            return Err(WaitError::TooManyAuthFailures {
                                attempts: auth_failures,
                                last,
                            });
                        }
                    }
                }
            }
        }
        if let Some(t) = timeout {
            pause = pause.min(t.saturating_sub(start.elapsed()));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(WaitError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod pause_tests {
    use super::*;

    #[test]
    fn refused_and_timed_out_attempts_retry_without_the_full_interval() {
        let addr = "10.0.0.2:22".to_string();
        let refused = WaitEvent::PortClosed {
            addr: addr.clone(),
            message: "Connection refused".into(),
        };
        assert_eq!(pause_after(&refused), REFUSED_PAUSE);
        assert!(REFUSED_PAUSE <= Duration::from_millis(100));
        assert_eq!(
            pause_after(&WaitEvent::TimedOut { addr: addr.clone() }),
            Duration::ZERO
        );
        let hs = WaitEvent::HandshakeFailed {
            addr,
            message: "eof".into(),
        };
        assert_eq!(pause_after(&hs), HANDSHAKE_PAUSE);
        // wrong credentials are not hammered
        let auth = WaitEvent::AuthFailed {
            attempt: 1,
            max: Some(3),
            message: "denied".into(),
        };
        assert_eq!(pause_after(&auth), POLL_INTERVAL);
    }
}
