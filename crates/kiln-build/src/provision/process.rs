//! Local processes (ansible-playbook, shell-local) with streamed, line-buffered output and a clean
//! kill of the whole process group on cancel.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::ProvisionError;

/// Spawn `cmd` in its own process group, feed each stdout/stderr line to `line`, and wait.
/// On cancel: SIGTERM to the group, SIGKILL after 5 s, then `ProvisionError::Cancelled`.
pub(crate) async fn run_streamed(
    mut cmd: Command,
    what: &str,
    line: &(dyn Fn(&str) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<ExitStatus, ProvisionError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ProvisionError::ToolMissing(what.to_string())
        } else {
            ProvisionError::local(format!("starting {what}"), e)
        }
    })?;
    let pid = child.id();
    let mut out = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut err = child.stderr.take().map(|s| BufReader::new(s).lines());
    loop {
        if out.is_none() && err.is_none() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                kill_group(pid, &mut child).await;
                return Err(ProvisionError::Cancelled);
            }
            l = async { match out.as_mut() { Some(r) => r.next_line().await, None => std::future::pending().await } } => {
                match l {
                    Ok(Some(l)) => line(&l),
                    _ => out = None,
                }
            }
            l = async { match err.as_mut() { Some(r) => r.next_line().await, None => std::future::pending().await } } => {
                match l {
                    Ok(Some(l)) => line(&l),
                    _ => err = None,
                }
            }
        }
    }
    tokio::select! {
        _ = cancel.cancelled() => {
            kill_group(pid, &mut child).await;
            Err(ProvisionError::Cancelled)
        }
        s = child.wait() => s.map_err(|e| ProvisionError::local(format!("waiting for {what}"), e)),
    }
}

async fn kill_group(pid: Option<u32>, child: &mut tokio::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

/// `exit code 2` / `killed by signal 9`.
pub(crate) fn describe(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_string(),
    }
}

/// Is `prog` an executable on `PATH` (or a path to one)?
pub(crate) fn find_executable(prog: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = std::path::PathBuf::from(prog);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(prog))
            .find(|p| is_exec(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn streams_both_pipes_and_reports_code() {
        let lines = Mutex::new(Vec::<String>::new());
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("echo out; echo err >&2; exit 3");
        let st = run_streamed(
            c,
            "sh",
            &|l| lines.lock().expect("lock").push(l.to_string()),
            &CancellationToken::new(),
        )
        .await
        .expect("run");
        assert_eq!(st.code(), Some(3));
        let mut got = lines.into_inner().expect("lines");
        got.sort();
        assert_eq!(got, vec!["err", "out"]);
    }

    #[tokio::test]
    async fn missing_tool_is_named() {
        let c = Command::new("/nonexistent/kiln-no-such-tool");
        let e = run_streamed(c, "kiln-no-such-tool", &|_| {}, &CancellationToken::new())
            .await
            .expect_err("missing");
        assert!(matches!(e, ProvisionError::ToolMissing(_)), "{e}");
    }

    #[tokio::test]
    async fn cancel_kills_the_group() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.cancel();
        });
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg("sleep 30 & sleep 30; wait");
        let e = run_streamed(c, "sh", &|_| {}, &cancel)
            .await
            .expect_err("cancelled");
        assert!(matches!(e, ProvisionError::Cancelled));
    }

    #[test]
    fn finds_sh() {
        assert!(find_executable("sh").is_some());
        assert!(find_executable("kiln-definitely-missing").is_none());
    }
}
