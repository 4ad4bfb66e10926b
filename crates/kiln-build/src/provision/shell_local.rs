//! `provisioner "shell-local"`: run commands or scripts on the build host with Packer's environment.

use std::path::PathBuf;

use kiln_config::model::ShellLocal;
use tokio::process::Command;

use super::process::{describe, run_streamed};
use super::shell::flatten_env_vars;
use super::template::render;
use super::{ProvisionContext, ProvisionError};

/// Packer's default `execute_command` on Unix.
pub const DEFAULT_EXECUTE: [&str; 3] = ["/bin/sh", "-c", "{{.Vars}} {{.Script}}"];

/// The argv for one script: `execute_command` rendered with `Vars` and `Script`.
pub(crate) fn local_argv(
    s: &ShellLocal,
    ctx: &ProvisionContext<'_>,
    script: &str,
    vars: &[(String, String)],
) -> Result<Vec<String>, ProvisionError> {
    let flattened = flatten_env_vars(vars, "%s='%s' ");
    let lookup = |name: &str| match name {
        "Vars" => Some(flattened.clone()),
        "Script" | "Command" => Some(script.to_string()),
        other => ctx.lookup(other),
    };
    let tpl: Vec<String> = if s.execute_command.is_empty() {
        DEFAULT_EXECUTE.iter().map(|s| s.to_string()).collect()
    } else {
        s.execute_command.clone()
    };
    tpl.iter()
        .map(|t| render(t, &lookup, &["Vars", "Script"]).map_err(ProvisionError::from))
        .collect()
}

pub(super) async fn run(s: &ShellLocal, ctx: &ProvisionContext<'_>) -> Result<(), ProvisionError> {
    if !s.only_on.is_empty() && !s.only_on.iter().any(|o| o == std::env::consts::OS) {
        ctx.ui.say(&format!(
            "Skipping shell-local: only_on = {:?} does not include {}",
            s.only_on,
            std::env::consts::OS
        ));
        return Ok(());
    }
    let mut vars = ctx.packer_env();
    for ev in &s.environment_vars {
        let Some((k, v)) = ev.split_once('=') else {
            return Err(ProvisionError::Config(format!(
                "shell-local: environment_vars entry {ev:?} must look like NAME=value"
            )));
        };
        vars.push((k.to_string(), v.to_string()));
    }
    for (k, v) in &s.env {
        vars.push((k.clone(), v.clone()));
    }
    let tmp = tempfile::Builder::new()
        .prefix("kiln-shell-local")
        .tempdir()
        .map_err(|e| ProvisionError::local("creating a temporary directory", e))?;
    let mut scripts: Vec<(String, PathBuf)> = Vec::new();
    let shebang = s
        .inline_shebang
        .clone()
        .unwrap_or_else(|| "/bin/sh -e".to_string());
    let mut inline = s.inline.clone();
    if let Some(c) = &s.command {
        inline.push(c.clone());
    }
    if !inline.is_empty() {
        let mut body = format!("#!{shebang}\n");
        for l in &inline {
            body.push_str(l);
            body.push('\n');
        }
        let p = tmp.path().join("inline.sh");
        write_exec(&p, body.as_bytes())?;
        scripts.push((format!("inline commands ({} lines)", inline.len()), p));
    }
    for sc in s.script.iter().chain(s.scripts.iter()) {
        let p = ctx.resolve(sc);
        check_exec(&p)?;
        scripts.push((p.display().to_string(), p));
    }
    if scripts.is_empty() {
        return Err(ProvisionError::Config(
            "shell-local: set one of inline, command, script or scripts".to_string(),
        ));
    }
    let valid: Vec<i64> = if s.valid_exit_codes.is_empty() {
        vec![0]
    } else {
        s.valid_exit_codes.clone()
    };
    for (label, path) in scripts {
        ctx.ui.say(&format!("Running local shell script: {label}"));
        let argv = local_argv(s, ctx, &path.to_string_lossy(), &vars)?;
        let Some((prog, args)) = argv.split_first() else {
            return Err(ProvisionError::Config(
                "shell-local: execute_command is empty".to_string(),
            ));
        };
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.current_dir(ctx.template_dir);
        let status = run_streamed(cmd, prog, &|l| ctx.ui.message(l), ctx.cancel).await?;
        let code = status.code().map(i64::from).unwrap_or(-1);
        if !valid.contains(&code) {
            return Err(ProvisionError::BadExitCode {
                script: label,
                status: describe(&status),
                valid,
            });
        }
    }
    Ok(())
}

fn write_exec(p: &std::path::Path, data: &[u8]) -> Result<(), ProvisionError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(p)
        .map_err(|e| ProvisionError::local(format!("writing {}", p.display()), e))?;
    f.write_all(data)
        .map_err(|e| ProvisionError::local(format!("writing {}", p.display()), e))
}

fn check_exec(p: &std::path::Path) -> Result<(), ProvisionError> {
    use std::os::unix::fs::PermissionsExt;
    let m = std::fs::metadata(p)
        .map_err(|e| ProvisionError::local(format!("shell-local: script {}", p.display()), e))?;
    if m.permissions().mode() & 0o111 == 0 {
        return Err(ProvisionError::Config(format!(
            "shell-local: script {} is not executable (chmod +x it, or set execute_command = [\"/bin/sh\", \"-c\", \"{{{{.Vars}}}} /bin/sh {{{{.Script}}}}\"])",
            p.display()
        )));
    }
    Ok(())
}
