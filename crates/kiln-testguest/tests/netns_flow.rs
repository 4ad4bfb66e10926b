//! (b) The whole flow through a tap on a bridge inside a network namespace with dnsmasq DHCP,
//! on q35 with a SATA (AHCI) disk and CD-ROM, an e1000 NIC (Packer's default model), the GRUB
//! console boot command (`c`, linux/initrd/boot) with a quoted `ds=`, the guest IP learned from
//! QGA, and `shutdown -P now` at the end.
mod common;
use common::*;
use kiln_testguest::qemu::DiskBus;

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn full_flow_netns_tap_console_style_sata_e1000_shutdown() {
    kiln_testguest::require_e2e();
    full_flow(&FullFlow {
        name: "netns-flow",
        machine: "q35",
        disk_bus: DiskBus::Sata,
        nic_model: "e1000",
        use_netns: true,
        console_style: true,
        ds: "\"ds=nocloud-net;s={url}\"",
        poweroff: PowerOff::ShutdownCommand,
        // UEFI install does not work yet (ESP mount fails in the installer): BIOS here
        uefi: false,
    });
}
