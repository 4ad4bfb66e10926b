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
//! * [`tpm`] — `tpmstate0`: one real `swtpm` per VM, started and stopped with it;
//! * [`disk`] — `qemu-img` helpers (create, convert for full clones, info, PVE size strings).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_qemu::{Accel, RunningVm, VmSpec};
//! let config = [
//!     ("memory", "2048"),
//!     ("scsihw", "virtio-scsi-single"),
//!     ("scsi0", "local-lvm:vm-100-disk-0,iothread=1,size=8G"),
//!     ("ide2", "local:iso/ubuntu.iso,media=cdrom"),
//!     ("net0", "virtio=BC:24:11:5E:7A:01,bridge=vmbr0"),
//!     ("boot", "order=scsi0;ide2;net0"),
//!     ("agent", "1"),
//! ]
//! .iter()
//! .map(|(k, v)| (k.to_string(), v.to_string()))
//! .collect();
//! let vm = RunningVm::start(VmSpec {
//!     vmid: 100,
//!     name: "ubuntu".into(),
//!     config,
//!     // the sandbox's storage layer resolves volume ids
//!     volume_path: Box::new(|volid| Some(format!("/srv/kiln/{}", volid.replace(':', "/")).into())),
//!     run_dir: "/run/kiln/100".into(),
//!     accel: Accel::Tcg,
//! })
//! .await?;
//! vm.send_key("ret").await?;
//! let ifaces = vm.agent("guest-network-get-interfaces", None).await?;
//! # let _ = ifaces;
//! vm.powerdown().await?;
//! if !vm.wait_stopped(std::time::Duration::from_secs(60)).await {
//!     vm.stop().await?;
//! }
//! # Ok(()) }
//! ```
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
pub mod tpm;
pub mod vm;

pub use qga::{AgentError, QgaClient};
pub use qmp::{QmpClient, QmpError, QmpEvent};
pub use spec::{qemu_args, Accel, RunPaths, SpecError, VmSpec, VolumePathFn};
pub use vm::{RunningVm, VmError, VmEvent, VmState, VmStatus};
