//! (a) The whole Packer-like flow with user-mode networking, the GRUB-editor boot command
//! (`e` … `<f10>`), a virtio-scsi disk on i440fx, and the ACPI power button at the end.
mod common;
use common::*;
use kiln_testguest::qemu::DiskBus;

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn full_flow_user_net_edit_style_virtio_scsi_acpi_poweroff() {
    kiln_testguest::require_e2e();
    full_flow(&FullFlow {
        name: "full-flow",
        machine: "pc",
        disk_bus: DiskBus::VirtioScsi,
        nic_model: "virtio-net-pci",
        use_netns: false,
        console_style: false,
        ds: "ds=nocloud-net\\;s={url}",
        poweroff: PowerOff::AcpiButton,
        uefi: false,
    });
}
