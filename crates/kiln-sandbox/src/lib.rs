//! kiln-sandbox: a Proxmox-VE-API-compatible server that runs real QEMU guests.
//!
//! Every request is routed and validated against the official PVE 9.1 API schema (generated into
//! `schema/pve-api.json` by `cargo xtask regen-schema`), answered with PVE's wire behaviour (HTTPS,
//! `/api2/json`, `{"data": …}`, reason phrases carrying the error, ticket + CSRF and API-token auth,
//! tasks with UPIDs, config locks) and backed by real state: storages under the state directory, VM
//! configs in `STATE/qemu-server/<vmid>.conf`, and QEMU processes via `kiln-qemu`.
//!
//! Start one with [`Sandbox::start`]; see `README.md` for the networking model.

pub mod access;
pub mod api;
pub mod auth;
pub mod events;
pub mod faults;
pub mod handlers;
pub mod schema;
pub mod server;
pub mod storage;
pub mod tasks;
pub mod tls;
pub mod validate;
pub mod vms;

pub use faults::{FaultRule, Faults};
pub use kiln_qemu as qemu;
pub use server::{Sandbox, SandboxConfig, SandboxError};
