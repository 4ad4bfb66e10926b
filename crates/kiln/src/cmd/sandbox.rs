//! `kiln sandbox serve`: a Proxmox-VE-API-compatible server on real QEMU guests (crate kiln-sandbox).

use crate::exit::{CmdResult, Code};
use kiln_sandbox::{Faults, Sandbox, SandboxConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(clap::Subcommand, Debug)]
enum SandboxCommand {
    /// Serve the PVE API on HTTPS; prints one JSON line (url, fingerprint, node, credentials) when ready
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// State directory: storages, VM configs, task logs, events.jsonl, pve-ssl.pem
    #[arg(long)]
    state: PathBuf,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: SocketAddr,
    /// Node name
    #[arg(long, default_value = "pve")]
    node: String,
    /// Login user (user@realm) for ticket auth
    #[arg(long, default_value = "root@pam")]
    user: String,
    /// Password of --user (default: env KILN_SANDBOX_PASSWORD, else a random one written to STATE/credentials.json)
    #[arg(long, env = "KILN_SANDBOX_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// API token `user@realm!id=SECRET` (repeatable)
    #[arg(long = "token", env = "KILN_SANDBOX_TOKEN", hide_env_values = true)]
    tokens: Vec<String>,
    /// Restrict a user or token to these privileges on every path, as a PVE role on `/` would:
    /// `user@realm[!id]=VM.Audit,Datastore.Audit,…` (repeatable; everyone else holds all)
    #[arg(long = "privileges", value_name = "ID=PRIV,…")]
    privileges: Vec<String>,
    /// Fault-injection rules (JSON file, see kiln-sandbox's faults module)
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Fail the Nth call of a route: METHOD:PATH:N:STATUS[:MESSAGE] (PATH as in the PVE schema)
    #[arg(long = "fail")]
    fail: Vec<String>,
    /// Delay every call of a route: METHOD:PATH:MILLISECONDS
    #[arg(long = "delay")]
    delay: Vec<String>,
    /// Drop the connection on the Nth call of a route: METHOD:PATH:N
    #[arg(long = "drop")]
    drop: Vec<String>,
    /// Fail the Nth task of a type: TYPE:N:MESSAGE (e.g. qmstart:1:boom)
    #[arg(long = "fail-task")]
    fail_task: Vec<String>,
    /// Answer every guest-agent call with "QEMU guest agent is not running"
    #[arg(long)]
    no_agent: bool,
    /// Bridge + DHCP network: auto (on unless in the host's root network namespace), on, off
    #[arg(long, default_value = "auto")]
    network: String,
    /// Run inside this network namespace (created if missing, via `ip netns exec`)
    #[arg(long)]
    netns: Option<String>,
    /// Accelerator: auto, kvm, tcg
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Seconds a 401 answer is delayed (PVE: 3)
    #[arg(long, default_value_t = 3)]
    auth_delay: u64,
}

fn usage(msg: impl std::fmt::Display) -> CmdResult {
    eprintln!("error: {msg}");
    Ok(Code::Usage)
}

pub async fn run(args: Args) -> CmdResult {
    match args.command {
        SandboxCommand::Serve(a) => serve(a).await,
    }
}

/// Re-run this command inside `ip netns exec NAME` (creating the namespace if needed). Ctrl-C and
/// SIGTERM are forwarded to the server; a namespace created here is deleted afterwards.
async fn reexec_in_netns(ns: &str) -> CmdResult {
    let exists = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns))
        })
        .unwrap_or(false);
    if !exists {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status();
        if !st.map(|s| s.success()).unwrap_or(false) {
            eprintln!("error: cannot create network namespace '{ns}' (needs root and iproute2)");
            return Ok(Code::Failed);
        }
        let _ = std::process::Command::new("ip")
            .args(["-n", ns, "link", "set", "lo", "up"])
            .status();
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find own executable: {e}");
            return finish(ns, !exists, Ok(Code::Failed));
        }
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    // drop --netns NAME / --netns=NAME
    let mut i = 0;
    while i < argv.len() {
        if argv[i] == "--netns" {
            argv.drain(i..(i + 2).min(argv.len()));
        } else if argv[i].starts_with("--netns=") {
            argv.remove(i);
        } else {
            i += 1;
        }
    }
    let mut child = match tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(argv)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: ip netns exec failed: {e}");
            return finish(ns, !exists, Ok(Code::Failed));
        }
    };
    let pid = child.id();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let forwarded = tokio::select! {
        st = child.wait() => Some(("", st)),
        _ = tokio::signal::ctrl_c() => Some(("-INT", Ok(Default::default()))),
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => Some(("-TERM", Ok(Default::default()))),
        _ = async {
            match hup.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => Some(("-HUP", Ok(Default::default()))),
    };
    let status = match forwarded {
        Some(("", st)) => st,
        Some((sig, _)) => {
            // `ip netns exec` execs the server, so the child pid is the server's
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args([sig, &pid.to_string()])
                    .status();
            }
            child.wait().await
        }
        None => child.wait().await,
    };
    let code = match status {
        Ok(s) if s.success() => Code::Ok,
        Ok(s) if s.code() == Some(130) => Code::Interrupted,
        Ok(_) => Code::Failed,
        Err(e) => {
            eprintln!("error: ip netns exec failed: {e}");
            Code::Failed
        }
    };
    finish(ns, !exists, Ok(code))
}

fn finish(ns: &str, created: bool, code: CmdResult) -> CmdResult {
    if created {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", ns])
            .status();
    }
    code
}

async fn serve(a: ServeArgs) -> CmdResult {
    if let Some(ns) = &a.netns {
        return reexec_in_netns(ns).await;
    }
    let mut faults = match &a.faults {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => match Faults::from_json(&t) {
                Ok(f) => f,
                Err(e) => return usage(e),
            },
            Err(e) => return usage(format!("--faults {}: {e}", p.display())),
        },
        None => Faults::default(),
    };
    for (list, parse) in [
        (&a.fail, Faults::parse_fail as fn(&str) -> Result<_, String>),
        (&a.delay, Faults::parse_delay),
        (&a.drop, Faults::parse_drop),
        (&a.fail_task, Faults::parse_fail_task),
    ] {
        for s in list {
            match parse(s) {
                Ok(r) => faults.rules.push(r),
                Err(e) => return usage(e),
            }
        }
    }
    if a.no_agent {
        faults.agent_disabled = true;
    }
    let mut tokens = Vec::new();
    for t in &a.tokens {
        match t.rsplit_once('=') {
            Some((id, secret)) if id.contains('!') && id.contains('@') => {
                tokens.push((id.to_string(), secret.to_string()))
            }
            _ => {
                return usage(format!(
                    "--token must look like user@realm!id=SECRET (got '{}')",
                    t.split('=').next().unwrap_or("")
                ))
            }
        }
    }
    if !a.user.contains('@') {
        return usage("--user must be user@realm, e.g. root@pam");
    }
    let (password, cred_source) = match &a.password {
        Some(p) => (p.clone(), "argument or KILN_SANDBOX_PASSWORD".to_string()),
        None => {
            let p = match kiln_sandbox::auth::random_secret_hex() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: cannot make a random password: {e}\n  hint: pass --password or set KILN_SANDBOX_PASSWORD");
                    return Ok(Code::Failed);
                }
            };
            let file = a.state.join("credentials.json");
            let _ = std::fs::create_dir_all(&a.state);
            let body = serde_json::json!({"username": a.user, "password": p});
            if let Err(e) = write_private(&file, &body.to_string()) {
                eprintln!("error: cannot write {}: {e}", file.display());
                return Ok(Code::Failed);
            }
            (p, format!("file {}", file.display()))
        }
    };
    let network = match a.network.as_str() {
        "on" => true,
        "off" => false,
        "auto" => !kiln_sandbox::qemu::net::in_root_namespace().unwrap_or(true),
        other => return usage(format!("--network must be auto, on or off (got '{other}')")),
    };
    let accel = match a.accel.as_str() {
        "auto" => kiln_sandbox::qemu::Accel::Auto,
        "kvm" => kiln_sandbox::qemu::Accel::Kvm,
        "tcg" => kiln_sandbox::qemu::Accel::Tcg,
        other => return usage(format!("--accel must be auto, kvm or tcg (got '{other}')")),
    };
    let mut privileges = kiln_sandbox::access::Privileges::default();
    for entry in &a.privileges {
        match kiln_sandbox::access::Privileges::parse_entry(entry) {
            Ok((id, set)) => privileges.restrict(id, set),
            Err(e) => return usage(format!("--privileges: {e}")),
        }
    }
    let mut cfg = SandboxConfig::new(&a.state);
    cfg.privileges = privileges;
    cfg.listen = a.listen;
    cfg.node = a.node.clone();
    cfg.users = vec![(a.user.clone(), password)];
    cfg.tokens = tokens.clone();
    cfg.faults = faults;
    cfg.network = network;
    cfg.accel = accel;
    cfg.auth_failure_delay = Duration::from_secs(a.auth_delay);
    let sb = match Sandbox::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Failed);
        }
    };
    let line = serde_json::json!({
        "url": sb.url,
        "fingerprint": sb.fingerprint,
        "node": sb.node,
        "username": a.user,
        "credentials": cred_source,
        "tokens": tokens.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        "state": a.state,
        "network": network,
    });
    // the handlers first, then the ready line: a signal sent as soon as the line is read must find them
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term, mut hup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            eprintln!("error: cannot install signal handler: {e}");
            sb.shutdown().await;
            return Ok(Code::Failed);
        }
    };
    println!("{line}");
    // SIGINT, SIGTERM and SIGHUP all get the same cleanup (VMs stopped, network torn down)
    let interrupted = tokio::select! {
        _ = int.recv() => true,
        _ = hup.recv() => true,
        _ = term.recv() => false,
    };
    sb.shutdown().await;
    Ok(if interrupted {
        Code::Interrupted
    } else {
        Code::Ok
    })
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
