//! kiln-build: the build pipeline of `kiln build` — steps with their own cleanup, the cleanup
//! stack, the UI (step list, timings, masking), the HTTP seed server, the steps against the PVE
//! API and the guest, and the post-processors.

pub mod build;
pub mod cache;
pub mod cdiso;
pub mod http;
pub mod leftovers;
pub mod manifest;
pub mod params;
pub mod pipeline;
pub mod provision;
pub mod signals;
pub mod steps;
pub mod ui;

pub use build::{build_plan, preflight_plan, BuildOptions, BuildResult, Summary};
pub use pipeline::{OnError, Outcome, Step, StepContext, StepError};
pub use ui::{BuildUi, Masker, Ui, UiOptions};
