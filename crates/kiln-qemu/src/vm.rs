//! A VM running on QEMU: start, status, keys, power, guest agent, reboot handling.
//!
//! QEMU runs with `-no-reboot`: when the guest reboots, QEMU exits (rc 0) after a `SHUTDOWN` event
//! with `reason: guest-reset` (or a `RESET` event). The exit watcher then starts QEMU again with the
//! same arguments, so the VM stays "running" for API clients (this avoids the TCG warm-reset stall of
//! `test-guest.md` §4a). Any other exit (guest poweroff, `quit`, kill, crash) makes the VM "stopped".
//! QEMU processes die with their parent (`PR_SET_PDEATHSIG`) and are killed when the [`RunningVm`]
//! is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};

use crate::qga::{AgentError, QgaClient};
use crate::qmp::{QmpClient, QmpError, QmpEvent};
use crate::spec::{self, RunPaths, SpecError, VmSpec};

/// The QEMU binary (`KILN_QEMU_BIN` overrides).
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("KILN_QEMU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// How long QEMU may take to create its QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Running or not, as PVE's `status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    Running,
    Stopped,
}

impl VmState {
    /// `running` / `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
        }
    }
}

/// Snapshot for PVE's `status/current`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmStatus {
    pub state: VmState,
    /// QMP `query-status` run state (`running`, `paused`, `prelaunch`, `shutdown`, …); `None` when
    /// stopped or QMP did not answer (e.g. during a reboot restart).
    pub qmpstatus: Option<String>,
    /// PID of the current QEMU process.
    pub pid: Option<u32>,
    /// Time since the VM was started (across reboot restarts, like PVE's uptime of a VM whose QEMU
    /// keeps running across a guest reboot).
    pub uptime: Duration,
    /// How many times QEMU was restarted because the guest rebooted.
    pub restarts: u32,
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (ACPI or `poweroff`).
    GuestShutdown,
    /// Asked to stop: [`RunningVm::stop`] or QMP `quit`.
    Requested,
    /// QEMU exited on its own otherwise (crash, error; message from its log).
    Exited { code: Option<i32>, message: String },
}

/// Lifecycle events, for the sandbox's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// QEMU started (first start).
    Started { pid: u32 },
    /// The guest rebooted; QEMU was restarted with the same arguments.
    Rebooted { pid: u32 },
    /// The VM is stopped.
    Stopped { reason: StopReason },
}

/// Errors of VM operations.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("starting QEMU failed: {0}")]
    Start(String),
    #[error("QEMU exited right after start: {0}")]
    EarlyExit(String),
    #[error("VM {0} is not running")]
    NotRunning(u32),
    /// An invalid `sendkey` value; displays as QEMU's `invalid parameter: <part>`.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    CloudInit(#[from] crate::cloudinit::CloudInitError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

/// A VM whose QEMU is (or was) running. Dropping it kills QEMU.
pub struct RunningVm {
    inner: Arc<Inner>,
    supervisor: tokio::task::JoinHandle<()>,
}

struct Inner {
    vmid: u32,
    args: Vec<String>,
    paths: RunPaths,
    tpm: Option<crate::tpm::TpmState>,
    reboot_allowed: bool,
    links_down: Vec<String>,
    started: Instant,
    state: Mutex<State>,
    /// new QMP connection after each (re)start
    qmp_tx: watch::Sender<Option<Arc<QmpClient>>>,
    stopped_tx: watch::Sender<bool>,
    qga: Option<QgaClient>,
    events: broadcast::Sender<VmEvent>,
    stop_requested: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    pid: Option<u32>,
    restarts: u32,
    running: bool,
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.inner.stop_requested.store(true, Ordering::SeqCst);
        if let Some(pid) = self.inner.pid() {
            kill(pid);
        }
        // the Child inside the supervisor is kill_on_drop as well
        self.supervisor.abort();
    }
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we spawned; no memory is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

impl Inner {
    fn pid(&self) -> Option<u32> {
        self.state.lock().ok().and_then(|s| s.pid)
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    fn emit(&self, e: VmEvent) {
        tracing::info!(vmid = self.vmid, event = ?e, "VM lifecycle");
        let _ = self.events.send(e);
    }

    /// Spawn QEMU and connect QMP; on failure the child is killed and its log tail returned.
    async fn launch(&self) -> Result<(Child, Arc<QmpClient>), VmError> {
        for p in [&self.paths.qmp, &self.paths.qga, &self.paths.pidfile] {
            let _ = std::fs::remove_file(p);
        }
        if let Some(t) = &self.tpm {
            crate::tpm::start_swtpm(t, &self.paths).await?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.qemu_log)
            .map_err(|source| VmError::Io {
                what: format!("opening {}", self.paths.qemu_log.display()),
                source,
            })?;
        let log2 = log.try_clone().map_err(|source| VmError::Io {
            what: "dup log fd".into(),
            source,
        })?;
        let log_start = std::fs::metadata(&self.paths.qemu_log)
            .map(|m| m.len())
            .unwrap_or(0);
        let mut cmd = Command::new(qemu_binary());
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // the parent may have died between fork and prctl
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| VmError::Start(format!("{}: {e}", qemu_binary().display())))?;
        let pid = child.id();
        let deadline = tokio::time::Instant::now() + QMP_CONNECT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return Err(VmError::EarlyExit(format!(
                    "{status}: {}",
                    log_tail(&self.paths.qemu_log, log_start)
                )));
            }
            if self.paths.qmp.exists() {
                match QmpClient::connect(&self.paths.qmp).await {
                    Ok(q) => {
                        let q = Arc::new(q);
                        self.set(|s| s.pid = pid);
                        for nic in &self.links_down {
                            if let Err(e) = q.set_link(nic, false).await {
                                tracing::warn!(vmid = self.vmid, %nic, "set_link down: {e}");
                            }
                        }
                        return Ok((child, q));
                    }
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        let _ = child.kill().await;
                        return Err(VmError::Start(format!("QMP: {e}")));
                    }
                    Err(_) => {}
                }
            } else if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(VmError::Start(format!(
                    "QEMU did not create {} within {QMP_CONNECT_TIMEOUT:?}",
                    self.paths.qmp.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(text.len());
    let s = String::from_utf8_lossy(&text[from..]);
    let s = s.trim();
    let start = s.len().saturating_sub(2000);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    if s.is_empty() {
        "(no output)".into()
    } else {
        s[start..].to_string()
    }
}

/// Did QEMU exit because of a reset (guest reboot, watchdog, QMP `system_reset`) under
/// `-no-reboot`? Otherwise: was it a guest shutdown?
fn classify_exit(events: &[QmpEvent]) -> Option<&'static str> {
    for ev in events.iter().rev() {
        match ev.event.as_str() {
            "SHUTDOWN" => {
                let reason = ev.data["reason"].as_str().unwrap_or("");
                return Some(match reason {
                    "guest-reset" | "host-qmp-system-reset" | "host-signal-reset" => "reset",
                    "guest-shutdown" => "shutdown",
                    _ => "other",
                });
            }
            "RESET" => return Some("reset"),
            _ => {}
        }
    }
    None
}

async fn supervise(inner: Arc<Inner>, mut child: Child, mut qmp: Arc<QmpClient>) {
    loop {
        let status = child.wait().await;
        // let the QMP reader drain the last events (SHUTDOWN comes before EOF)
        for _ in 0..40 {
            if qmp.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let events = qmp.recent_events();
        let kind = classify_exit(&events);
        if let Some(t) = &inner.tpm {
            // swtpm exits with QEMU (--terminate); keep its state in the volume
            if let Err(e) = crate::tpm::export(t, &inner.paths).await {
                tracing::warn!(vmid = inner.vmid, "TPM state not saved: {e}");
            }
        }
        let requested = inner.stop_requested.load(Ordering::SeqCst);
        tracing::debug!(vmid = inner.vmid, ?status, ?kind, requested, "QEMU exited");
        if !requested && kind == Some("reset") && inner.reboot_allowed {
            inner.qmp_tx.send_replace(None);
            if let Some(q) = &inner.qga {
                q.reset().await;
            }
            match inner.launch().await {
                Ok((mut c, _)) if inner.stop_requested.load(Ordering::SeqCst) => {
                    // stop() came in while QEMU was being restarted
                    let _ = c.kill().await;
                    let status = c.wait().await;
                    tracing::debug!(vmid = inner.vmid, ?status, "restarted QEMU stopped again");
                }
                Ok((c, q)) => {
                    child = c;
                    qmp = q;
                    inner.set(|s| s.restarts += 1);
                    inner.qmp_tx.send_replace(Some(qmp.clone()));
                    let pid = inner.pid().unwrap_or(0);
                    inner.emit(VmEvent::Rebooted { pid });
                    continue;
                }
                Err(e) => {
                    inner.set(|s| {
                        s.running = false;
                        s.pid = None;
                    });
                    inner.emit(VmEvent::Stopped {
                        reason: StopReason::Exited {
                            code: None,
                            message: format!("restart after guest reboot failed: {e}"),
                        },
                    });
                    inner.stopped_tx.send_replace(true);
                    return;
                }
            }
        }
        let reason = if requested || inner.stop_requested.load(Ordering::SeqCst) {
            StopReason::Requested
        } else if kind == Some("shutdown") || (kind == Some("reset") && !inner.reboot_allowed) {
            StopReason::GuestShutdown
        } else {
            let code = status.as_ref().ok().and_then(|s| s.code());
            StopReason::Exited {
                code,
                message: log_tail(&inner.paths.qemu_log, 0)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            }
        };
        inner.qmp_tx.send_replace(None);
        inner.set(|s| {
            s.running = false;
            s.pid = None;
        });
        // event first: whoever wakes up from wait_stopped() finds it already sent
        inner.emit(VmEvent::Stopped { reason });
        inner.stopped_tx.send_replace(true);
        return;
    }
}

impl RunningVm {
    /// Prepare the run directory (cloud-init ISO, EFI vars, tap devices for `netN` with a bridge),
    /// start QEMU and connect QMP. Fails if QEMU exits during start-up (its stderr in the error).
    pub async fn start(spec: VmSpec) -> Result<RunningVm, VmError> {
        let args = spec::qemu_args(&spec)?;
        let paths = spec.paths();
        std::fs::create_dir_all(&paths.run_dir).map_err(|source| VmError::Io {
            what: format!("creating {}", paths.run_dir.display()),
            source,
        })?;
        let c = &spec.config;
        // cloud-init ISO, regenerated at every start like PVE does
        if let Some((_key, _vol, iso)) = spec::cloudinit_drive(&spec) {
            let dns = crate::cloudinit::HostDns::from_resolv_conf();
            let data = crate::cloudinit::generate(spec.vmid, c, &dns, &|v| (spec.volume_path)(v))?;
            if let Some(dir) = iso.parent() {
                std::fs::create_dir_all(dir).map_err(|source| VmError::Io {
                    what: format!("creating {}", dir.display()),
                    source,
                })?;
            }
            crate::cloudinit::write_iso(&data, &iso)?;
        }
        // temporary EFI vars when bios=ovmf has no efidisk0 (PVE does the same, with a warning)
        if c.get("bios").map(String::as_str) == Some("ovmf") && !c.contains_key("efidisk0") {
            let template = spec::efivars_template(c)?;
            std::fs::copy(&template, &paths.efivars).map_err(|source| VmError::Io {
                what: format!("copying {}", template.display()),
                source,
            })?;
        }
        // TPM state: out of the volume into the raw file swtpm works on (see crate::tpm)
        let tpm = crate::tpm::tpm_state(&spec)?;
        if let Some(t) = &tpm {
            crate::tpm::import(t, &paths).await?;
        }
        // tap devices on their bridges
        for (n, bridge) in spec::bridged_nets(c) {
            crate::net::ensure_tap(&spec::tap_name(spec.vmid, n), &bridge)?;
        }
        let agent = c.get("agent").is_some_and(|v| {
            let first = v.split(',').next().unwrap_or("");
            let enabled = first.strip_prefix("enabled=").unwrap_or(first);
            matches!(
                enabled.to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        });
        let reboot_allowed = c.get("reboot").map(String::as_str) != Some("0");
        let (qmp_tx, _) = watch::channel(None);
        let (stopped_tx, _) = watch::channel(false);
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            vmid: spec.vmid,
            args,
            qga: agent.then(|| QgaClient::new(paths.qga.clone())),
            paths,
            tpm,
            reboot_allowed,
            links_down: spec::links_down(c),
            started: Instant::now(),
            state: Mutex::new(State::default()),
            qmp_tx,
            stopped_tx,
            events,
            stop_requested: AtomicBool::new(false),
        });
        let (child, qmp) = inner.launch().await?;
        inner.set(|s| s.running = true);
        inner.qmp_tx.send_replace(Some(qmp.clone()));
        inner.emit(VmEvent::Started {
            pid: inner.pid().unwrap_or(0),
        });
        let supervisor = tokio::spawn(supervise(inner.clone(), child, qmp));
        Ok(RunningVm { inner, supervisor })
    }

    pub fn vmid(&self) -> u32 {
        self.inner.vmid
    }

    /// The QEMU arguments in use.
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    pub fn paths(&self) -> &RunPaths {
        &self.inner.paths
    }

    /// Serial console log (appended across reboot restarts).
    pub fn serial_log(&self) -> PathBuf {
        self.paths().serial_log.clone()
    }

    /// PID of the current QEMU process.
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// True until the VM stopped.
    pub fn is_running(&self) -> bool {
        self.inner.state.lock().map(|s| s.running).unwrap_or(false)
    }

    /// Current state; `qmpstatus` comes from QMP `query-status`.
    pub async fn status(&self) -> VmStatus {
        let (running, pid, restarts) = match self.inner.state.lock() {
            Ok(s) => (s.running, s.pid, s.restarts),
            Err(_) => (false, None, 0),
        };
        let qmpstatus = if running {
            let q = self.inner.qmp_tx.borrow().clone();
            match q {
                Some(q) => q
                    .execute_timeout("query-status", None, Duration::from_secs(3))
                    .await
                    .ok()
                    .and_then(|r| r["status"].as_str().map(str::to_string)),
                None => None,
            }
        } else {
            None
        };
        VmStatus {
            state: if running {
                VmState::Running
            } else {
                VmState::Stopped
            },
            qmpstatus,
            pid,
            uptime: if running {
                self.inner.started.elapsed()
            } else {
                Duration::ZERO
            },
            restarts,
        }
    }

    /// Subscribe to lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.inner.events.subscribe()
    }

    /// The QMP client of the current QEMU instance; waits up to `QMP_CONNECT_TIMEOUT` while a
    /// reboot restart is in progress.
    pub async fn qmp_client(&self) -> Result<Arc<QmpClient>, VmError> {
        let mut rx = self.inner.qmp_tx.subscribe();
        let deadline = tokio::time::Instant::now() + QMP_CONNECT_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(VmError::NotRunning(self.inner.vmid));
            }
            if let Some(q) = rx.borrow_and_update().clone() {
                if !q.is_closed() {
                    return Ok(q);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(VmError::NotRunning(self.inner.vmid)),
            }
        }
    }

    /// Run `f` on the current QMP client; if QEMU goes away in the middle because the guest
    /// rebooted, run it once more on the restarted instance.
    async fn with_qmp<T, F, Fut>(&self, f: F) -> Result<T, VmError>
    where
        F: Fn(Arc<QmpClient>) -> Fut,
        Fut: std::future::Future<Output = Result<T, QmpError>>,
    {
        let mut tries = 0;
        loop {
            let q = self.qmp_client().await?;
            match f(q).await {
                Err(QmpError::Disconnected) if tries < 2 && self.is_running() => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => return r.map_err(VmError::from),
            }
        }
    }

    /// Send a PVE/HMP `sendkey` value (`ret`, `shift-a`, `ctrl-alt-delete`) via QMP `send-key`.
    pub async fn send_key(&self, key: &str) -> Result<(), VmError> {
        let chord = crate::keys::parse(key)?;
        let chord = &chord;
        self.with_qmp(|q| async move { q.send_key(chord, None).await })
            .await
    }

    /// ACPI power button (`system_powerdown`).
    pub async fn powerdown(&self) -> Result<(), VmError> {
        self.with_qmp(|q| async move { q.system_powerdown().await })
            .await
    }

    /// Hard reset (`system_reset`); with `-no-reboot` this is handled like a guest reboot.
    pub async fn reset(&self) -> Result<(), VmError> {
        match self.qmp_client().await?.system_reset().await {
            Ok(()) | Err(QmpError::Disconnected) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stop immediately (QMP `quit`, then SIGKILL if QEMU is still there after 5 s).
    pub async fn stop(&self) -> Result<(), VmError> {
        self.inner.stop_requested.store(true, Ordering::SeqCst);
        if !self.is_running() {
            return Ok(());
        }
        let q = self.inner.qmp_tx.borrow().clone();
        if let Some(q) = q {
            let _ = tokio::time::timeout(Duration::from_secs(3), q.quit()).await;
        }
        if !self.wait_stopped(Duration::from_secs(5)).await {
            if let Some(pid) = self.inner.pid() {
                kill(pid);
            }
            if !self.wait_stopped(Duration::from_secs(10)).await {
                return Err(VmError::Start(format!(
                    "QEMU of VM {} did not exit after SIGKILL",
                    self.inner.vmid
                )));
            }
        }
        Ok(())
    }

    /// Wait until the VM is stopped; false on timeout.
    pub async fn wait_stopped(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.stopped_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Any QMP command on the current QEMU instance (waits briefly while a reboot restart is in
    /// progress).
    pub async fn qmp(&self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        let arguments = &arguments;
        self.with_qmp(|q| async move { q.execute(command, arguments.clone()).await })
            .await
    }

    /// True if the config enables the guest agent (`agent: 1`).
    pub fn agent_configured(&self) -> bool {
        self.inner.qga.is_some()
    }

    /// A guest-agent command with the default timeout (`guest-ping` uses PVE's 3 s).
    pub async fn agent(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        let t = if command == "guest-ping" {
            crate::qga::PING_TIMEOUT
        } else {
            crate::qga::DEFAULT_TIMEOUT
        };
        self.agent_timeout(command, arguments, t).await
    }

    /// A guest-agent command with an explicit timeout. Without `agent` in the config, or when the
    /// VM is stopped, this is [`AgentError::NotRunning`] (the sandbox checks both first to give
    /// PVE's distinct messages).
    pub async fn agent_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        let Some(q) = &self.inner.qga else {
            return Err(AgentError::NotRunning {
                reason: "no agent configured".into(),
            });
        };
        if !self.is_running() {
            return Err(AgentError::NotRunning {
                reason: "VM not running".into(),
            });
        }
        q.execute(command, arguments, timeout).await
    }
}
