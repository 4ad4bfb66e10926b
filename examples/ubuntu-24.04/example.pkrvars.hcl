# Copy to my.pkrvars.hcl and edit. Secrets (PROXMOX_TOKEN / PROXMOX_PASSWORD) go in the environment.
proxmox_url          = "https://pve.example.lan:8006/api2/json"
proxmox_username     = "kiln@pve!build"
proxmox_node         = "pve"
vm_id                = 9000
ssh_public_key       = "ssh-ed25519 AAAA… you@host"
ssh_private_key_file = "~/.ssh/id_ed25519"
# mkpasswd -m sha-512
password_hash        = "$6$…"
