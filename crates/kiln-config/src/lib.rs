//! kiln-config
pub mod functions;
