#cloud-config
autoinstall:
  version: 1
  locale: en_US.UTF-8
  keyboard:
    layout: us
  identity:
    hostname: ${hostname}
    username: ubuntu
    password: '${password_hash}'
  ssh:
    install-server: true
    allow-pw: false
    authorized-keys:
      - ${ssh_public_key}
  storage:
    layout:
      name: direct
  late-commands:
    - echo 'late-commands ran' > /target/root/late-commands.txt
  user-data:
    users:
      - name: packer
        passwd: '${password_hash}'
        lock_passwd: false
        shell: /bin/bash
        sudo: ALL=(ALL) NOPASSWD:ALL
        ssh_authorized_keys:
          - ${ssh_public_key}
