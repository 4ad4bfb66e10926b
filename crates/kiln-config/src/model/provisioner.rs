//! Provisioners and post-processors, evaluated per run (they may use `source.name`/`build.name`)
//! and already filtered by their `only`/`except`. Go-template fields (`{{ .Path }}`, `{{ .Vars }}`)
//! are kept verbatim.

use super::Location;
use indexmap::IndexMap;
use std::time::Duration;

/// One `provisioner "<type>" {}` block with the fields every provisioner has.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Provisioner {
    /// `name = …` (display name), if set.
    pub name: Option<String>,
    pub pause_before: Duration,
    pub max_retries: u32,
    pub timeout: Option<Duration>,
    pub kind: ProvisionerKind,
    /// Where the block was declared.
    pub location: Option<Location>,
}

impl Provisioner {
    /// The Packer type name (`shell`, `file`, …).
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

/// The provisioner types kiln implements.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum ProvisionerKind {
    Shell(Shell),
    File(FileProvisioner),
    Ansible(Ansible),
    AnsibleLocal(AnsibleLocal),
    ShellLocal(ShellLocal),
    Breakpoint(Breakpoint),
}

impl ProvisionerKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProvisionerKind::Shell(_) => "shell",
            ProvisionerKind::File(_) => "file",
            ProvisionerKind::Ansible(_) => "ansible",
            ProvisionerKind::AnsibleLocal(_) => "ansible-local",
            ProvisionerKind::ShellLocal(_) => "shell-local",
            ProvisionerKind::Breakpoint(_) => "breakpoint",
        }
    }
}

/// `provisioner "shell"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Shell {
    pub inline: Vec<String>,
    /// Default `/bin/sh -e`.
    pub inline_shebang: String,
    pub script: Option<String>,
    pub scripts: Vec<String>,
    pub environment_vars: Vec<String>,
    pub env: IndexMap<String, String>,
    /// `None` = `%s='%s' ` (or `export %s='%s'\n` with `use_env_var_file`).
    pub env_var_format: Option<String>,
    pub use_env_var_file: bool,
    /// Default `chmod +x {{.Path}}; {{.Vars}} {{.Path}}` (with `use_env_var_file`:
    /// `chmod +x {{.Path}}; . {{.EnvVarFile}} && {{.Path}}`).
    pub execute_command: String,
    pub expect_disconnect: bool,
    /// Default `[0]`.
    pub valid_exit_codes: Vec<i64>,
    /// Default `/tmp`.
    pub remote_folder: String,
    /// `None` = `script_<rand>.sh`.
    pub remote_file: Option<String>,
    pub remote_path: Option<String>,
    pub skip_clean: bool,
    /// Default 5 min.
    pub start_retry_timeout: Duration,
    pub pause_after: Duration,
    pub binary: bool,
}

/// `provisioner "file"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileProvisioner {
    pub source: Option<String>,
    pub sources: Vec<String>,
    pub content: Option<String>,
    pub destination: String,
    /// `upload` (default) or `download`.
    pub direction: String,
    pub generated: bool,
}

/// `provisioner "ansible"` (runs `ansible-playbook` on the build host).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Ansible {
    pub playbook_file: String,
    /// `None` = `ansible-playbook`.
    pub command: Option<String>,
    pub user: Option<String>,
    /// `None` = proxy (Packer's default).
    pub use_proxy: Option<bool>,
    pub local_port: Option<u16>,
    pub ssh_host_key_file: Option<String>,
    pub ssh_authorized_key_file: Option<String>,
    pub ansible_proxy_key_type: Option<String>,
    pub inventory_file: Option<String>,
    pub inventory_directory: Option<String>,
    pub inventory_file_template: Option<String>,
    /// `None` = `default`.
    pub host_alias: Option<String>,
    pub groups: Vec<String>,
    pub empty_groups: Vec<String>,
    pub keep_inventory_file: bool,
    pub extra_arguments: Vec<String>,
    pub ansible_env_vars: Vec<String>,
    pub ansible_ssh_extra_args: Vec<String>,
    pub use_sftp: bool,
    pub sftp_command: Option<String>,
    pub galaxy_file: Option<String>,
    pub galaxy_command: Option<String>,
    pub galaxy_force_install: bool,
    pub galaxy_force_with_deps: bool,
    pub roles_path: Option<String>,
    pub collections_path: Option<String>,
    pub skip_version_check: bool,
    pub ansible_winrm_use_http: bool,
}

/// `provisioner "ansible-local"` (runs Ansible inside the guest).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct AnsibleLocal {
    pub playbook_file: Option<String>,
    pub playbook_files: Vec<String>,
    pub playbook_dir: Option<String>,
    pub playbook_paths: Vec<String>,
    pub command: Option<String>,
    pub extra_arguments: Vec<String>,
    pub group_vars: Option<String>,
    pub host_vars: Option<String>,
    pub role_paths: Vec<String>,
    pub galaxy_file: Option<String>,
    pub galaxy_command: Option<String>,
    pub inventory_file: Option<String>,
    pub inventory_groups: Vec<String>,
    pub staging_directory: Option<String>,
    pub clean_staging_directory: bool,
}

/// `provisioner "shell-local"` / `post-processor "shell-local"` (runs on the build host).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct ShellLocal {
    pub inline: Vec<String>,
    pub inline_shebang: Option<String>,
    pub script: Option<String>,
    pub scripts: Vec<String>,
    pub command: Option<String>,
    pub environment_vars: Vec<String>,
    pub env: IndexMap<String, String>,
    /// `None` = `["/bin/sh", "-c", "{{.Vars}} {{.Script}}"]`.
    pub execute_command: Vec<String>,
    pub valid_exit_codes: Vec<i64>,
    pub use_linux_pathing: bool,
    pub only_on: Vec<String>,
}

/// `provisioner "breakpoint"`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Breakpoint {
    pub note: Option<String>,
    pub disable: bool,
}

/// One `post-processor "<type>" {}` block.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PostProcessor {
    pub name: Option<String>,
    pub keep_input_artifact: Option<bool>,
    /// Index of the `post-processors {}` chain it belongs to (a lone `post-processor` is its own chain).
    pub chain: usize,
    pub kind: PostProcessorKind,
    pub location: Option<Location>,
}

/// The post-processor types kiln implements.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum PostProcessorKind {
    Manifest(Manifest),
    ShellLocal(ShellLocal),
}

impl PostProcessorKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            PostProcessorKind::Manifest(_) => "manifest",
            PostProcessorKind::ShellLocal(_) => "shell-local",
        }
    }
}

/// `post-processor "manifest"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Manifest {
    /// Default `packer-manifest.json`.
    pub output: String,
    pub strip_path: bool,
    pub strip_time: bool,
    pub custom_data: IndexMap<String, String>,
}
