//! kiln-config: Packer-compatible HCL2 templates → a typed, validated [`model::BuildPlan`].
//!
//! ```no_run
//! let loaded = kiln_config::load(std::path::Path::new("templates/"), &kiln_config::LoadOptions::default())?;
//! for run in &loaded.plan.runs { println!("{}", run.full_name()); }
//! # Ok::<(), kiln_config::ConfigError>(())
//! ```

// Diagnostics carry their source file and span; they are big by design and rare.
#![allow(clippy::result_large_err)]

pub mod diag;
pub mod fmt;
pub mod functions;
pub mod inspect;
mod load;
pub mod model;
pub mod version;

pub use diag::{ConfigError, Diag, Location, Severity, Warning};
pub use load::{check_syntax, load};
pub use model::{BuildPlan, LoadOptions, Loaded, SourceRun};
