//! kiln-testguest
