#!/usr/bin/python3
"""The test guest's stand-in for subiquity's autoinstall handling. Runs inside the installer
initramfs (python3 + PyYAML copied from the payload).

  autoinstall.py check USER_DATA
      exit 0 if USER_DATA is a `#cloud-config` YAML mapping with an `autoinstall:` mapping
      (version 1); otherwise print the reason and exit 1. Nothing is written.
  autoinstall.py seed USER_DATA META_DATA TARGET
      turn the config into a NoCloud seed for cloud-init of the installed system at TARGET,
      the way subiquity hands `autoinstall.user-data` (+ identity / ssh) to the target:
        autoinstall.user-data     -> TARGET/var/lib/cloud/seed/nocloud/user-data (#cloud-config)
        autoinstall.identity      -> hostname + first user (password hash, sudo)
        autoinstall.ssh           -> authorized keys, ssh_pwauth, install-server
        autoinstall.late-commands -> TARGET/root/installer/late-commands.sh (run by the installer)
"""
import os
import sys
import uuid

import yaml


def load(path):
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        return None, 'user-data is not UTF-8 text'
    if not text.startswith('#cloud-config'):
        first = text.splitlines()[0][:60] if text else '(empty file)'
        return None, 'user-data does not start with #cloud-config (first line: %r)' % first
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return None, 'user-data is not valid YAML: %s' % str(e).replace('\n', ' ')
    if not isinstance(doc, dict):
        return None, 'user-data is not a YAML mapping'
    ai = doc.get('autoinstall')
    if ai is None:
        return None, 'user-data has no top-level autoinstall: key'
    if not isinstance(ai, dict):
        return None, 'autoinstall: is not a mapping'
    if ai.get('version', 1) != 1:
        return None, 'unsupported autoinstall version %r (only 1)' % ai.get('version')
    return ai, None


def check(path):
    ai, err = load(path)
    if err:
        print(err)
        return 1
    print('autoinstall config ok: keys %s' % ', '.join(sorted(ai)))
    return 0


def seed(ud_path, md_path, target):
    ai, err = load(ud_path)
    if err:
        print(err)
        return 1
    ud = dict(ai.get('user-data') or {})
    ident = ai.get('identity')
    ssh = ai.get('ssh') or {}
    keys = ssh.get('authorized-keys') or ssh.get('authorized_keys') or []
    if ident:
        ud.setdefault('hostname', ident.get('hostname', 'ubuntu'))
        user = {'name': ident.get('username', 'ubuntu'), 'lock_passwd': False,
                'shell': '/bin/bash', 'groups': ['adm', 'sudo'],
                'sudo': 'ALL=(ALL) NOPASSWD:ALL'}
        if ident.get('password'):
            user['passwd'] = ident['password']
        if keys:
            user['ssh_authorized_keys'] = list(keys)
        ud['users'] = [user] + list(ud.get('users') or [])
    elif keys:
        ud.setdefault('ssh_authorized_keys', list(keys))
    for k in ('allow-pw', 'allow_pw'):
        if k in ssh:
            ud.setdefault('ssh_pwauth', bool(ssh[k]))
    install_server = ssh.get('install-server', ssh.get('install_server', True))

    md = {}
    if md_path and os.path.exists(md_path):
        with open(md_path) as f:
            try:
                md = yaml.safe_load(f) or {}
            except yaml.YAMLError:
                md = {}
        if not isinstance(md, dict):
            md = {}
    md.setdefault('instance-id', 'testguest-' + uuid.uuid4().hex[:12])
    if 'hostname' in ud:
        md.setdefault('local-hostname', ud['hostname'])

    seed_dir = os.path.join(target, 'var/lib/cloud/seed/nocloud')
    os.makedirs(seed_dir, exist_ok=True)
    with open(os.path.join(seed_dir, 'user-data'), 'w') as f:
        f.write('#cloud-config\n' + yaml.safe_dump(ud, default_flow_style=False, sort_keys=False))
    with open(os.path.join(seed_dir, 'meta-data'), 'w') as f:
        f.write(yaml.safe_dump(md, default_flow_style=False))
    os.chmod(os.path.join(seed_dir, 'user-data'), 0o600)

    # like curtin: hostname into /etc/hostname and /etc/hosts (sudo must not wait on DNS)
    if 'hostname' in ud:
        with open(os.path.join(target, 'etc/hostname'), 'w') as f:
            f.write(ud['hostname'] + '\n')
        with open(os.path.join(target, 'etc/hosts'), 'w') as f:
            f.write('127.0.0.1\tlocalhost\n127.0.1.1\t%s\n\n'
                    '::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\n'
                    'ff02::2\tip6-allrouters\n' % ud['hostname'])
    if not install_server:
        # openssh-server is part of the payload; "not installed" = disabled
        open(os.path.join(target, 'etc/ssh/sshd_not_to_be_run'), 'w').close()

    inst = os.path.join(target, 'root/installer')
    os.makedirs(inst, exist_ok=True)
    late = ai.get('late-commands') or []
    if late:
        with open(os.path.join(inst, 'late-commands.sh'), 'w') as f:
            for c in late:
                if isinstance(c, list):
                    c = ' '.join(str(x) for x in c)
                f.write(str(c) + '\n')
    print('autoinstall: user-data keys [%s], meta-data %s, %d late-commands, ssh server %s'
          % (', '.join(sorted(ud)), sorted(md), len(late), 'on' if install_server else 'off'))
    return 0


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == 'check':
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) == 5 and sys.argv[1] == 'seed':
        sys.exit(seed(*sys.argv[2:5]))
    sys.exit(__doc__)
