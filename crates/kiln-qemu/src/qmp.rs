//! Async QMP client (QEMU Machine Protocol) over a Unix socket.
//!
//! Protocol: QEMU sends a greeting (`{"QMP": …}`); the client sends `qmp_capabilities`; then every
//! request carries an `id` and its reply (`{"return": …, "id": …}` or `{"error": {"class", "desc"},
//! "id": …}`) is matched by that id. Asynchronous events (`{"event": …, "data": …, "timestamp": …}`)
//! arrive in between: they are kept (the last [`EVENT_HISTORY`]) and broadcast to subscribers.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};

use crate::keys::KeyChord;

/// How many events a client keeps for [`QmpClient::recent_events`].
pub const EVENT_HISTORY: usize = 256;
/// Default time a command may take before [`QmpError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error.
    #[error("QMP command '{command}' failed: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// The connection closed (QEMU exited) before the reply arrived.
    #[error("QMP connection closed (QEMU exited?)")]
    Disconnected,
    #[error("QMP command '{0}' got no reply within {1:?}")]
    Timeout(String, Duration),
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name, e.g. `SHUTDOWN`, `RESET`, `STOP`, `POWERDOWN`.
    pub event: String,
    /// The event's `data` member (`Value::Null` when absent).
    pub data: Value,
    /// QEMU's timestamp (seconds, microseconds).
    pub timestamp: (i64, i64),
}

/// Result of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpStatus {
    /// QEMU `RunState` name: `running`, `paused`, `prelaunch`, `shutdown`, `guest-panicked`, …
    /// (PVE reports it as `qmpstatus`).
    pub status: String,
    pub running: bool,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>;

/// A connected QMP client. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
    events: broadcast::Sender<QmpEvent>,
    history: Arc<Mutex<VecDeque<QmpEvent>>>,
    greeting: Value,
    timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl QmpClient {
    /// Connect to a QMP socket, read the greeting and negotiate capabilities.
    pub async fn connect(path: &Path) -> Result<Self, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = match tokio::time::timeout(DEFAULT_TIMEOUT, lines.next_line()).await {
            Err(_) => return Err(QmpError::Timeout("greeting".into(), DEFAULT_TIMEOUT)),
            Ok(r) => r?.ok_or(QmpError::Disconnected)?,
        };
        let greeting: Value = serde_json::from_str(&greeting)
            .map_err(|e| QmpError::Protocol(format!("bad greeting {greeting:?}: {e}")))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "not a QMP greeting: {greeting}"
            )));
        }
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (events, _) = broadcast::channel(EVENT_HISTORY);
        let history: Arc<Mutex<VecDeque<QmpEvent>>> = Arc::default();
        let reader = {
            let pending = pending.clone();
            let closed = closed.clone();
            let events = events.clone();
            let history = history.clone();
            tokio::spawn(async move {
                loop {
                    let line = match lines.next_line().await {
                        Ok(Some(l)) => l,
                        Ok(None) | Err(_) => break,
                    };
                    let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                        tracing::warn!(line, "QMP: unparsable line");
                        continue;
                    };
                    if let Some(name) = msg.get("event").and_then(Value::as_str) {
                        let ts = msg.get("timestamp");
                        let ev = QmpEvent {
                            event: name.to_string(),
                            data: msg.get("data").cloned().unwrap_or(Value::Null),
                            timestamp: (
                                ts.and_then(|t| t["seconds"].as_i64()).unwrap_or(0),
                                ts.and_then(|t| t["microseconds"].as_i64()).unwrap_or(0),
                            ),
                        };
                        tracing::debug!(event = %ev.event, data = %ev.data, "QMP event");
                        if let Ok(mut h) = history.lock() {
                            if h.len() == EVENT_HISTORY {
                                h.pop_front();
                            }
                            h.push_back(ev.clone());
                        }
                        let _ = events.send(ev);
                        continue;
                    }
                    let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                        tracing::warn!(%msg, "QMP: reply without id");
                        continue;
                    };
                    let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
                    if let Some(tx) = tx {
                        let res = if let Some(r) = msg.get("return") {
                            Ok(r.clone())
                        } else if let Some(e) = msg.get("error") {
                            Err(QmpError::Command {
                                command: String::new(),
                                class: e["class"].as_str().unwrap_or("").to_string(),
                                desc: e["desc"].as_str().unwrap_or("").to_string(),
                            })
                        } else {
                            Err(QmpError::Protocol(format!(
                                "reply without return/error: {msg}"
                            )))
                        };
                        let _ = tx.send(res);
                    }
                }
                closed.store(true, Ordering::SeqCst);
                if let Ok(mut p) = pending.lock() {
                    for (_, tx) in p.drain() {
                        let _ = tx.send(Err(QmpError::Disconnected));
                    }
                }
            })
        };
        let client = QmpClient {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            closed,
            events,
            history,
            greeting,
            timeout: DEFAULT_TIMEOUT,
            reader,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// Connect, retrying while the socket does not exist yet or refuses (QEMU starting).
    pub async fn connect_retry(path: &Path, within: Duration) -> Result<Self, QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match Self::connect(path).await {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(QmpError::Connect { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The greeting QEMU sent (`{"QMP": {"version": …, "capabilities": …}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// True once the connection is closed (QEMU exited or closed the socket).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Subscribe to events received from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// The last [`EVENT_HISTORY`] events received on this connection.
    pub fn recent_events(&self) -> Vec<QmpEvent> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Run any QMP command with the default timeout and return its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_timeout(command, arguments, self.timeout).await
    }

    /// Run any QMP command with an explicit timeout.
    pub async fn execute_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        if self.is_closed() {
            return Err(QmpError::Disconnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut req = json!({"execute": command, "id": id});
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| QmpError::Protocol("poisoned lock".into()))?
            .insert(id, tx);
        let mut line = req.to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(line.as_bytes()).await {
                self.forget(id);
                return Err(if e.kind() == std::io::ErrorKind::BrokenPipe {
                    QmpError::Disconnected
                } else {
                    QmpError::Io(e)
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.forget(id);
                Err(QmpError::Timeout(command.to_string(), timeout))
            }
            Ok(Err(_)) => Err(QmpError::Disconnected),
            Ok(Ok(Err(QmpError::Command { class, desc, .. }))) => Err(QmpError::Command {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Ok(r)) => r,
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<QmpStatus, QmpError> {
        let r = self.execute("query-status", None).await?;
        Ok(QmpStatus {
            status: r["status"].as_str().unwrap_or("unknown").to_string(),
            running: r["running"].as_bool().unwrap_or(false),
        })
    }

    /// `send-key` with the keys of a chord (see [`crate::keys::parse`]); `hold_ms` = `hold-time`.
    pub async fn send_key(&self, chord: &KeyChord, hold_ms: Option<u32>) -> Result<(), QmpError> {
        let mut args = json!({"keys": chord.to_qmp()});
        if let Some(h) = hold_ms {
            args["hold-time"] = json!(h);
        }
        self.execute("send-key", Some(args)).await.map(drop)
    }

    /// `system_powerdown` (ACPI power button).
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).await.map(drop)
    }

    /// `system_reset` (hard reset).
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.execute("system_reset", None).await.map(drop)
    }

    /// `quit`: QEMU exits. A disconnect while waiting for the reply counts as success.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `stop` (pause the vCPUs).
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// `cont` (resume).
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `human-monitor-command`: run an HMP command line, return its text output.
    pub async fn human_monitor_command(&self, command_line: &str) -> Result<String, QmpError> {
        let r = self
            .execute(
                "human-monitor-command",
                Some(json!({"command-line": command_line})),
            )
            .await?;
        Ok(r.as_str().unwrap_or("").to_string())
    }

    /// `eject` a removable medium from the device with the given QOM id (e.g. `ide2`).
    pub async fn eject(&self, device_id: &str, force: bool) -> Result<(), QmpError> {
        self.execute("eject", Some(json!({"id": device_id, "force": force})))
            .await
            .map(drop)
    }

    /// `blockdev-change-medium`: insert `filename` into the removable device `device_id`.
    pub async fn change_medium(
        &self,
        device_id: &str,
        filename: &Path,
        format: &str,
    ) -> Result<(), QmpError> {
        self.execute(
            "blockdev-change-medium",
            Some(json!({"id": device_id, "filename": filename, "format": format})),
        )
        .await
        .map(drop)
    }

    /// `set_link`: carrier up/down of a NIC (QOM id, e.g. `net0`).
    pub async fn set_link(&self, name: &str, up: bool) -> Result<(), QmpError> {
        self.execute("set_link", Some(json!({"name": name, "up": up})))
            .await
            .map(drop)
    }

    /// `query-block`.
    pub async fn query_block(&self) -> Result<Value, QmpError> {
        self.execute("query-block", None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake QEMU: greeting, answers by id, events in between, and out-of-order replies.
    async fn fake_qemu(listener: UnixListener) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let mut held: Option<Value> = None;
        while let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).unwrap();
            let id = req["id"].clone();
            let reply = match req["execute"].as_str().unwrap() {
                "qmp_capabilities" => json!({"return": {}, "id": id}),
                "query-status" => {
                    w.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n")
                        .await
                        .unwrap();
                    json!({"return": {"status": "running", "running": true}, "id": id})
                }
                "slow" => {
                    held = Some(json!({"return": "slow-done", "id": id}));
                    continue;
                }
                "fast" => {
                    // answer `fast`, then the held `slow` reply: ids must be matched, not order
                    let fast = json!({"return": "fast-done", "id": id});
                    w.write_all(format!("{fast}\n").as_bytes()).await.unwrap();
                    held.take().unwrap()
                }
                "send-key" => {
                    assert_eq!(
                        req["arguments"]["keys"],
                        json!([{"type": "qcode", "data": "shift"}, {"type": "qcode", "data": "a"}])
                    );
                    json!({"return": {}, "id": id})
                }
                "quit" => {
                    w.write_all(b"{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}, \"timestamp\": {\"seconds\": 3, \"microseconds\": 0}}\n")
                        .await
                        .unwrap();
                    return; // close without replying, like QEMU exiting
                }
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("The command {other} has not been found")}, "id": id})
                }
            };
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn protocol_against_a_fake_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(fake_qemu(listener));
        let q = std::sync::Arc::new(QmpClient::connect(&path).await.unwrap());
        assert_eq!(q.greeting()["QMP"]["version"]["qemu"]["major"], 7);
        let mut events = q.events();
        let st = q.query_status().await.unwrap();
        assert_eq!(
            st,
            QmpStatus {
                status: "running".into(),
                running: true
            }
        );
        let ev = events.recv().await.unwrap();
        assert_eq!((ev.event.as_str(), ev.timestamp), ("RESUME", (1, 2)));

        let q2 = q.clone();
        let slow = tokio::spawn(async move { q2.execute("slow", None).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(q.execute("fast", None).await.unwrap(), json!("fast-done"));
        assert_eq!(slow.await.unwrap().unwrap(), json!("slow-done"));

        q.send_key(&crate::keys::parse("shift-a").unwrap(), None)
            .await
            .unwrap();
        match q.execute("nope", None).await {
            Err(e @ QmpError::Command { .. }) => {
                assert!(
                    e.to_string().contains(
                        "'nope' failed: The command nope has not been found (CommandNotFound)"
                    ),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        q.quit().await.unwrap();
        server.await.unwrap();
        for _ in 0..100 {
            if q.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(q.is_closed());
        assert!(matches!(
            q.execute("query-status", None).await,
            Err(QmpError::Disconnected)
        ));
        let names: Vec<String> = q.recent_events().into_iter().map(|e| e.event).collect();
        assert_eq!(names, ["RESUME", "SHUTDOWN"]);
        assert_eq!(q.recent_events()[1].data["reason"], "host-qmp-quit");
    }

    #[tokio::test]
    async fn connect_errors_name_the_socket() {
        let e = QmpClient::connect(Path::new("/nonexistent/qmp.sock"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/qmp.sock"), "{e}");
    }
}
