//! kiln-pve
