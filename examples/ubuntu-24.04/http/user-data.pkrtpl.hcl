#cloud-config
autoinstall:
  version: 1
  locale: en_US.UTF-8
  keyboard:
    layout: us
  identity:
    hostname: ${hostname}
    username: ${username}
    password: '${password_hash}'
  ssh:
    install-server: true
    allow-pw: false
    authorized-keys:
      - ${ssh_public_key}
  storage:
    layout:
      name: direct
  packages:
    - qemu-guest-agent
    - sudo
    - python3
  late-commands:
    - echo '${username} ALL=(ALL) NOPASSWD:ALL' > /target/etc/sudoers.d/${username}
    - chmod 440 /target/etc/sudoers.d/${username}
    - curtin in-target --target=/target -- systemctl enable qemu-guest-agent
  user-data:
    disable_root: true
    timezone: UTC
