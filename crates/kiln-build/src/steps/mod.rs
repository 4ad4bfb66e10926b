//! The steps of a `proxmox-iso` build, in order (each owns its cleanup):
//! connect → preflight → iso → http_server → create_vm → start_vm → boot_command → wait_guest → provision →
//! shutdown → finalize (eject ISOs, cloud-init drive, unused disks, name/description) → template.
//! A `proxmox-clone` build replaces iso → http_server → create_vm → boot_command with clone_vm.
//! With `--cache-install` (see [`crate::cache`] and [`cache`]): connect → preflight → cache_lookup →
//! cache_clone → (iso → http_server → firewall → create_vm, skipped on a hit) → start_vm →
//! (boot_command, skipped on a hit) → wait_guest → cache_layer (on a miss) → provision → … → template.
//! `kiln build --preflight` runs connect → preflight only.

pub mod boot;
pub mod cache;
mod clone;
mod connect;
mod finish;
pub mod firewall;
mod guest;
pub(crate) mod iso;
pub mod preflight;
mod vm;

pub use boot::StepBootCommand;
pub use clone::{clone_params, pve_urlencode, StepCloneVm};
pub use connect::{connect_options, StepConnect};
pub use finish::{StepFinalize, StepShutdown, StepTemplate};
pub use guest::{http_diagnosis, StepProvision, StepWaitGuest};
pub use iso::StepIso;
pub use preflight::StepPreflight;
pub use vm::{vm_manual_commands, StepCreateVm, StepStartVm};

use crate::http::HttpServer;
use crate::pipeline::StepError;
use kiln_config::model::SourceRun;
use kiln_guest::SshCommunicator;
use kiln_pve::{Client, WaitOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run-wide switches that steps need.
#[derive(Debug, Clone, Default)]
pub struct BuildFlags {
    /// `-force`: replace an existing template with the same id/name.
    pub force: bool,
    /// After this long without any request to the HTTP server, say so (with likely causes).
    pub http_diag_after: Option<Duration>,
    /// `--open-firewall[=BACKEND]`: open the HTTP port in the host firewall for the build.
    pub open_firewall: Option<kiln_firewall::Choice>,
    /// `--cache-install`: reuse (or make) the install-cache base template.
    pub cache_install: bool,
}

/// The state shared by the steps of one build (Packer's state bag, typed).
pub struct BuildState {
    pub run: SourceRun,
    pub template_dir: PathBuf,
    pub flags: BuildFlags,
    pub client: Option<Arc<Client>>,
    pub node: String,
    /// The VM id, once chosen.
    pub vmid: Option<u32>,
    /// The create call was sent: cleanup must try to delete the VM.
    pub vm_created: bool,
    pub vm_name: String,
    /// The boot ISO's volume (`local:iso/x.iso`).
    pub boot_iso: Option<String>,
    /// Additional ISOs' volumes, in config order.
    pub additional_isos: Vec<String>,
    /// ISOs kiln generated and uploaded (cd_files/cd_content): (storage, volid, unmount).
    pub generated_isos: Vec<(String, String, bool)>,
    pub http: Option<HttpServer>,
    pub guest_ip: Option<String>,
    pub ssh: Option<kiln_guest::SshConfig>,
    pub comm: Option<SshCommunicator>,
    /// The ephemeral key pair a `proxmox-clone` build made for the communicator (no
    /// ssh_password, ssh_private_key_file or ssh_agent_auth): its public half went to the clone
    /// through cloud-init `sshkeys`, and it is removed from authorized_keys after provisioning.
    pub temp_key: Option<std::sync::Arc<kiln_guest::TempKeyPair>>,
    /// When the boot command finished (the "nothing fetched" clock starts there).
    pub typed_at: Option<std::time::Instant>,
    /// Set when the template (or VM) is final.
    pub artifact_id: Option<u32>,
    /// `--cache-install`: the key and the base found (set by `cache_lookup`).
    pub cache: Option<cache::CacheState>,
}

impl BuildState {
    pub fn new(run: SourceRun, template_dir: PathBuf, flags: BuildFlags) -> Self {
        let node = run.config.node.clone();
        BuildState {
            run,
            template_dir,
            flags,
            client: None,
            node,
            vmid: None,
            vm_created: false,
            vm_name: String::new(),
            boot_iso: None,
            additional_isos: Vec::new(),
            generated_isos: Vec::new(),
            http: None,
            guest_ip: None,
            ssh: None,
            comm: None,
            temp_key: None,
            typed_at: None,
            artifact_id: None,
            cache: None,
        }
    }

    pub fn client(&self) -> Result<Arc<Client>, StepError> {
        self.client
            .clone()
            .ok_or_else(|| StepError::failed("internal: not connected to Proxmox VE"))
    }

    pub fn vmid(&self) -> Result<u32, StepError> {
        self.vmid
            .ok_or_else(|| StepError::failed("internal: no VM id"))
    }

    /// Task waits use `task_timeout`, polled every second.
    pub fn wait_opts(&self) -> WaitOptions {
        WaitOptions {
            poll_interval: Duration::from_secs(1),
            timeout: self.run.config.task_timeout.max(Duration::from_secs(10)),
            log_lines_on_failure: 10,
        }
    }

    /// `{{ .HTTPIP }}` and `{{ .HTTPPort }}`.
    pub fn http_ip_port(&self) -> (String, u16) {
        match &self.http {
            Some(h) => (h.http_ip.to_string(), h.port()),
            None => (String::new(), 0),
        }
    }
}

/// Turn a PVE client error into a step error with context.
pub fn pve_err(what: &str, e: kiln_pve::Error) -> StepError {
    StepError::failed(format!("{what}: {e}"))
}
