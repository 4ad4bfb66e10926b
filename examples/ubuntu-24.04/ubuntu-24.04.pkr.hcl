# kiln example: Ubuntu 24.04 LTS server template for a real Proxmox VE node.
#
#   cp example.pkrvars.hcl my.pkrvars.hcl   # edit it
#   export PROXMOX_TOKEN=…                  # or PROXMOX_PASSWORD; never put secrets in files
#   kiln build -var-file=my.pkrvars.hcl examples/ubuntu-24.04
#
# Also valid for Packer ≥ 1.9 with the proxmox plugin ≥ 1.2.0 (`packer build`), except the kiln-only
# `proxmox_fingerprint` (leave it unset for Packer).

packer {
  required_plugins {
    proxmox = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/proxmox"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}

variable "proxmox_url" {
  type        = string
  description = "https://<node>:8006/api2/json"
}

variable "proxmox_username" {
  type        = string
  description = "user@realm, or user@realm!tokenid with PROXMOX_TOKEN"
  default     = "root@pam"
}

variable "proxmox_node" {
  type    = string
  default = "pve"
}

variable "vm_id" {
  type    = number
  default = 9000
}

variable "template_name" {
  type    = string
  default = "ubuntu-24.04-template"
}

variable "iso_url" {
  type    = string
  default = "https://releases.ubuntu.com/24.04/ubuntu-24.04.3-live-server-amd64.iso"
}

variable "iso_checksum" {
  type    = string
  default = "file:https://releases.ubuntu.com/24.04/SHA256SUMS"
}

variable "iso_storage_pool" {
  type    = string
  default = "local"
}

variable "storage_pool" {
  type    = string
  default = "local-lvm"
}

variable "bridge" {
  type    = string
  default = "vmbr0"
}

variable "ssh_username" {
  type    = string
  default = "packer"
}

variable "ssh_public_key" {
  type        = string
  description = "Public key authorised for the build user (and kept in the template)"
}

variable "ssh_private_key_file" {
  type = string
}

variable "password_hash" {
  type        = string
  description = "crypt(3) SHA-512 hash of the build user's password (mkpasswd -m sha-512), for console login"
  sensitive   = true
}

locals {
  build_date = formatdate("YYYY-MM-DD", timestamp())
}

source "proxmox-iso" "ubuntu" {
  proxmox_url = var.proxmox_url
  username    = var.proxmox_username
  # token / password / TLS pin come from PROXMOX_TOKEN, PROXMOX_PASSWORD, PROXMOX_FINGERPRINT
  node = var.proxmox_node

  vm_id                = var.vm_id
  vm_name              = "ubuntu-2404-build"
  template_name        = var.template_name
  template_description = "Ubuntu 24.04 LTS, built ${local.build_date} by kiln"
  tags                 = "ubuntu;ubuntu-24.04;template"

  bios    = "ovmf"
  machine = "q35"
  efi_config {
    efi_storage_pool  = var.storage_pool
    efi_type          = "4m"
    pre_enrolled_keys = true
  }

  cores           = 2
  memory          = 4096
  cpu_type        = "host"
  os              = "l26"
  scsi_controller = "virtio-scsi-single"
  qemu_agent      = true

  boot_iso {
    type             = "ide"
    iso_url          = var.iso_url
    iso_checksum     = var.iso_checksum
    iso_storage_pool = var.iso_storage_pool
    unmount          = true
  }

  disks {
    type         = "scsi"
    disk_size    = "32G"
    storage_pool = var.storage_pool
    format       = "raw"
    io_thread    = true
    discard      = true
    ssd          = true
  }

  network_adapters {
    bridge   = var.bridge
    model    = "virtio"
    firewall = false
  }

  cloud_init              = true
  cloud_init_storage_pool = var.storage_pool

  http_content = {
    "/user-data" = templatefile("${path.root}/http/user-data.pkrtpl.hcl", {
      hostname       = "ubuntu-2404"
      username       = var.ssh_username
      password_hash  = var.password_hash
      ssh_public_key = var.ssh_public_key
    })
    "/meta-data" = ""
  }
  # one fixed port: open it once in the host firewall (`kiln port open 8888`)
  http_port_min = 8888
  http_port_max = 8888

  boot_wait = "10s"
  boot_command = [
    "<esc><wait>e<wait>",
    "<down><down><down><end>",
    " autoinstall ds=nocloud-net\\;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/",
    "<wait><f10>",
  ]

  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "30m"
}

build {
  sources = ["source.proxmox-iso.ubuntu"]

  provisioner "shell" {
    inline = [
      "while [ ! -f /var/lib/cloud/instance/boot-finished ]; do echo 'Waiting for cloud-init...'; sleep 2; done",
      "cloud-init status --wait",
    ]
  }

  provisioner "ansible" {
    playbook_file    = "${path.root}/playbooks/deploy_packer.yml"
    user             = var.ssh_username
    use_proxy        = false
    ansible_env_vars = ["ANSIBLE_HOST_KEY_CHECKING=False"]
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    inline = [
      "apt-get -y autoremove --purge",
      "apt-get -y clean",
      "cloud-init clean --logs",
      "rm -f /etc/ssh/ssh_host_*",
      "truncate -s 0 /etc/machine-id",
      "rm -f /var/lib/dbus/machine-id",
      "sync",
    ]
  }

  post-processor "manifest" {
    output     = "manifest.json"
    strip_path = true
  }
}
