//! kiln-qemu: run Proxmox VE VM configs on real QEMU, for `kiln sandbox`.
//!
//! The sandbox (crate `kiln-sandbox`) keeps the PVE-side state (config files, storages, tasks) and calls
//! this crate to turn a VM config into a running `qemu-system-x86_64`:
//!
//! * [`spec`] — [`VmSpec`] (a PVE config as stored, plus how to find volumes on disk) and the pure
//!   function [`qemu_args`] that builds the QEMU command line the way `qemu-server` does (devices,
//!   bootindex, `-boot menu=on`, …), with TCG-safe substitutes where PVE would need KVM;
//! * [`vm`] — [`RunningVm`]: start, status from QMP, `sendkey`, ACPI powerdown, kill, guest-agent calls,
//!   and the exit watcher that restarts QEMU on a guest reboot (QEMU runs with `-no-reboot`, see
//!   `test-guest.md` §4a) while the VM stays "running";
//! * [`qmp`] / [`qga`] — async clients for the QEMU monitor and the guest agent;
//! * [`keys`] — PVE `sendkey` names (QEMU HMP `sendkey` syntax) → QMP `send-key` key values;
//! * [`cloudinit`] — the NoCloud `cidata` ISO PVE generates for a `cloudinit` drive;
//! * [`net`] — the sandbox LAN: bridge + dnsmasq + tap devices inside a network namespace;
//! * [`disk`] — `qemu-img` helpers (create, convert for full clones, info, PVE size strings).
//!
//! Everything that touches the host (QEMU, `ip`, dnsmasq, `qemu-img`) is exercised by tests gated on
//! `KILN_E2E=1`; the pure parts (command lines, keys, cloud-init content) have unit tests.

pub mod cloudinit;
pub mod disk;
pub mod keys;
mod keys_table;
pub mod net;
pub mod qga;
pub mod qmp;
pub mod spec;
pub mod vm;

pub use qga::{AgentError, QgaClient};
pub use qmp::{QmpClient, QmpError, QmpEvent};
pub use spec::{qemu_args, Accel, RunPaths, SpecError, VmSpec, VolumePathFn};
pub use vm::{RunningVm, VmError, VmEvent, VmState, VmStatus};
