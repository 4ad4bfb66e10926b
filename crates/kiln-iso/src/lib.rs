//! kiln-iso
