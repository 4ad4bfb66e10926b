//! Loading: files → parsed bodies → variables → locals → sources → builds → BuildPlan.

pub(crate) mod body;
pub(crate) mod eval;
pub(crate) mod types;

use crate::diag::ConfigError;
use crate::model::{Loaded, LoadOptions};
use std::path::Path;

/// Load a template directory (all `*.pkr.hcl` + `*.auto.pkrvars.hcl`) or a single file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let _ = (path, opts);
    Err(ConfigError::single(crate::diag::Diag::error("not implemented yet")))
}
