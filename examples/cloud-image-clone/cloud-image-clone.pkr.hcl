# kiln example: customise a cloud-image template with `source "proxmox-clone"`.
#
# The template is made the way Ubuntu's cloud images are imported on Proxmox VE (as root on the
# node; `import-from` takes an absolute path only from root@pam, or a volume id such as
# `local:import/noble-server-cloudimg-amd64.qcow2` from anyone allowed on that storage):
#
#   qm create 9400 --name ubuntu-cloud --memory 1024 --net0 virtio,bridge=vmbr0 --scsihw virtio-scsi-pci
#   qm set 9400 --scsi0 local-lvm:0,import-from=/root/noble-server-cloudimg-amd64.img
#   qm set 9400 --ide2 local-lvm:cloudinit --boot order=scsi0 --serial0 socket --agent 1
#   qm template 9400
#
#   kiln build -var clone_vm=ubuntu-cloud examples/cloud-image-clone
#
# No SSH credentials are set: as the plugin's proxmox-clone does, kiln generates an ephemeral key
# pair, gives its public half to the clone through cloud-init (`sshkeys`, with `ciuser` =
# ssh_username and `ipconfig0`), logs in with it, and removes it from authorized_keys after the
# provisioners. No `cloud-init clean` either: each clone of the result gets a cloud-init drive
# with a new instance-id, so cloud-init sets it up as a new instance (user, keys, hostname, host
# keys, network), as on the cloud image itself.
#
# The end-to-end test (crates/kiln/tests/e2e_build.rs, e2e_proxmox_clone_of_a_cloud_image_template)
# imports the installed test-guest disk this way and runs this template against the sandbox.

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

variable "node" {
  type    = string
  default = "pve"
}

variable "clone_vm" {
  type        = string
  description = "Name of the cloud-image template to customise"
  default     = "ubuntu-cloud"
}

variable "vm_id" {
  type        = number
  description = "VM id of the build VM and the resulting template (0: the next free id)"
  default     = 0
}

variable "template_name" {
  type    = string
  default = "cloud-image-custom"
}

variable "ssh_username" {
  type    = string
  default = "ubuntu"
}

variable "marker" {
  type    = string
  default = "customised-by-kiln"
}

source "proxmox-clone" "cloud-image" {
  proxmox_url = var.proxmox_url
  username    = "root@pam"
  # password / token / fingerprint: PROXMOX_PASSWORD, PROXMOX_TOKEN, PROXMOX_FINGERPRINT
  node = var.node

  clone_vm      = var.clone_vm
  full_clone    = false
  vm_id         = var.vm_id
  vm_name       = "cloud-image-build"
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
  ipconfig {
    ip = "dhcp"
  }
  cloud_init              = true
  cloud_init_storage_pool = "local-lvm"

  ssh_username = var.ssh_username
  ssh_timeout  = "10m"
}

build {
  sources = ["source.proxmox-clone.cloud-image"]

  provisioner "shell" {
    inline = [
      "cloud-init status --wait",
      "echo \"first boot: cloud-init instance $(cat /var/lib/cloud/data/instance-id), $(id -un)@$(hostname)\"",
      "cat /var/lib/cloud/data/instance-id | sudo tee /etc/kiln-build-instance > /dev/null",
      "echo ${var.marker} | sudo tee /etc/kiln-cloud-image-mark",
    ]
  }

  provisioner "ansible" {
    playbook_file    = "${path.root}/playbooks/mark.yml"
    user             = var.ssh_username
    use_proxy        = false
    extra_arguments  = ["--extra-vars", "kiln_marker=${var.marker}-with-ansible"]
    ansible_env_vars = ["ANSIBLE_HOST_KEY_CHECKING=False"]
  }

  provisioner "shell" {
    inline = [
      # clones get their own machine-id (systemd makes one on boot); cloud-init needs no clean
      "sudo truncate -s 0 /etc/machine-id",
    ]
  }
}
