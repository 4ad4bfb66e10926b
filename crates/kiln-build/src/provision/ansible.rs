//! `provisioner "ansible"`: run the build host's `ansible-playbook` straight at the VM over SSH with a
//! generated inventory. Packer's SSH proxy adapter is not used (`use_proxy` is accepted): Ansible
//! connects to the guest's real address.
//!
//! Credentials never reach the command line: a key goes into a 0600 file whose *path* is passed; if
//! the build only has a password (or an encrypted key, or an agent), kiln installs a one-time
//! ed25519 key for the SSH user over its own connection and removes it afterwards; only when that is
//! impossible a password is written to a 0600 vars file passed as `-e @file` (needs `sshpass`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_config::model::Ansible;
use kiln_guest::{shell_quote, Communicator, SshAuth, TempKeyPair};
use tokio::process::Command;

use super::process::{describe, find_executable, run_streamed};
use super::template::render;
use super::{ProvisionContext, ProvisionError};

/// Packer's default inventory line.
pub const DEFAULT_INVENTORY_TEMPLATE: &str =
    "{{ .HostAlias }} ansible_host={{ .Host }} ansible_user={{ .User }} ansible_port={{ .Port }}\n";

/// Default `--ssh-extra-args` (Packer uses `-o IdentitiesOnly=yes`; kiln also keeps build VMs out of
/// `~/.ssh/known_hosts`, since their host keys change with every build).
pub const DEFAULT_SSH_EXTRA_ARGS: &str =
    "-o IdentitiesOnly=yes -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no";

/// The inventory file Packer generates: the host line, then each group with the host, then the
/// empty groups.
pub fn build_inventory(
    template: Option<&str>,
    host_alias: &str,
    host: &str,
    port: u16,
    user: &str,
    groups: &[String],
    empty_groups: &[String],
) -> Result<String, ProvisionError> {
    let lookup = |n: &str| match n {
        "HostAlias" => Some(host_alias.to_string()),
        "Host" => Some(host.to_string()),
        "Port" => Some(port.to_string()),
        "User" => Some(user.to_string()),
        _ => None,
    };
    let mut line = render(
        template.unwrap_or(DEFAULT_INVENTORY_TEMPLATE),
        &lookup,
        &["HostAlias", "Host", "Port", "User"],
    )?;
    if !line.ends_with('\n') {
        line.push('\n');
    }
    let mut out = line.clone();
    for g in groups {
        out.push_str(&format!("[{g}]\n{line}"));
    }
    for g in empty_groups {
        out.push_str(&format!("[{g}]\n"));
    }
    Ok(out)
}

/// Everything needed to start `ansible-playbook` (argv without secrets, environment, notes for the UI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsiblePlan {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the inherited environment, in order (later wins).
    pub env: Vec<(String, String)>,
    /// Things the user should know (ignored keys, proxy not used…).
    pub notes: Vec<String>,
}

/// Render a user string with build data; leave it verbatim if it is not a kiln template
/// (Jinja in `extra_arguments` is common).
fn render_lenient(s: &str, ctx: &ProvisionContext<'_>) -> String {
    render(s, &|n| ctx.lookup(n), &[]).unwrap_or_else(|_| s.to_string())
}

fn split_env(kv: &str) -> Option<(String, String)> {
    let (k, v) = kv.split_once('=')?;
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| (k.to_string(), v.to_string()))
}

/// Build the `ansible-playbook` invocation.
/// `key_file`: private key for `ansible_ssh_private_key_file`; `vars_file`: a 0600 file with
/// secret variables (passed as `-e @file`).
pub fn ansible_command_line(
    a: &Ansible,
    ctx: &ProvisionContext<'_>,
    inventory: &Path,
    key_file: Option<&Path>,
    vars_file: Option<&Path>,
) -> Result<AnsiblePlan, ProvisionError> {
    let mut notes = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    // `command` may carry VAR=value prefixes ("ANSIBLE_FORCE_COLOR=1 ansible-playbook")
    let mut words: Vec<String> = a
        .command
        .as_deref()
        .unwrap_or("ansible-playbook")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    while words.len() > 1 {
        match split_env(&words[0]) {
            Some(kv) => {
                env.push(kv);
                words.remove(0);
            }
            None => break,
        }
    }
    let Some(program) = words.first().cloned() else {
        return Err(ProvisionError::Config(
            "ansible: `command` is empty".to_string(),
        ));
    };
    let mut args: Vec<String> = words[1..].to_vec();

    args.push("-e".into());
    args.push(format!("packer_build_name={:?}", ctx.build_name));
    args.push("-e".into());
    args.push(format!("packer_builder_type={}", ctx.builder_type));
    if let Some(h) = ctx.http_addr() {
        args.push("-e".into());
        args.push(format!("packer_http_addr={h}"));
    }
    args.push("--ssh-extra-args".into());
    let mut ssh_extra = if a.ansible_ssh_extra_args.is_empty() {
        DEFAULT_SSH_EXTRA_ARGS.to_string()
    } else {
        a.ansible_ssh_extra_args.join(" ")
    };
    if let Some(b) = ctx.ssh.and_then(|s| s.bastion.as_ref()) {
        if !ssh_extra.contains("ProxyJump") && !ssh_extra.contains("ProxyCommand") {
            let host = if b.host.contains(':') {
                format!("[{}]", b.host)
            } else {
                b.host.clone()
            };
            let key = b.auth.iter().find_map(|a| match a {
                kiln_guest::SshAuth::PrivateKeyFile { path, .. } => Some(path.clone()),
                _ => None,
            });
            if let Some(k) = key {
                // the jump hop gets ssh_bastion_private_key_file too (a ProxyJump hop would only
                // try the agent and the default keys)
                ssh_extra.push_str(&format!(
                    " -o ProxyCommand=\"ssh -W %h:%p -i '{}' -p {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {}@{}\"",
                    k.display(),
                    b.port,
                    b.username,
                    b.host
                ));
            } else {
                ssh_extra.push_str(&format!(" -o ProxyJump={}@{host}:{}", b.username, b.port));
                notes.push(format!(
                    "Ansible reaches the VM through the bastion with `-o ProxyJump={}@{host}:{}`: ssh must be able to log in to the bastion with your agent or default keys",
                    b.username, b.port
                ));
            }
        }
    }
    args.push(ssh_extra);
    if let Some(k) = key_file {
        args.push("-e".into());
        args.push(format!("ansible_ssh_private_key_file={}", k.display()));
    }
    if let Some(v) = vars_file {
        args.push("-e".into());
        args.push(format!("@{}", v.display()));
    }
    args.extend(a.extra_arguments.iter().map(|s| render_lenient(s, ctx)));
    args.push("-i".into());
    args.push(inventory.display().to_string());
    let playbook = ctx.resolve(&a.playbook_file);
    args.push(playbook.display().to_string());

    env.push(("ANSIBLE_HOST_KEY_CHECKING".into(), "False".into()));
    env.push(("ANSIBLE_PIPELINING".into(), "True".into()));
    env.push(("ANSIBLE_NOCOLOR".into(), "True".into()));
    env.push(("ANSIBLE_RETRY_FILES_ENABLED".into(), "False".into()));
    env.push(("PYTHONUNBUFFERED".into(), "1".into()));
    if let Some(r) = &a.roles_path {
        env.push((
            "ANSIBLE_ROLES_PATH".into(),
            ctx.resolve(r).display().to_string(),
        ));
    }
    if let Some(c) = &a.collections_path {
        env.push((
            "ANSIBLE_COLLECTIONS_PATH".into(),
            ctx.resolve(c).display().to_string(),
        ));
    }
    if a.use_sftp {
        env.push(("ANSIBLE_SSH_TRANSFER_METHOD".into(), "sftp".into()));
    }
    for kv in &a.ansible_env_vars {
        let kv = render_lenient(kv, ctx);
        match split_env(&kv) {
            Some(p) => env.push(p),
            None => {
                return Err(ProvisionError::Config(format!(
                    "ansible: ansible_env_vars entry {kv:?} must look like NAME=value"
                )))
            }
        }
    }

    if a.use_proxy != Some(false) {
        notes.push(
            "kiln runs ansible-playbook directly against the VM over SSH (Packer's SSH proxy is not used; set use_proxy = false to silence this note)"
                .to_string(),
        );
    }
    for (set, key) in [
        (a.local_port.is_some(), "local_port"),
        (a.ssh_host_key_file.is_some(), "ssh_host_key_file"),
        (
            a.ssh_authorized_key_file.is_some(),
            "ssh_authorized_key_file",
        ),
        (a.ansible_proxy_key_type.is_some(), "ansible_proxy_key_type"),
        (a.sftp_command.is_some(), "sftp_command"),
        (a.ansible_winrm_use_http, "ansible_winrm_use_http"),
    ] {
        if set {
            notes.push(format!(
                "{key} only configures Packer's SSH proxy and is ignored"
            ));
        }
    }
    Ok(AnsiblePlan {
        program,
        args,
        env,
        notes,
    })
}

/// The SSH user Ansible logs in as. With Packer's proxy (the default) the playbook effectively ran as
/// `ssh_username` whatever `user` said; with `use_proxy = false`, `user` is used.
fn ansible_user(a: &Ansible, ssh_user: &str) -> (String, Option<String>) {
    match (&a.user, a.use_proxy) {
        (Some(u), Some(false)) => (u.clone(), None),
        (Some(u), _) if u != ssh_user => (
            ssh_user.to_string(),
            Some(format!(
                "user = {u:?} is ignored: with Packer's proxy the playbook ran as the SSH user {ssh_user:?}, and so does kiln (set use_proxy = false to connect as {u:?})"
            )),
        ),
        _ => (ssh_user.to_string(), None),
    }
}

/// A key installed in the guest's `authorized_keys` for the duration of the playbook.
struct InstalledKey<'a> {
    comm: &'a dyn Communicator,
    marker: String,
}

impl InstalledKey<'_> {
    async fn remove(self, ctx: &ProvisionContext<'_>) {
        let cmd = format!("sed -i '/ {}$/d' ~/.ssh/authorized_keys", self.marker);
        match self.comm.exec_capture(&cmd, &kiln_guest::CancellationToken::new()).await {
            Ok(o) if o.status.success() => {}
            Ok(o) => ctx.ui.error(&format!(
                "Warning: could not remove kiln's temporary Ansible key from ~/.ssh/authorized_keys: {} {}",
                o.status,
                o.stderr.trim()
            )),
            Err(e) => ctx.ui.error(&format!(
                "Warning: could not remove kiln's temporary Ansible key from ~/.ssh/authorized_keys: {e}"
            )),
        }
    }
}

pub(super) async fn run(a: &Ansible, ctx: &ProvisionContext<'_>) -> Result<(), ProvisionError> {
    let program_probe = {
        let plan0 = a.command.as_deref().unwrap_or("ansible-playbook");
        plan0
            .split_whitespace()
            .find(|w| split_env(w).is_none())
            .unwrap_or("ansible-playbook")
            .to_string()
    };
    if find_executable(&program_probe).is_none() {
        return Err(ProvisionError::ToolMissing(program_probe));
    }
    let playbook = ctx.resolve(&a.playbook_file);
    if !playbook.is_file() {
        return Err(ProvisionError::Config(format!(
            "ansible: playbook_file {} does not exist (relative paths are resolved against {})",
            playbook.display(),
            ctx.template_dir.display()
        )));
    }
    if !a.skip_version_check {
        let mut c = Command::new(&program_probe);
        c.arg("--version");
        let first = std::sync::Mutex::new(None::<String>);
        let st = run_streamed(
            c,
            &program_probe,
            &|l| {
                if let Ok(mut f) = first.lock() {
                    f.get_or_insert_with(|| l.to_string());
                }
            },
            ctx.cancel,
        )
        .await?;
        if !st.success() {
            return Err(ProvisionError::ToolFailed {
                tool: format!("{program_probe} --version"),
                status: describe(&st),
            });
        }
        if let Some(v) = first.into_inner().ok().flatten() {
            ctx.ui.message(&format!("Using {v}"));
        }
    }

    // private working directory (0700) in the system temp dir: key, secret vars, inventory
    // (the inventory goes to inventory_directory when that is set)
    let work = tempfile::Builder::new()
        .prefix("kiln-ansible")
        .tempdir()
        .map_err(|e| ProvisionError::local("creating a temporary directory for Ansible", e))?;

    let mut key_file: Option<PathBuf> = None;
    let mut vars_file: Option<PathBuf> = None;
    let mut installed: Option<InstalledKey<'_>> = None;
    let mut inventory_user = None;
    let mut notes_extra = Vec::new();

    if let Some(ssh) = ctx.ssh {
        let (user, note) = ansible_user(a, &ssh.username);
        notes_extra.extend(note);
        // 1. a key kiln already has
        for auth in &ssh.auth {
            match auth {
                SshAuth::TempKey(k) => {
                    let p = work.path().join("id_ed25519");
                    k.write_private_key(&p)
                        .map_err(|e| ProvisionError::Config(e.to_string()))?;
                    key_file = Some(p);
                    break;
                }
                SshAuth::PrivateKeyFile {
                    path,
                    passphrase: None,
                } => {
                    key_file = Some(path.clone());
                    break;
                }
                _ => {}
            }
        }
        // 2. install a one-time key for the SSH user
        if key_file.is_none() && user == ssh.username {
            if let Some(comm) = ctx.comm {
                let marker = format!("kiln-ansible-{:08x}", rand::random::<u32>());
                let k = Arc::new(
                    TempKeyPair::generate_ed25519(&marker)
                        .map_err(|e| ProvisionError::Config(e.to_string()))?,
                );
                let cmd = format!(
                    "umask 077 && mkdir -p ~/.ssh && printf '%s\\n' {} >> ~/.ssh/authorized_keys",
                    shell_quote(k.public_key_openssh())
                );
                let o = comm.exec_capture(&cmd, ctx.cancel).await?;
                if !o.status.success() {
                    return Err(ProvisionError::Config(format!(
                        "ansible: could not install a temporary SSH key for {user:?} in the guest: {} {}",
                        o.status,
                        o.stderr.trim()
                    )));
                }
                let p = work.path().join("id_ed25519");
                k.write_private_key(&p)
                    .map_err(|e| ProvisionError::Config(e.to_string()))?;
                key_file = Some(p);
                installed = Some(InstalledKey { comm, marker });
                ctx.ui.message(&format!(
                    "Installed a temporary SSH key for {user:?} for Ansible (removed afterwards)"
                ));
            }
        }
        // 3. password through a 0600 vars file
        if key_file.is_none() {
            if let Some(SshAuth::Password(pw)) =
                ssh.auth.iter().find(|a| matches!(a, SshAuth::Password(_)))
            {
                let p = work.path().join("secrets.json");
                let body = serde_json::json!({ "ansible_password": pw.expose() }).to_string();
                kiln_guest::write_secret_file(&p, body.as_bytes())
                    .map_err(|e| ProvisionError::local("writing the Ansible vars file", e))?;
                vars_file = Some(p);
                notes_extra.push("Ansible logs in with the SSH password (this needs `sshpass` on the build host)".to_string());
            }
        }
        inventory_user = Some((user, ssh.host.clone(), ssh.port));
    }

    let mut remove_inventory: Option<PathBuf> = None;
    let result = async {
        let inventory = match &a.inventory_file {
            Some(f) => ctx.resolve(f),
            None => {
                let Some((user, host, port)) = &inventory_user else {
                    return Err(ProvisionError::Config(
                        "ansible: no SSH connection to build an inventory from (set inventory_file)".to_string(),
                    ));
                };
                let inv = build_inventory(
                    a.inventory_file_template.as_deref(),
                    a.host_alias.as_deref().unwrap_or("default"),
                    host,
                    *port,
                    user,
                    &a.groups,
                    &a.empty_groups,
                )?;
                let dir = a.inventory_directory.as_deref().map(|d| ctx.resolve(d));
                let p = match (&dir, a.keep_inventory_file) {
                    (Some(d), _) => d.join(format!("kiln-inventory-{}-{:04}.ini", ctx.build_name, super::rand_suffix())),
                    (None, true) => std::env::temp_dir().join(format!("kiln-inventory-{}.ini", ctx.build_name)),
                    (None, false) => work.path().join("inventory.ini"),
                };
                std::fs::write(&p, inv).map_err(|e| ProvisionError::local(format!("writing {}", p.display()), e))?;
                if a.keep_inventory_file {
                    ctx.ui.message(&format!("Inventory kept at {}", p.display()));
                } else if dir.is_some() {
                    remove_inventory = Some(p.clone());
                }
                p
            }
        };
        if let Some(g) = &a.galaxy_file {
            run_galaxy(a, ctx, &ctx.resolve(g)).await?;
        }
        let plan = ansible_command_line(a, ctx, &inventory, key_file.as_deref(), vars_file.as_deref())?;
        for n in plan.notes.iter().chain(notes_extra.iter()) {
            ctx.ui.message(&format!("Note: {n}"));
        }
        ctx.ui.say(&format!("Executing Ansible: {} {}", plan.program, plan.args.join(" ")));
        let mut cmd = Command::new(&plan.program);
        cmd.args(&plan.args)
            .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(ctx.template_dir);
        let st = run_streamed(cmd, &plan.program, &|l| ctx.ui.message(l), ctx.cancel).await?;
        if !st.success() {
            return Err(ProvisionError::ToolFailed {
                tool: "ansible-playbook".to_string(),
                status: describe(&st),
            });
        }
        Ok(())
    }
    .await;
    if let Some(k) = installed {
        k.remove(ctx).await;
    }
    if let Some(p) = remove_inventory {
        let _ = std::fs::remove_file(p);
    }
    drop(work);
    result
}

/// The `ansible-galaxy` invocations for `galaxy_file` (roles and/or collections).
pub(crate) fn galaxy_commands(
    a: &Ansible,
    ctx: &ProvisionContext<'_>,
    file: &Path,
    content: &str,
) -> Vec<Vec<String>> {
    let galaxy = a
        .galaxy_command
        .clone()
        .unwrap_or_else(|| "ansible-galaxy".to_string());
    let has_roles = content
        .lines()
        .any(|l| l.trim_start().starts_with("roles:"));
    let has_collections = content
        .lines()
        .any(|l| l.trim_start().starts_with("collections:"));
    let mut out = Vec::new();
    if has_roles || !has_collections {
        let mut c = vec![
            galaxy.clone(),
            "install".into(),
            "-r".into(),
            file.display().to_string(),
        ];
        if a.galaxy_force_install {
            c.push("-f".into());
        }
        if a.galaxy_force_with_deps {
            c.push("--force-with-deps".into());
        }
        if let Some(r) = &a.roles_path {
            c.push("-p".into());
            c.push(ctx.resolve(r).display().to_string());
        }
        out.push(c);
    }
    if has_collections {
        let mut c = vec![
            galaxy,
            "collection".into(),
            "install".into(),
            "-r".into(),
            file.display().to_string(),
        ];
        if a.galaxy_force_install {
            c.push("-f".into());
        }
        if a.galaxy_force_with_deps {
            c.push("--force-with-deps".into());
        }
        if let Some(p) = &a.collections_path {
            c.push("-p".into());
            c.push(ctx.resolve(p).display().to_string());
        }
        out.push(c);
    }
    out
}

async fn run_galaxy(
    a: &Ansible,
    ctx: &ProvisionContext<'_>,
    file: &Path,
) -> Result<(), ProvisionError> {
    let content = std::fs::read_to_string(file).map_err(|e| {
        ProvisionError::local(format!("ansible: galaxy_file {}", file.display()), e)
    })?;
    for argv in galaxy_commands(a, ctx, file, &content) {
        ctx.ui
            .say(&format!("Executing Ansible Galaxy: {}", argv.join(" ")));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(ctx.template_dir);
        let st = run_streamed(cmd, &argv[0], &|l| ctx.ui.message(l), ctx.cancel).await?;
        if !st.success() {
            return Err(ProvisionError::ToolFailed {
                tool: argv[..2].join(" "),
                status: describe(&st),
            });
        }
    }
    Ok(())
}
