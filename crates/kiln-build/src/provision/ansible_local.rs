//! `provisioner "ansible-local"`: upload the playbook (with its directory, roles, group/host vars,
//! Galaxy file and inventory) into a staging directory on the guest and run `ansible-playbook`
//! there against the guest itself (`-c local`), as Packer's ansible-local provisioner does. Ansible
//! must be installed in the guest (templates install it with a shell provisioner first).

use std::path::Path;

use kiln_config::model::AnsibleLocal;
use kiln_guest::shell_quote;

use super::{ProvisionContext, ProvisionError};

/// Packer's default staging directory (plus a per-build id).
pub const DEFAULT_STAGING: &str = "/tmp/packer-provisioner-ansible-local";

fn base_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

/// The command that runs one playbook (already uploaded to `staging`).
pub(crate) fn playbook_command(
    a: &AnsibleLocal,
    ctx: &ProvisionContext<'_>,
    staging: &str,
    playbook: &str,
    inventory: &str,
) -> String {
    let command = a.command.as_deref().unwrap_or("ansible-playbook");
    let mut extra_vars = format!(
        "packer_build_name={} packer_builder_type={}",
        ctx.build_name, ctx.builder_type
    );
    if let Some(h) = ctx.http_addr() {
        extra_vars.push_str(&format!(" packer_http_addr={h}"));
    }
    let mut cmd = format!(
        "cd {} && ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 {command} {} --extra-vars {}",
        shell_quote(staging),
        shell_quote(playbook),
        shell_quote(&extra_vars)
    );
    // Packer passes extra_arguments to the shell as written
    for x in &a.extra_arguments {
        cmd.push(' ');
        cmd.push_str(x);
    }
    cmd.push_str(&format!(" -c local -i {}", shell_quote(inventory)));
    cmd
}

/// The generated inventory: the guest itself, in each of `inventory_groups`.
pub(crate) fn inventory(groups: &[String]) -> String {
    if groups.is_empty() {
        return "127.0.0.1\n".to_string();
    }
    groups
        .iter()
        .map(|g| format!("[{g}]\n127.0.0.1\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn exec(
    ctx: &ProvisionContext<'_>,
    comm: &dyn kiln_guest::Communicator,
    tool: &str,
    cmd: &str,
) -> Result<(), ProvisionError> {
    let out = |l: &str| ctx.ui.message(l);
    let status = comm.exec(cmd, &out, &out, ctx.cancel).await?;
    if !status.success() {
        return Err(ProvisionError::ToolFailed {
            tool: tool.to_string(),
            status: status.to_string(),
        });
    }
    Ok(())
}

pub(super) async fn run(
    a: &AnsibleLocal,
    ctx: &ProvisionContext<'_>,
) -> Result<(), ProvisionError> {
    let comm = ctx.comm("ansible-local")?;
    let staging = match a.staging_directory.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s.trim_end_matches('/').to_string(),
        None => format!("{DEFAULT_STAGING}/{:016x}", rand::random::<u64>()),
    };
    ctx.ui.say(&format!(
        "Provisioning with Ansible in the guest (staging {staging})"
    ));
    exec(
        ctx,
        comm,
        "mkdir",
        &format!("mkdir -p {}", shell_quote(&staging)),
    )
    .await?;
    let upload_dir = |local: String, remote: String| async move {
        let path = ctx.resolve(&local);
        if !path.is_dir() {
            return Err(ProvisionError::Config(format!(
                "ansible-local: {} is not a directory",
                path.display()
            )));
        }
        ctx.ui
            .message(&format!("Uploading {} to {remote}", path.display()));
        comm.upload_dir(&path, &remote).await?;
        Ok(())
    };
    if let Some(d) = a.playbook_dir.as_deref().filter(|d| !d.is_empty()) {
        upload_dir(d.to_string(), staging.clone()).await?;
    }
    for p in &a.playbook_paths {
        upload_dir(p.clone(), staging.clone()).await?;
    }
    for r in &a.role_paths {
        upload_dir(r.clone(), format!("{staging}/roles/{}", base_name(r))).await?;
    }
    if let Some(g) = a.group_vars.as_deref().filter(|g| !g.is_empty()) {
        upload_dir(g.to_string(), format!("{staging}/group_vars")).await?;
    }
    if let Some(h) = a.host_vars.as_deref().filter(|h| !h.is_empty()) {
        upload_dir(h.to_string(), format!("{staging}/host_vars")).await?;
    }
    let staging_ref = staging.as_str();
    let upload_file = |local: String| async move {
        let staging = staging_ref;
        let path = ctx.resolve(&local);
        let remote = format!("{staging}/{}", base_name(&local));
        ctx.ui
            .message(&format!("Uploading {} to {remote}", path.display()));
        comm.upload_file(&path, &remote, None).await?;
        Ok::<String, ProvisionError>(base_name(&local))
    };
    if let Some(g) = a.galaxy_file.as_deref().filter(|g| !g.is_empty()) {
        let name = upload_file(g.to_string()).await?;
        let galaxy = a.galaxy_command.as_deref().unwrap_or("ansible-galaxy");
        let cmd = format!(
            "cd {} && {galaxy} install -r {} -p {}",
            shell_quote(&staging),
            shell_quote(&name),
            shell_quote(&format!("{staging}/roles"))
        );
        exec(ctx, comm, galaxy, &cmd).await?;
    }
    let inventory_name = match a.inventory_file.as_deref().filter(|i| !i.is_empty()) {
        Some(i) => upload_file(i.to_string()).await?,
        None => {
            let name = "packer-provisioner-ansible-local-inventory".to_string();
            comm.upload_bytes(
                inventory(&a.inventory_groups).as_bytes(),
                &format!("{staging}/{name}"),
                Some(0o644),
            )
            .await?;
            name
        }
    };
    let playbooks: Vec<&String> = a.playbook_file.iter().chain(&a.playbook_files).collect();
    let mut result = Ok(());
    for p in playbooks {
        // a playbook inside playbook_dir is already there, at its relative path
        let remote = match a.playbook_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(d) if Path::new(p).starts_with(d) => Path::new(p)
                .strip_prefix(d)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_else(|_| base_name(p)),
            _ => match upload_file(p.clone()).await {
                Ok(n) => n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            },
        };
        let cmd = playbook_command(a, ctx, &staging, &remote, &inventory_name);
        ctx.ui.message(&format!("Executing Ansible: {cmd}"));
        if let Err(e) = exec(ctx, comm, "ansible-playbook", &cmd).await {
            result = Err(e);
            break;
        }
    }
    if a.clean_staging_directory {
        let rm = format!("rm -rf {}", shell_quote(&staging));
        if let Err(e) = exec(ctx, comm, "rm", &rm).await {
            ctx.ui
                .error(&format!("Warning: could not remove {staging}: {e}"));
        }
    }
    result
}
