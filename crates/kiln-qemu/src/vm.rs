//! A VM running on QEMU: start, status, keys, power, guest agent, reboot handling.
//!
//! QEMU runs with `-no-reboot`: when the guest reboots, QEMU exits (rc 0) after a `SHUTDOWN` event
//! with `reason: guest-reset` (or a `RESET` event). The exit watcher then starts QEMU again with the
//! same arguments, so the VM stays "running" for API clients (this avoids the TCG warm-reset stall of
//! `test-guest.md` §4a). Any other exit (guest poweroff, `quit`, kill, crash) makes the VM "stopped".
//! QEMU processes die with their parent (`PR_SET_PDEATHSIG`) and are killed when the [`RunningVm`]
//! is dropped.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::qga::AgentError;
use crate::qmp::QmpError;
use crate::spec::{RunPaths, SpecError, VmSpec};

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
    _private: (),
}

impl RunningVm {
    /// Prepare the run directory (cloud-init ISO, EFI vars, tap devices for `netN` with a bridge),
    /// start QEMU and connect QMP. Fails if QEMU exits during start-up (its stderr in the error).
    pub async fn start(spec: VmSpec) -> Result<RunningVm, VmError> {
        todo!("{spec:?}")
    }

    pub fn vmid(&self) -> u32 {
        todo!()
    }

    /// The QEMU arguments in use.
    pub fn args(&self) -> &[String] {
        todo!()
    }

    pub fn paths(&self) -> &RunPaths {
        todo!()
    }

    /// Serial console log (appended across reboot restarts).
    pub fn serial_log(&self) -> PathBuf {
        self.paths().serial_log.clone()
    }

    /// Current state; `qmpstatus` comes from QMP `query-status`.
    pub async fn status(&self) -> VmStatus {
        todo!()
    }

    /// Subscribe to lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        todo!()
    }

    /// Send a PVE/HMP `sendkey` value (`ret`, `shift-a`, `ctrl-alt-delete`) via QMP `send-key`.
    pub async fn send_key(&self, key: &str) -> Result<(), VmError> {
        todo!("{key}")
    }

    /// ACPI power button (`system_powerdown`).
    pub async fn powerdown(&self) -> Result<(), VmError> {
        todo!()
    }

    /// Hard reset (`system_reset`); with `-no-reboot` this is handled like a guest reboot.
    pub async fn reset(&self) -> Result<(), VmError> {
        todo!()
    }

    /// Stop immediately (QMP `quit`, then SIGKILL if QEMU is still there after 5 s).
    pub async fn stop(&self) -> Result<(), VmError> {
        todo!()
    }

    /// Wait until the VM is stopped; false on timeout.
    pub async fn wait_stopped(&self, timeout: Duration) -> bool {
        todo!("{timeout:?}")
    }

    /// Any QMP command on the current QEMU instance (waits briefly while a reboot restart is in
    /// progress).
    pub async fn qmp(&self, command: &str, arguments: Option<Value>) -> Result<Value, VmError> {
        todo!("{command}{arguments:?}")
    }

    /// A guest-agent command with the default timeout (`guest-ping` uses PVE's 3 s).
    pub async fn agent(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        todo!("{command}{arguments:?}")
    }

    /// A guest-agent command with an explicit timeout.
    pub async fn agent_timeout(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, AgentError> {
        todo!("{command}{arguments:?}{timeout:?}")
    }
}
