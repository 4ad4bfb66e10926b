//! `provisioner "shell"`: upload each script (inline commands become one script) and run it with
//! `execute_command`, streaming its output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_config::model::Shell;
use kiln_guest::{shell_quote, CommError, ExitStatus};

use super::template::render;
use super::{rand_suffix, sleep_or_cancel, ProvisionContext, ProvisionError};

/// One script to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptSource {
    /// `inline` commands, already joined under the shebang.
    Inline(String),
    /// A local file (resolved against `path.root`).
    File(PathBuf),
}

/// What a shell provisioner will do, computed before touching the guest (unit-testable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellPlan {
    pub scripts: Vec<ScriptSource>,
    /// Where each script is uploaded (the same path for all, as in Packer).
    pub remote_path: String,
    /// The rendered `execute_command`.
    pub command: String,
    /// `use_env_var_file`: (remote path, file content).
    pub env_var_file: Option<(String, String)>,
}

/// Packer's `env_var_format` expansion: sorted by name, single quotes in values escaped as `'"'"'`.
pub fn flatten_env_vars(vars: &[(String, String)], format: &str) -> String {
    let mut sorted: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        // later definitions win, like Go's map assignment
        if let Some(e) = sorted.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.clone();
        } else {
            sorted.push((k.clone(), v.clone()));
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (k, v) in sorted {
        let v = v.replace('\'', r#"'"'"'"#);
        out.push_str(&sprintf2(format, &k, &v));
    }
    out
}

/// Go's `fmt.Sprintf(format, a, b)` for the two `%s` of `env_var_format`.
fn sprintf2(format: &str, a: &str, b: &str) -> String {
    let mut out = String::new();
    let mut args = [a, b].into_iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('s') => {
                    chars.next();
                    out.push_str(args.next().unwrap_or("%!s(MISSING)"));
                    continue;
                }
                Some('%') => {
                    chars.next();
                    out.push('%');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

impl ShellPlan {
    pub fn new(s: &Shell, ctx: &ProvisionContext<'_>) -> Result<ShellPlan, ProvisionError> {
        let mut scripts = Vec::new();
        if !s.inline.is_empty() {
            let mut body = format!("#!{}\n", s.inline_shebang);
            for l in &s.inline {
                body.push_str(l);
                body.push('\n');
            }
            scripts.push(ScriptSource::Inline(body));
        }
        if let Some(p) = &s.script {
            scripts.push(ScriptSource::File(ctx.resolve(p)));
        }
        for p in &s.scripts {
            scripts.push(ScriptSource::File(ctx.resolve(p)));
        }
        if scripts.is_empty() {
            return Err(ProvisionError::Config(
                "shell provisioner: set one of inline, script or scripts".to_string(),
            ));
        }
        for sc in &scripts {
            if let ScriptSource::File(p) = sc {
                if !p.is_file() {
                    return Err(ProvisionError::Config(format!(
                        "shell provisioner: script {} does not exist (relative paths are resolved against {})",
                        p.display(),
                        ctx.template_dir.display()
                    )));
                }
            }
        }
        let remote_path = match &s.remote_path {
            Some(p) => p.clone(),
            None => {
                let file = s
                    .remote_file
                    .clone()
                    .unwrap_or_else(|| format!("script_{}.sh", rand_suffix()));
                format!("{}/{}", s.remote_folder.trim_end_matches('/'), file)
            }
        };
        let mut vars = ctx.packer_env();
        for ev in &s.environment_vars {
            let Some((k, v)) = ev.split_once('=') else {
                return Err(ProvisionError::Config(format!(
                    "shell provisioner: environment_vars entry {ev:?} must look like NAME=value"
                )));
            };
            vars.push((k.to_string(), v.to_string()));
        }
        for (k, v) in &s.env {
            vars.push((k.clone(), v.clone()));
        }
        let format = s.env_var_format.clone().unwrap_or_else(|| {
            if s.use_env_var_file {
                "export %s='%s'\n".to_string()
            } else {
                "%s='%s' ".to_string()
            }
        });
        let flattened = flatten_env_vars(&vars, &format);
        let env_var_file = s.use_env_var_file.then(|| {
            (
                format!(
                    "{}/varfile_{}.sh",
                    s.remote_folder.trim_end_matches('/'),
                    rand_suffix()
                ),
                flattened.clone(),
            )
        });
        let env_path = env_var_file.as_ref().map(|(p, _)| p.clone());
        let lookup = |name: &str| match name {
            "Path" => Some(remote_path.clone()),
            "Vars" => Some(flattened.clone()),
            "EnvVarFile" => env_path.clone(),
            other => ctx.lookup(other),
        };
        let command = render(&s.execute_command, &lookup, &["Path", "Vars", "EnvVarFile"])?;
        Ok(ShellPlan {
            scripts,
            remote_path,
            command,
            env_var_file,
        })
    }
}

pub(super) async fn run(s: &Shell, ctx: &ProvisionContext<'_>) -> Result<(), ProvisionError> {
    let comm = ctx.comm("shell")?;
    let plan = ShellPlan::new(s, ctx)?;
    if let Some((path, content)) = &plan.env_var_file {
        retry_start(ctx, s.start_retry_timeout, || async {
            comm.upload_bytes(content.as_bytes(), path, Some(0o600))
                .await
        })
        .await?;
    }
    let mut disconnected = false;
    for script in &plan.scripts {
        let (label, data) = match script {
            ScriptSource::Inline(body) => (
                format!("inline commands ({} lines)", s.inline.len()),
                body.clone().into_bytes(),
            ),
            ScriptSource::File(p) => {
                let data = std::fs::read(p).map_err(|e| {
                    ProvisionError::local(format!("reading script {}", p.display()), e)
                })?;
                (p.display().to_string(), data)
            }
        };
        let data = if s.binary {
            data
        } else {
            normalize_newlines(data)
        };
        ctx.ui
            .say(&format!("Provisioning with shell script: {label}"));
        let out = |l: &str| ctx.ui.message(l);
        let status = retry_start(ctx, s.start_retry_timeout, || async {
            comm.upload_bytes(&data, &plan.remote_path, Some(0o755))
                .await?;
            comm.exec(&plan.command, &out, &out, ctx.cancel).await
        })
        .await?;
        let code = status.packer_code();
        if status == ExitStatus::Disconnected {
            if !s.expect_disconnect && !s.valid_exit_codes.contains(&code) {
                return Err(ProvisionError::UnexpectedDisconnect);
            }
            ctx.ui
                .message("Script disconnected (expected: expect_disconnect / valid_exit_codes)");
            disconnected = true;
        } else if !s.valid_exit_codes.contains(&code) {
            return Err(ProvisionError::BadExitCode {
                script: label,
                status: status.to_string(),
                valid: s.valid_exit_codes.clone(),
            });
        }
    }
    if !s.skip_clean {
        let mut rm = format!("rm -f {}", shell_quote(&plan.remote_path));
        if let Some((p, _)) = &plan.env_var_file {
            rm.push(' ');
            rm.push_str(&shell_quote(p));
        }
        if disconnected {
            ctx.ui
                .message("Reconnecting to remove the uploaded script after the disconnect...");
        }
        let r = retry_start(ctx, s.start_retry_timeout, || async {
            if disconnected {
                comm.reconnect(s.start_retry_timeout, ctx.cancel).await?;
            }
            comm.exec_capture(&rm, ctx.cancel).await
        })
        .await;
        match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => ctx.ui.error(&format!(
                "Warning: could not remove {}: {}",
                plan.remote_path, o.status
            )),
            Err(ProvisionError::Cancelled) => return Err(ProvisionError::Cancelled),
            Err(e) => ctx.ui.error(&format!(
                "Warning: could not remove {}: {e}",
                plan.remote_path
            )),
        }
    }
    if !s.pause_after.is_zero() {
        sleep_or_cancel(s.pause_after, ctx.cancel).await?;
    }
    Ok(())
}

/// Retry `f` on communicator errors until `timeout` (Packer's `start_retry_timeout`).
async fn retry_start<T, F, Fut>(
    ctx: &ProvisionContext<'_>,
    timeout: Duration,
    mut f: F,
) -> Result<T, ProvisionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CommError>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(CommError::Cancelled) => return Err(ProvisionError::Cancelled),
            Err(e) => {
                if ctx.cancel.is_cancelled() {
                    return Err(ProvisionError::Cancelled);
                }
                if start.elapsed() >= timeout {
                    return Err(e.into());
                }
                tracing::debug!(error = %e, "shell: start failed, retrying (start_retry_timeout)");
                sleep_or_cancel(Duration::from_secs(2), ctx.cancel).await?;
            }
        }
    }
}

fn normalize_newlines(data: Vec<u8>) -> Vec<u8> {
    if !data.windows(2).any(|w| w == b"\r\n") {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_sorted_quoted() {
        let v = vec![
            ("PACKER_BUILD_NAME".to_string(), "ubuntu".to_string()),
            ("B".to_string(), "it's".to_string()),
            ("A".to_string(), "1".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        assert_eq!(
            flatten_env_vars(&v, "%s='%s' "),
            r#"A='2' B='it'"'"'s' PACKER_BUILD_NAME='ubuntu' "#
        );
        assert_eq!(
            flatten_env_vars(&v[..2], "export %s='%s'\n"),
            "export B='it'\"'\"'s'\nexport PACKER_BUILD_NAME='ubuntu'\n"
        );
    }

    #[test]
    fn crlf_normalised() {
        assert_eq!(normalize_newlines(b"a\r\nb\n".to_vec()), b"a\nb\n");
        assert_eq!(normalize_newlines(b"a\rb".to_vec()), b"a\rb");
    }

    #[test]
    fn sprintf_edge_cases() {
        assert_eq!(sprintf2("%s=%s;", "A", "b"), "A=b;");
        assert_eq!(sprintf2("100%% %s", "A", "b"), "100% A");
    }
}
