//! Async QEMU guest-agent (QGA) client over the virtio-serial chardev socket.
//!
//! There is no greeting: on every (re)connect the client sends `guest-sync-delimited` with a random
//! id, discards everything up to the `0xFF` sentinel the agent puts before its reply, and skips stale
//! replies until its id comes back (the channel may hold output from before a guest reboot). Every
//! call has a timeout; a guest whose agent does not answer yields [`AgentError::NotRunning`], which
//! the sandbox reports as PVE's `QEMU guest agent is not running`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// Timeout PVE uses for `guest-ping` before it declares the agent not running.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Default timeout for other commands.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Commands the agent does not answer on success.
const NO_REPLY: &[&str] = &[
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
];

/// Errors of a guest-agent call.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No agent answered the sync handshake (socket missing, guest not booted, agent not installed).
    #[error("QEMU guest agent is not running")]
    NotRunning {
        /// What exactly failed (for logs).
        reason: String,
    },
    /// The agent answered with an error.
    #[error("Agent error: {desc}")]
    Command { class: String, desc: String },
    /// The sync worked but the command's reply did not come in time.
    #[error("guest agent command '{command}' failed - got timeout")]
    Timeout { command: String },
    /// The agent sent something that is not a QGA reply.
    #[error("guest agent protocol error: {0}")]
    Protocol(String),
}

impl AgentError {
    /// True for [`AgentError::NotRunning`].
    pub fn is_not_running(&self) -> bool {
        matches!(self, AgentError::NotRunning { .. })
    }
}

struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// Guest-agent client for one socket path. Calls are serialized; the connection is kept between
/// calls and re-established (with a new sync) after any error or timeout.
pub struct QgaClient {
    path: PathBuf,
    conn: Mutex<Option<Conn>>,
}

impl std::fmt::Debug for QgaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QgaClient")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl QgaClient {
    /// A client for the agent socket at `path` (nothing is connected yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        QgaClient {
            path: path.into(),
            conn: Mutex::new(None),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drop the current connection (e.g. after QEMU restarted); the next call reconnects.
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    /// `guest-ping` with PVE's 3 s timeout.
    pub async fn ping(&self) -> Result<(), AgentError> {
        self.execute("guest-ping", None, PING_TIMEOUT)
            .await
            .map(drop)
    }

    /// Run `command` with optional `arguments`; `timeout` covers connect + sync + reply.
    /// Commands that never reply on success (`guest-shutdown`, `guest-suspend-*`) return
    /// `Value::Null` once sent, unless the agent reports an error within a second.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let mut guard = self.conn.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        if guard.is_none() {
            match tokio::time::timeout_at(deadline, self.connect_and_sync()).await {
                Ok(Ok(c)) => *guard = Some(c),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(AgentError::NotRunning {
                        reason: format!("no answer to guest-sync-delimited within {timeout:?}"),
                    })
                }
            }
        }
        let Some(conn) = guard.as_mut() else {
            return Err(AgentError::Protocol("no connection".into()));
        };
        let mut req = json!({"execute": command});
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let no_reply = NO_REPLY.contains(&command);
        let res = if no_reply {
            let r = async {
                send(&mut conn.writer, &req).await?;
                match tokio::time::timeout(Duration::from_secs(1), read_reply(&mut conn.reader))
                    .await
                {
                    // no answer, or the channel went away with the guest: sent
                    Err(_) | Ok(Err(AgentError::NotRunning { .. })) => Ok(Value::Null),
                    Ok(r) => r,
                }
            };
            tokio::time::timeout_at(deadline, r).await
        } else {
            tokio::time::timeout_at(deadline, async {
                send(&mut conn.writer, &req).await?;
                read_reply(&mut conn.reader).await
            })
            .await
        };
        match res {
            Ok(Ok(v)) => {
                if no_reply {
                    *guard = None;
                }
                Ok(v)
            }
            Ok(Err(e @ AgentError::Command { .. })) => Err(e),
            Ok(Err(e)) => {
                *guard = None;
                Err(e)
            }
            Err(_) => {
                *guard = None;
                Err(AgentError::Timeout {
                    command: command.to_string(),
                })
            }
        }
    }

    async fn connect_and_sync(&self) -> Result<Conn, AgentError> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| AgentError::NotRunning {
                reason: format!("connect {}: {e}", self.path.display()),
            })?;
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(r),
            writer: w,
        };
        let id: u32 = rand::random::<u32>() & 0x3fff_ffff;
        send(
            &mut conn.writer,
            &json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}),
        )
        .await
        .map_err(|e| AgentError::NotRunning {
            reason: e.to_string(),
        })?;
        // discard everything up to and including the 0xFF sentinel
        loop {
            let b = conn
                .reader
                .read_u8()
                .await
                .map_err(|e| AgentError::NotRunning {
                    reason: format!("reading sync reply: {e}"),
                })?;
            if b == 0xff {
                break;
            }
        }
        loop {
            let v = read_line_json(&mut conn.reader)
                .await
                .map_err(|e| AgentError::NotRunning {
                    reason: format!("reading sync reply: {e}"),
                })?;
            if v.get("return").and_then(Value::as_u64) == Some(u64::from(id)) {
                return Ok(conn);
            }
        }
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> Result<(), AgentError> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes())
        .await
        .map_err(|e| AgentError::NotRunning {
            reason: format!("write: {e}"),
        })
}

/// Read lines until one parses as JSON (sentinel bytes stripped).
async fn read_line_json(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Value, AgentError> {
    loop {
        let mut buf = Vec::new();
        let n = r
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| AgentError::NotRunning {
                reason: format!("read: {e}"),
            })?;
        if n == 0 {
            return Err(AgentError::NotRunning {
                reason: "connection closed".into(),
            });
        }
        let start = buf.iter().position(|b| *b != 0xff).unwrap_or(buf.len());
        let text = String::from_utf8_lossy(&buf[start..]);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(v) => return Ok(v),
            Err(_) => {
                tracing::debug!(line = %text, "QGA: skipping unparsable line");
                continue;
            }
        }
    }
}

async fn read_reply(
    r: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Value, AgentError> {
    let v = read_line_json(r).await?;
    if let Some(ret) = v.get("return") {
        return Ok(ret.clone());
    }
    if let Some(e) = v.get("error") {
        return Err(AgentError::Command {
            class: e["class"].as_str().unwrap_or("").to_string(),
            desc: e["desc"].as_str().unwrap_or("").to_string(),
        });
    }
    Err(AgentError::Protocol(format!("unexpected reply {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake guest agent: leaves stale output in the channel before the sync reply, answers the
    /// sync with the 0xFF sentinel, then serves commands.
    async fn fake_agent(listener: UnixListener, connections: usize) {
        for _ in 0..connections {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&line).unwrap();
                match req["execute"].as_str().unwrap() {
                    "guest-sync-delimited" => {
                        let id = &req["arguments"]["id"];
                        // stale reply from before a reboot, garbage, then sentinel + our reply
                        w.write_all(b"{\"return\": 42}\n\x01garbage").await.unwrap();
                        w.write_all(b"\xff{\"return\": 7}\n").await.unwrap();
                        w.write_all(format!("{{\"return\": {id}}}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                    "guest-ping" => w.write_all(b"{\"return\": {}}\n").await.unwrap(),
                    "guest-network-get-interfaces" => w
                        .write_all(b"{\"return\": [{\"name\": \"lo\", \"ip-addresses\": [{\"ip-address\": \"127.0.0.1\", \"ip-address-type\": \"ipv4\", \"prefix\": 8}]}]}\n")
                        .await
                        .unwrap(),
                    "guest-exec" => w
                        .write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"Guest agent command failed, error was 'Failed to execute child process'\"}}\n")
                        .await
                        .unwrap(),
                    "guest-shutdown" => return, // no reply on success; the guest goes away
                    "hang" => {}
                    _ => unreachable!(),
                }
            }
        }
    }

    #[tokio::test]
    async fn sync_sentinel_commands_errors_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_agent(listener, 2));
        let qga = QgaClient::new(&path);
        qga.ping().await.unwrap();
        let ifs = qga
            .execute("guest-network-get-interfaces", None, DEFAULT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(ifs[0]["ip-addresses"][0]["ip-address"], "127.0.0.1");
        match qga
            .execute(
                "guest-exec",
                Some(json!({"path": "/nope"})),
                DEFAULT_TIMEOUT,
            )
            .await
        {
            Err(e @ AgentError::Command { .. }) => {
                assert!(e
                    .to_string()
                    .starts_with("Agent error: Guest agent command failed"))
            }
            other => panic!("{other:?}"),
        }
        // a command that never answers times out and drops the connection
        match qga.execute("hang", None, Duration::from_millis(300)).await {
            Err(AgentError::Timeout { command }) => assert_eq!(command, "hang"),
            other => panic!("{other:?}"),
        }
        // the next call reconnects and syncs again (second connection of the fake)
        qga.ping().await.unwrap();
        assert_eq!(
            qga.execute("guest-shutdown", None, DEFAULT_TIMEOUT)
                .await
                .unwrap(),
            Value::Null
        );
        server.await.unwrap();
        // nobody listens any more: "not running"
        drop(dir);
        let e = qga.ping().await.unwrap_err();
        assert!(e.is_not_running());
        assert_eq!(e.to_string(), "QEMU guest agent is not running");
    }

    #[tokio::test]
    async fn silent_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // accepts (QEMU's chardev does) but nothing in the guest answers
        let _keep = tokio::spawn(async move {
            let (_s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let e = QgaClient::new(&path)
            .execute("guest-ping", None, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.is_not_running(), "{e:?}");
    }
}
