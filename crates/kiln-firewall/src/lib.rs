//! kiln-firewall
