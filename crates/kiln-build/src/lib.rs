//! kiln-build
