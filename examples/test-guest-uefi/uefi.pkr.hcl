# kiln example: a UEFI template with Secure Boot and a TPM, the shape of the modern Ubuntu templates
# of the corpus (q35 + OVMF with Microsoft's keys pre-enrolled + TPM 2.0), built from the test guest
# (target/test-guest/guest.iso, `cargo xtask test-guest`), whose ISO boots through Debian's signed
# shim and GRUB. GRUB's console is used (`c`, then linux / initrd / boot), as several corpus
# templates do. Run it like examples/test-guest:
#
#   ip netns exec NS kiln build -var ssh_public_key="$(cat key.pub)" -var ssh_private_key_file=key examples/test-guest-uefi
#
# The end-to-end test (crates/kiln/tests/e2e_build.rs, e2e_uefi_secure_boot_tpm) runs exactly this.

variable "proxmox_url" {
  type    = string
  default = "https://127.0.0.1:8006/api2/json"
}

variable "iso_url" {
  type    = string
  default = "../../target/test-guest/guest.iso"
}

variable "iso_checksum" {
  type    = string
  default = "none"
}

variable "ssh_public_key" {
  type = string
}

variable "ssh_private_key_file" {
  type = string
}

variable "vm_id" {
  type    = number
  default = 9500
}

source "proxmox-iso" "uefi" {
  proxmox_url = var.proxmox_url
  username    = "root@pam"
  node        = "pve"

  vm_id         = var.vm_id
  vm_name       = "uefi-{{ timestamp }}"
  template_name = "kiln-test-guest-uefi"

  machine         = "q35"
  bios            = "ovmf"
  memory          = 1024
  cores           = 2
  os              = "l26"
  cpu_type        = "max"
  scsi_controller = "virtio-scsi-single"
  qemu_agent      = true
  # the disk first: empty on the first boot, so OVMF falls through to the ISO; the installed
  # system afterwards (the installer writes no NVRAM boot entry)
  boot = "order=scsi0;sata0"

  efi_config {
    efi_storage_pool  = "local-lvm"
    efi_type          = "4m"
    pre_enrolled_keys = true
  }

  tpm_config {
    tpm_storage_pool = "local-lvm"
    tpm_version      = "v2.0"
  }

  boot_iso {
    type             = "sata"
    index            = "0"
    iso_url          = var.iso_url
    iso_checksum     = var.iso_checksum
    iso_storage_pool = "local"
    unmount          = true
  }

  disks {
    type         = "scsi"
    disk_size    = "8G"
    storage_pool = "local-lvm"
    format       = "raw"
  }

  network_adapters {
    bridge = "vmbr0"
    model  = "virtio"
  }

  cloud_init              = true
  cloud_init_storage_pool = "local-lvm"

  http_content = {
    "/user-data" = templatefile("${path.root}/../test-guest/http/user-data.pkrtpl.hcl", {
      hostname       = "kiln-uefi"
      ssh_public_key = var.ssh_public_key
      # "packer", hashed with `openssl passwd -6 -salt kilntestsalt packer`
      password_hash = "$6$kilntestsalt$X/WzK8sWB0DR2TE60aKAjJDzTFdfy/AqS1FVyWmUG7NYygw.U/FpvbHimW49HC7u6oWwEzF96YrAsZHcPnCM50"
    })
    "/meta-data" = "instance-id: kiln-uefi\nlocal-hostname: kiln-uefi\n"
  }
  http_port_min = 8800
  http_port_max = 8899

  # OVMF, shim and GRUB take ~15 s to the menu under TCG (GRUB then waits 30 s for a key)
  boot_wait = "25s"
  boot_command = [
    "c<wait>",
    "linux /casper/vmlinuz --- autoinstall \"ds=nocloud-net;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/\"<enter><wait>",
    "initrd /casper/initrd<enter><wait>",
    "boot<enter>",
  ]

  ssh_username         = "packer"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"
}

build {
  sources = ["source.proxmox-iso.uefi"]

  provisioner "shell" {
    inline = [
      "cloud-init status --wait",
      "echo secure-boot: $(mokutil --sb-state)",
      "echo tpm: $(ls /sys/class/tpm)",
    ]
  }

  provisioner "ansible" {
    playbook_file    = "${path.root}/../test-guest/playbooks/deploy_packer.yml"
    user             = "packer"
    use_proxy        = false
    extra_arguments  = ["--extra-vars", "kiln_marker=built-by-kiln-uefi"]
    ansible_env_vars = ["ANSIBLE_HOST_KEY_CHECKING=False"]
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    inline = [
      "cloud-init clean --logs",
      "truncate -s 0 /etc/machine-id",
    ]
  }
}
