//! `tpmstate0`: a TPM backed by a real `swtpm` per VM, run the way `qemu-server` runs it.
//!
//! PVE keeps the TPM state in a raw volume. At each start it runs `swtpm_setup --not-overwrite`
//! on it (an empty volume gets a new TPM with an endorsement key and its certificates, an existing
//! state is left alone), then `swtpm socket --terminate --daemon` on a control socket that QEMU
//! connects to (`-chardev socket` + `-tpmdev emulator` + `-device tpm-tis`). `--terminate` makes
//! swtpm exit with QEMU, so it lives exactly as long as the VM.
//!
//! The sandbox keeps its volumes as qcow2 files, which swtpm cannot use: the state is exported to a
//! raw file in the run directory when the VM starts and written back into the volume each time
//! QEMU exits (a guest reboot too), so the volume holds the state across stop/start and clones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::spec::{PropString, RunPaths, SpecError, VmSpec};
use crate::vm::VmError;

/// TPM version (`tpmstate0: …,version=v1.2|v2.0`; PVE's default is v1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmVersion {
    V1_2,
    V2_0,
}

/// The TPM state volume of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmState {
    /// The volume's file.
    pub volume: PathBuf,
    /// Its image format (qcow2 in the sandbox, raw on PVE).
    pub format: String,
    pub version: TpmVersion,
}

/// The `tpmstate0` of a spec, if any.
pub fn tpm_state(spec: &VmSpec) -> Result<Option<TpmState>, SpecError> {
    let Some(v) = spec.config.get("tpmstate0") else {
        return Ok(None);
    };
    let invalid = |msg: String| SpecError::Invalid {
        key: "tpmstate0".into(),
        msg,
    };
    let p = PropString::parse("tpmstate0", v, Some("file"))?;
    if let Some((other, _)) = p
        .parts
        .iter()
        .find(|(k, _)| !["file", "version", "format", "size"].contains(&k.as_str()))
    {
        return Err(invalid(format!("unknown option '{other}'")));
    }
    let version = match p.get("version").unwrap_or("v1.2") {
        "v1.2" => TpmVersion::V1_2,
        "v2.0" => TpmVersion::V2_0,
        other => return Err(invalid(format!("version '{other}' (v1.2 or v2.0)"))),
    };
    let file = p.get("file").ok_or_else(|| invalid("no volume".into()))?;
    let volume = crate::spec::state_volume_path(spec, "tpmstate0", file)?;
    let format = crate::spec::image_format(&volume, p.get("format"));
    Ok(Some(TpmState {
        volume,
        format,
        version,
    }))
}

/// QEMU's side: the TPM device on swtpm's control socket (as `qemu-server`: TIS interface).
pub fn qemu_args(paths: &RunPaths) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=tpmchar,path={}",
            paths.swtpm_socket.display().to_string().replace(',', ",,")
        ),
        "-tpmdev".into(),
        "emulator,id=tpmdev,chardev=tpmchar".into(),
        "-device".into(),
        "tpm-tis,tpmdev=tpmdev".into(),
    ]
}

/// Copy the state out of the volume into the raw file swtpm works on.
pub(crate) async fn import(t: &TpmState, paths: &RunPaths) -> Result<(), VmError> {
    let _ = std::fs::remove_file(&paths.tpm_state);
    convert(&t.volume, &t.format, &paths.tpm_state, "raw").await
}

/// Write the raw state back into the volume (after QEMU, and with it swtpm, exited).
pub(crate) async fn export(t: &TpmState, paths: &RunPaths) -> Result<(), VmError> {
    wait_swtpm_gone(paths).await;
    if !paths.tpm_state.exists() {
        return Ok(());
    }
    convert(&paths.tpm_state, "raw", &t.volume, &t.format).await
}

async fn convert(src: &Path, sfmt: &str, dst: &Path, dfmt: &str) -> Result<(), VmError> {
    let (s, d) = (src.display().to_string(), dst.display().to_string());
    // in place when the target exists (keeps the volume's size and file), else a new file
    let args: Vec<&str> = if dst.exists() {
        vec!["convert", "-q", "-n", "-f", sfmt, "-O", dfmt, &s, &d]
    } else {
        vec!["convert", "-q", "-f", sfmt, "-O", dfmt, &s, &d]
    };
    crate::disk::qemu_img(&args)
        .await
        .map(drop)
        .map_err(|e| VmError::Start(format!("TPM state {s} -> {d}: {e}")))
}

/// `swtpm_setup --not-overwrite`, then `swtpm socket --daemon --terminate`; returns once the
/// control socket exists.
pub(crate) async fn start_swtpm(t: &TpmState, paths: &RunPaths) -> Result<(), VmError> {
    wait_swtpm_gone(paths).await;
    let _ = std::fs::remove_file(&paths.swtpm_socket);
    let _ = std::fs::remove_file(&paths.swtpm_pid);
    let state = format!("file://{}", paths.tpm_state.display());
    let tpm2 = t.version == TpmVersion::V2_0;
    let mut setup = Command::new("swtpm_setup");
    setup.args([
        "--tpmstate",
        &state,
        "--createek",
        "--create-ek-cert",
        "--create-platform-cert",
        "--lock-nvram",
        "--config",
        "/etc/swtpm_setup.conf",
        "--runas",
        "0",
        "--not-overwrite",
    ]);
    if tpm2 {
        setup.args(["--tpm2", "--ecc"]);
    }
    run(setup, "swtpm_setup").await?;
    let log = paths.run_dir.join("swtpm.log");
    let mut swtpm = Command::new("swtpm");
    swtpm.args([
        "socket".to_string(),
        "--tpmstate".into(),
        format!("backend-uri={state},mode=0600"),
        "--ctrl".into(),
        format!(
            "type=unixio,path={},mode=0600",
            paths.swtpm_socket.display()
        ),
        "--pid".into(),
        format!("file={}", paths.swtpm_pid.display()),
        "--log".into(),
        format!("file={},level=1", log.display()),
        "--terminate".into(),
        "--daemon".into(),
    ]);
    if tpm2 {
        swtpm.arg("--tpm2");
    }
    run(swtpm, "swtpm").await?;
    for _ in 0..200 {
        if paths.swtpm_socket.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(VmError::Start(format!(
        "swtpm did not create {} within 5 s (log: {})",
        paths.swtpm_socket.display(),
        log.display()
    )))
}

async fn run(mut cmd: Command, name: &str) -> Result<(), VmError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VmError::Start(format!(
                "{name} not found: tpmstate0 needs swtpm (install the Debian packages swtpm and swtpm-tools)"
            )),
            _ => VmError::Start(format!("{name}: {e}")),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Err(VmError::Start(format!(
        "{name} failed ({}): {}",
        out.status,
        text.trim()
    )))
}

/// Wait (up to 5 s) for the swtpm of an earlier QEMU to exit (`--terminate`), then kill it.
async fn wait_swtpm_gone(paths: &RunPaths) {
    let Some(pid) = std::fs::read_to_string(&paths.swtpm_pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    for _ in 0..200 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(&paths.swtpm_pid);
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tracing::warn!(pid, "swtpm still running 5 s after QEMU exited; killing it");
    // SAFETY: kill(2) on the pid swtpm wrote for this VM; no memory is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_file(&paths.swtpm_pid);
}
