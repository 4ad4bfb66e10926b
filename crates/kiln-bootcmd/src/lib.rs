//! kiln-bootcmd
