//! kiln-guest
