//! Provisioners: `shell`, `file`, `ansible`, `shell-local`, `breakpoint` (Packer semantics, see
//! `docs/…/packer-proxmox-behaviour.md` §7), run against the guest through a
//! [`kiln_guest::Communicator`].
//!
//! Entry point: [`run`]. The caller (the provisioning step) builds one [`ProvisionContext`] per build
//! and calls [`run`] for each provisioner in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_config::model::{Provisioner, ProvisionerKind};
use kiln_guest::{CommError, Communicator, SshConfig};
use tokio_util::sync::CancellationToken;

use crate::ui::BuildUi;

mod ansible;
mod ansible_local;
mod breakpoint;
mod file;
mod process;
mod shell;
mod shell_local;
pub mod template;

pub use ansible::{ansible_command_line, build_inventory, AnsiblePlan};
pub use shell::{flatten_env_vars, ShellPlan};

/// Everything a provisioner may need about the build it runs in.
pub struct ProvisionContext<'a> {
    /// The connection to the guest (`None` with `communicator = "none"`: only `shell-local` and
    /// `breakpoint` can run then).
    pub comm: Option<&'a dyn Communicator>,
    /// How the guest is reached (host, port, user, credentials): ansible connects with these.
    pub ssh: Option<&'a SshConfig>,
    /// `PACKER_BUILD_NAME` (the source name, e.g. `ubuntu`).
    pub build_name: &'a str,
    /// `PACKER_BUILDER_TYPE` (`proxmox-iso`).
    pub builder_type: &'a str,
    /// `path.root`: relative `script`, `source`, `playbook_file`… are resolved against it.
    pub template_dir: &'a Path,
    /// Output sink with the build prefix and secret masking.
    pub ui: &'a BuildUi,
    /// Ctrl-C / build abort.
    pub cancel: &'a CancellationToken,
    /// Template data for `{{ .Name }}` in execute_command, extra_arguments…: `HTTPIP`, `HTTPPort`
    /// (then `PACKER_HTTP_ADDR` is set), `SSHPublicKey`, `ID`… Missing ones are errors when used.
    pub vars: &'a BTreeMap<String, String>,
    /// Whether stdin is a terminal a human can press Enter on (`breakpoint`).
    pub interactive: bool,
}

impl ProvisionContext<'_> {
    /// Resolve a local path from the template: absolute paths stay as they are; relative ones are
    /// taken against `path.root`, or against the working directory when only that one exists
    /// (Packer resolves against the working directory, and people run it from the template dir).
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            return path.to_path_buf();
        }
        let in_root = self.template_dir.join(path);
        if !in_root.exists() && path.exists() {
            return path.to_path_buf();
        }
        in_root
    }

    /// `ip:port` of kiln's HTTP server, when known.
    pub fn http_addr(&self) -> Option<String> {
        if let Some(a) = self.vars.get("HTTPAddr") {
            return Some(a.clone());
        }
        match (self.vars.get("HTTPIP"), self.vars.get("HTTPPort")) {
            (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
            _ => None,
        }
    }

    /// The variables every Packer provisioner exports.
    pub fn packer_env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("PACKER_BUILD_NAME".to_string(), self.build_name.to_string()),
            (
                "PACKER_BUILDER_TYPE".to_string(),
                self.builder_type.to_string(),
            ),
        ];
        if let Some(a) = self.http_addr() {
            v.push(("PACKER_HTTP_ADDR".to_string(), a));
        }
        if let Some(ip) = self.vars.get("HTTPIP") {
            v.push(("PACKER_HTTP_IP".to_string(), ip.clone()));
        }
        if let Some(p) = self.vars.get("HTTPPort") {
            v.push(("PACKER_HTTP_PORT".to_string(), p.clone()));
        }
        v
    }

    /// Template lookup: `vars` plus `build_name`/`build_type` and the `.PackerBuildName`… aliases.
    pub fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "build_name" | "PackerBuildName" => Some(self.build_name.to_string()),
            "build_type" | "PackerBuilderType" => Some(self.builder_type.to_string()),
            "PackerHTTPAddr" => self.http_addr(),
            "PackerHTTPIP" => self.vars.get("HTTPIP").cloned(),
            "PackerHTTPPort" => self.vars.get("HTTPPort").cloned(),
            _ => self.vars.get(name).cloned(),
        }
    }

    fn comm(&self, kind: &'static str) -> Result<&dyn Communicator, ProvisionError> {
        self.comm.ok_or(ProvisionError::NoCommunicator(kind))
    }
}

/// Why a provisioner failed. Messages say what, why, and what to try.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("{0}")]
    Template(#[from] template::TemplateError),
    #[error("{0}")]
    Config(String),
    #[error("the `{0}` provisioner needs a connection to the guest, but communicator = \"none\"")]
    NoCommunicator(&'static str),
    #[error("script {script} ended with {status}; valid exit codes: {valid:?} (set valid_exit_codes to accept it)")]
    BadExitCode {
        script: String,
        status: String,
        valid: Vec<i64>,
    },
    #[error("Script disconnected unexpectedly. If you expected your script to disconnect, i.e. from a restart, you can try adding \"expect_disconnect\": true or \"valid_exit_codes\": [0, 2300218] to the shell provisioner parameters.")]
    UnexpectedDisconnect,
    #[error("{what}: {source}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} not found on this machine. Install it: `apt-get install -y ansible` (Debian/Ubuntu) or `python3 -m pip install --user ansible`, or set `command` to its path")]
    ToolMissing(String),
    #[error("{tool} failed with {status}")]
    ToolFailed { tool: String, status: String },
    #[error("provisioner timed out after {0:?} (timeout)")]
    Timeout(Duration),
    #[error("cancelled")]
    Cancelled,
}

impl ProvisionError {
    fn local(what: impl Into<String>, source: std::io::Error) -> Self {
        ProvisionError::Local {
            what: what.into(),
            source,
        }
    }
    fn is_cancel(&self) -> bool {
        matches!(
            self,
            ProvisionError::Cancelled | ProvisionError::Comm(CommError::Cancelled)
        )
    }
}

/// Sleep, unless cancelled.
pub(crate) async fn sleep_or_cancel(
    d: Duration,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(ProvisionError::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// Run one provisioner with its common settings: `pause_before`, `timeout` (per try) and
/// `max_retries` (with a doubling back-off from 2 s, at most 30 s).
pub async fn run(p: &Provisioner, ctx: &ProvisionContext<'_>) -> Result<(), ProvisionError> {
    if !p.pause_before.is_zero() {
        ctx.ui.say(&format!(
            "Pausing {} before the next provisioner...",
            fmt_dur(p.pause_before)
        ));
        sleep_or_cancel(p.pause_before, ctx.cancel).await?;
    }
    let tries = p.max_retries.saturating_add(1);
    let mut backoff = Duration::from_secs(2);
    let mut attempt = 1;
    loop {
        let r = match p.timeout {
            Some(t) if !t.is_zero() => {
                match tokio::time::timeout(t, run_kind(&p.kind, ctx)).await {
                    Ok(r) => r,
                    Err(_) => Err(ProvisionError::Timeout(t)),
                }
            }
            _ => run_kind(&p.kind, ctx).await,
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.is_cancel() || ctx.cancel.is_cancelled() => {
                return Err(ProvisionError::Cancelled)
            }
            Err(e) if attempt < tries => {
                ctx.ui.error(&format!(
                    "{} provisioner failed (attempt {attempt}/{tries}): {e}; retrying in {}",
                    p.type_name(),
                    fmt_dur(backoff)
                ));
                sleep_or_cancel(backoff, ctx.cancel).await?;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `post-processor "shell-local"`: the commands or scripts run on the build host after the
/// template exists, with Packer's environment (`PACKER_BUILD_NAME`, `PACKER_BUILDER_TYPE`, …).
pub async fn run_shell_local_post_processor(
    s: &kiln_config::model::ShellLocal,
    ctx: &ProvisionContext<'_>,
) -> Result<(), ProvisionError> {
    shell_local::run(s, ctx).await
}

async fn run_kind(
    kind: &ProvisionerKind,
    ctx: &ProvisionContext<'_>,
) -> Result<(), ProvisionError> {
    match kind {
        ProvisionerKind::Shell(s) => shell::run(s, ctx).await,
        ProvisionerKind::File(f) => file::run(f, ctx).await,
        ProvisionerKind::Ansible(a) => ansible::run(a, ctx).await,
        ProvisionerKind::ShellLocal(s) => shell_local::run(s, ctx).await,
        ProvisionerKind::Breakpoint(b) => breakpoint::run(b, ctx).await,
        ProvisionerKind::AnsibleLocal(a) => ansible_local::run(a, ctx).await,
    }
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 && s < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A fresh random number for temporary file names (`script_<n>.sh`).
pub(crate) fn rand_suffix() -> u32 {
    rand::random::<u32>() % 9999
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod e2e_tests;
