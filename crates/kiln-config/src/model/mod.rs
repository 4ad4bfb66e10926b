//! The typed build plan: what the build pipeline consumes. No HCL is left in it: every value is
//! evaluated, converted to its Rust type, defaulted and validated.
//!
//! Entry point: [`load`] (re-exported from the crate root).

pub mod checksum;
mod devices;
pub mod keys;
mod locations;
mod provisioner;
mod proxmox;
pub mod size;

pub use devices::{AsyncIo, Bus, CacheMode, CdromBus, DiskFormat, NicModel};
pub use keys::{default_vm_name, DEFAULT_BOOT_KEY_INTERVAL};
pub use locations::KeyLocations;
pub use provisioner::*;
pub use proxmox::*;

pub use crate::diag::{ConfigError, Diag, Location, Severity, Warning};
pub use crate::load::load;

use indexmap::IndexMap;
use std::path::PathBuf;

/// How to load a template: the values of variables and the build filters.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `-var name=value`, in command-line order (later wins).
    pub vars: Vec<(String, String)>,
    /// `-var-file FILE`, in command-line order (later wins).
    pub var_files: Vec<PathBuf>,
    /// Environment used for `PKR_VAR_<name>` (and for `env()` in variable defaults).
    /// `Default` takes the process environment.
    pub env: Vec<(String, String)>,
    /// `-only`: build names (`proxmox-iso.ubuntu`, `mybuild.proxmox-iso.ubuntu`, globs with `*`).
    pub only: Vec<String>,
    /// `-except`: same syntax as `only`.
    pub except: Vec<String>,
    /// "now" for `timestamp()`; `None` = the current time. Tests pin it.
    pub now: Option<time::OffsetDateTime>,
    /// Working directory (`path.cwd`, relative paths in `file()`); `None` = process cwd.
    pub cwd: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            vars: Vec::new(),
            var_files: Vec::new(),
            env: std::env::vars().collect(),
            only: Vec::new(),
            except: Vec::new(),
            now: None,
            cwd: None,
        }
    }
}

impl LoadOptions {
    /// Options with an empty environment (no `PKR_VAR_*`, `env()` sees nothing): for tests.
    pub fn isolated() -> Self {
        LoadOptions {
            env: Vec::new(),
            ..LoadOptions::default()
        }
    }
}

/// A successfully loaded template.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub plan: BuildPlan,
    /// Deprecations and other non-fatal findings (render with miette: `Diag` is a `Diagnostic`).
    pub warnings: Vec<Warning>,
}

/// Everything a `kiln build` needs, evaluated and validated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildPlan {
    /// One entry per `proxmox-iso` source referenced by a `build` block, in build order,
    /// after `-only`/`-except`.
    pub runs: Vec<SourceRun>,
    /// Sources of other types (`null`, `file`, …) that Packer would build alongside; kiln only
    /// reports them (a warning says so) and does not build them.
    pub other_runs: Vec<OtherRun>,
    /// Declared variables with their final values (for `inspect`).
    pub variables: Vec<VariableInfo>,
    /// Locals with their values (for `inspect`).
    pub locals: Vec<LocalInfo>,
    /// Every sensitive value (variables and locals marked `sensitive`, plus source passwords and
    /// tokens), for masking output. Longest first.
    pub sensitive_values: Vec<String>,
    /// The `packer {}` block.
    pub required: Required,
    /// Template directory (`path.root`).
    pub root: PathBuf,
    /// The files that were loaded, in load order.
    pub files: Vec<PathBuf>,
}

impl BuildPlan {
    /// Replace every sensitive value in `text` with `<sensitive>`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.sensitive_values {
            if !s.is_empty() {
                out = out.replace(s.as_str(), "<sensitive>");
            }
        }
        out
    }
}

/// One source to build inside one build block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceRun {
    /// `build { name = … }`, if set.
    pub build_name: Option<String>,
    /// `"proxmox-iso"` (the legacy alias `proxmox` is normalised to it).
    pub source_type: String,
    /// Source label after a build-level `name = …` override.
    pub source_name: String,
    pub config: ProxmoxIsoConfig,
    /// Evaluated for this run and already filtered by their `only`/`except`.
    pub provisioners: Vec<Provisioner>,
    /// Flattened `post-processor` and `post-processors` chains, filtered by `only`/`except`.
    pub post_processors: Vec<PostProcessor>,
    /// Where the source block was declared.
    pub location: Option<Location>,
}

impl SourceRun {
    /// `proxmox-iso.ubuntu`, as Packer names builds for `-only`/`-except`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.source_type, self.source_name)
    }
}

/// A source kiln does not build (`null`, `file`, …), kept so `inspect` can show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OtherRun {
    pub build_name: Option<String>,
    pub source_type: String,
    pub source_name: String,
    /// The evaluated settings, as JSON.
    pub settings: IndexMap<String, serde_json::Value>,
    pub provisioners: Vec<Provisioner>,
    pub post_processors: Vec<PostProcessor>,
}

impl OtherRun {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.source_type, self.source_name)
    }
}

/// Where a variable's final value came from (later entries win over earlier ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum VarSource {
    Default,
    Env,
    AutoVarFile,
    VarFile,
    Cli,
    /// No value and no default: using it is an error.
    Unset,
}

/// A declared `variable`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariableInfo {
    pub name: String,
    /// The type constraint as written (`string`, `list(string)`, …); `any` if omitted.
    pub type_expr: String,
    pub description: Option<String>,
    pub sensitive: bool,
    /// Final value (converted to the type); `None` when unset.
    pub value: Option<hcl::Value>,
    pub source: VarSource,
    pub location: Option<Location>,
}

/// A `locals {}` entry or a `local "x" {}` block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LocalInfo {
    pub name: String,
    pub sensitive: bool,
    /// `None` if it could not be evaluated at load time (refers to build-time values).
    pub value: Option<hcl::Value>,
    pub location: Option<Location>,
}

/// The `packer {}` block(s).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Required {
    pub required_version: Option<String>,
    pub plugins: Vec<RequiredPlugin>,
}

/// One `required_plugins` entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequiredPlugin {
    /// Local name (`proxmox`, or whatever the template calls it).
    pub name: String,
    /// `github.com/hashicorp/proxmox`.
    pub source: String,
    /// The constraint as written.
    pub version: String,
}
