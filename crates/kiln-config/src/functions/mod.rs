//! The HCL2 function library (Packer / Terraform / go-cty stdlib semantics).
//!
//! Public surface used by the evaluator:
//! - [`FuncContext`]: what a call may see (cwd for relative paths, whether `env()` is allowed, the build's "now").
//! - [`exists`]: is `name` a function kiln implements (or knows and rejects with [`FuncError::NotSupported`])?
//! - [`call`]: call a function with already-evaluated arguments.
//!
//! `can`, `try` and `templatefile` are special forms handled by the evaluator, not here.

use std::path::PathBuf;

/// What a function call may observe.
#[derive(Debug, Clone)]
pub struct FuncContext {
    /// Directory relative paths (`file("x")`, `abspath("x")`) resolve against: Packer uses the process cwd.
    pub cwd: PathBuf,
    /// `env()` is only allowed in variable defaults (as in Packer).
    pub allow_env: bool,
    /// The build's "now" (`timestamp()` returns it, RFC 3339 UTC).
    pub now: time::OffsetDateTime,
}

/// A function call failed.
#[derive(Debug, thiserror::Error)]
pub enum FuncError {
    #[error("call to unknown function \"{name}\"")]
    Unknown { name: String },
    #[error("function \"{name}\" expects {expected} argument(s), got {got}")]
    Arity { name: String, expected: String, got: usize },
    #[error("invalid argument {arg} to \"{name}\": expected {expected}, got {got}")]
    Type { name: String, arg: usize, expected: String, got: String },
    #[error("function \"{name}\" failed: {msg}")]
    Failed { name: String, msg: String },
    #[error("function \"{name}\" is not supported by kiln: {hint}")]
    NotSupported { name: String, hint: String },
}

/// Is `name` a known function?
pub fn exists(name: &str) -> bool {
    let _ = name;
    false
}

/// Call function `name` with evaluated `args`.
pub fn call(name: &str, args: Vec<hcl::Value>, ctx: &FuncContext) -> Result<hcl::Value, FuncError> {
    let _ = (args, ctx);
    Err(FuncError::Unknown { name: name.to_string() })
}
