# kiln example: `source "proxmox-clone"` — customise an existing template (the one
# examples/test-guest builds, or a cloud-image template): clone it, boot it, provision it, template it.
#
#   ip netns exec NS kiln build -var clone_vm_id=9000 -var ssh_private_key_file=key examples/test-guest-clone
#
# The end-to-end test (crates/kiln/tests/e2e_build.rs) runs this after building examples/test-guest.

packer {
  required_plugins {
    proxmox = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/proxmox"
    }
  }
}

variable "proxmox_url" {
  type    = string
  default = "https://127.0.0.1:8006/api2/json"
}

variable "clone_vm_id" {
  type        = number
  description = "The template to customise"
  default     = 9000
}

variable "full_clone" {
  type    = bool
  default = false
}

variable "vm_id" {
  type    = number
  default = 9200
}

variable "template_name" {
  type    = string
  default = "kiln-test-guest-custom"
}

variable "ssh_private_key_file" {
  type = string
}

source "proxmox-clone" "custom" {
  proxmox_url = var.proxmox_url
  username    = "root@pam"
  # password / token / fingerprint: PROXMOX_PASSWORD, PROXMOX_TOKEN, PROXMOX_FINGERPRINT
  node = "pve"

  clone_vm_id   = var.clone_vm_id
  full_clone    = var.full_clone
  vm_id         = var.vm_id
  vm_name       = "kiln-clone-build"
  template_name = var.template_name

  memory          = 1024
  cores           = 2
  os              = "l26"
  cpu_type        = "max"
  scsi_controller = "virtio-scsi-pci"
  qemu_agent      = true

  network_adapters {
    bridge = "vmbr0"
    model  = "virtio"
  }
  # cloud-init on the clone: DHCP on net0, the `packer` user with the key of ssh_private_key_file
  ipconfig {
    ip = "dhcp"
  }
  cloud_init              = true
  cloud_init_storage_pool = "local-lvm"

  ssh_username         = "packer"
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "10m"
}

build {
  sources = ["source.proxmox-clone.custom"]

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    inline = [
      "cloud-init status --wait || true",
      "echo customised-by-kiln-clone > /etc/kiln-clone-mark",
      # clones of this template must run cloud-init again
      "cloud-init clean --logs",
      "truncate -s 0 /etc/machine-id",
    ]
  }
}
