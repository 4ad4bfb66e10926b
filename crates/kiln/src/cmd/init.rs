//! `kiln init DIR`: prepare everything a build needs, like `packer init` plus the downloads.
//!
//! 1. Loads the template (same options as `validate`) and reports the `packer {}` pin check: which Packer core
//!    and plugin versions kiln stands in for, and the release each pin selects.
//! 2. Fetches every ISO the sources download themselves (`iso_url(s)` + `iso_checksum`, in `boot_iso` and
//!    `additional_iso_files`, unless `iso_download_pve` hands the download to PVE) into the cache
//!    (`--cache-dir`, else `$KILN_ISO_CACHE`, else `~/.cache/kiln/iso`), verified while downloading, resumed after
//!    an interruption; progress bars show rate and ETA. `--offline` only reports what would be fetched.
//! 3. Installs Ansible Galaxy requirements (`galaxy_file`) and checks the local tools the build will call
//!    (`ansible-playbook`, an SSH agent for `ssh_agent_auth`), each missing one with a one-line fix.
//!
//! Idempotent: a second run finds everything cached and makes no network request.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_config::model::{Ansible, ProvisionerKind};
use kiln_config::version;
use kiln_iso::{Action, Fetcher, IsoSource, Phase, Planned, Progress};

use crate::cmd::validate::{print_diags, TemplateArgs};
use crate::exit::{CmdResult, Code};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub template: TemplateArgs,
    /// Report what would be fetched and installed, without network access
    #[arg(long)]
    pub offline: bool,
    /// ISO cache directory (default: $KILN_ISO_CACHE, else $XDG_CACHE_HOME/kiln/iso, else ~/.cache/kiln/iso;
    /// `kiln build` uses the default, so set KILN_ISO_CACHE to share another directory with it)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Also stage the ISOs on each source's iso_storage_pool on PVE, skipping files already there
    #[arg(long)]
    pub upload: bool,
    /// Do not draw progress bars (plain log lines instead)
    #[arg(long)]
    pub no_progress: bool,
}

/// One ISO to obtain, with the sources that use it.
struct IsoNeed {
    src: IsoSource,
    users: Vec<String>,
    /// (run index, iso_storage_pool) for `--upload`.
    targets: Vec<(usize, Option<String>)>,
}

fn collect_isos(plan: &kiln_config::BuildPlan) -> (Vec<IsoNeed>, Vec<String>) {
    let mut needs: Vec<IsoNeed> = Vec::new();
    let mut notes = Vec::new();
    for (ri, run) in plan.runs.iter().enumerate() {
        let name = run.full_name();
        let c = &run.config;
        for iso in std::iter::once(&c.boot_iso).chain(c.additional_iso_files.iter()) {
            let mut urls: Vec<String> = iso
                .iso_urls
                .iter()
                .filter(|u| !u.trim().is_empty())
                .cloned()
                .collect();
            if let Some(u) = iso.iso_url.as_ref().filter(|u| !u.trim().is_empty()) {
                urls.insert(0, u.clone());
            }
            if urls.is_empty() || iso.iso_file.as_ref().is_some_and(|f| !f.trim().is_empty()) {
                continue;
            }
            if iso.iso_download_pve {
                notes.push(format!(
                    "{name}: {} is downloaded by PVE itself (iso_download_pve = true)",
                    urls[0]
                ));
                continue;
            }
            let checksum = iso
                .iso_checksum
                .clone()
                .unwrap_or(kiln_iso::ChecksumSpec::None);
            let src = IsoSource { urls, checksum };
            let target = (ri, iso.iso_storage_pool.clone().filter(|p| !p.is_empty()));
            match needs.iter_mut().find(|n| n.src == src) {
                Some(n) => {
                    n.users.push(name.clone());
                    n.targets.push(target);
                }
                None => needs.push(IsoNeed {
                    src,
                    users: vec![name.clone()],
                    targets: vec![target],
                }),
            }
        }
    }
    (needs, notes)
}

/// Check the `packer {}` pins; returns false when one cannot be honoured.
fn report_pins(plan: &kiln_config::BuildPlan) -> bool {
    let mut ok = true;
    println!("{}", version::implemented_summary());
    if let Some(rv) = &plan.required.required_version {
        match version::check_required_version(rv) {
            Ok(pin) => {
                println!(
                    "  required_version \"{rv}\": ok (kiln reports packer.version {})",
                    version::PACKER_CORE_VERSION
                );
                for w in pin.warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => {
                println!("  error: {e}");
                ok = false;
            }
        }
    }
    for p in &plan.required.plugins {
        let v = if p.version.trim().is_empty() {
            None
        } else {
            Some(p.version.as_str())
        };
        match version::check_required_plugin(&p.name, &p.source, v) {
            Ok(pin) => {
                if let (Some(info), Some(sel)) = (&pin.plugin, &pin.selected) {
                    println!(
                        "  plugin {} \"{}\": kiln stands in for {} {sel}",
                        p.name, p.version, info.source
                    );
                }
                for w in pin.warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => {
                println!("  error: {e}");
                ok = false;
            }
        }
    }
    ok
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:30!} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

async fn fetch_isos(
    needs: &[IsoNeed],
    fetcher: &Fetcher,
    show_bars: bool,
    fetched: &mut Vec<(usize, kiln_iso::Fetched)>,
) -> bool {
    let multi = MultiProgress::with_draw_target(if show_bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut ok = true;
    for (ni, need) in needs.iter().enumerate() {
        let name = Fetcher::file_name(&need.src.urls[0]);
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(bar_style());
        bar.set_message(name.clone());
        let progress = |p: &Progress<'_>| {
            if let Some(t) = p.total {
                if bar.length() != Some(t) {
                    bar.set_length(t);
                }
            }
            let label = match p.phase {
                Phase::Verifying => format!("verify {name}"),
                Phase::Downloading => name.clone(),
            };
            if bar.message() != label {
                bar.set_message(label);
            }
            bar.set_position(p.done);
        };
        let res = fetcher.fetch(&need.src, &progress).await;
        bar.finish_and_clear();
        match res {
            Ok(got) => {
                let what = match got.action {
                    Action::Cached => "cached, verified".to_string(),
                    Action::Local => "local file, verified".to_string(),
                    Action::Downloaded {
                        bytes,
                        resumed_from: 0,
                    } => format!("downloaded {bytes} bytes, verified"),
                    Action::Downloaded {
                        bytes,
                        resumed_from,
                    } => {
                        format!("downloaded {bytes} bytes (resumed at {resumed_from}), verified")
                    }
                };
                let digest = got
                    .digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "no checksum (iso_checksum = none)".into());
                println!("  {name}: {what} -> {} [{digest}]", got.path.display());
                fetched.push((ni, got));
            }
            Err(e) => {
                println!("  {name}: error: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// `--upload`: stage each fetched ISO on the `iso_storage_pool` of every source that uses it (skipping files already
/// there with the same size), under the name `kiln build` looks for.
async fn upload_isos(
    plan: &kiln_config::BuildPlan,
    needs: &[IsoNeed],
    fetched: &[(usize, kiln_iso::Fetched)],
    show_bars: bool,
) -> bool {
    use kiln_pve::{UploadContent, UploadRequest};
    let mut ok = true;
    let mut done: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for (ni, got) in fetched {
        let name = match got.action {
            Action::Local => std::fs::canonicalize(&got.path)
                .unwrap_or_else(|_| got.path.clone())
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("image.iso")
                .to_string(),
            _ => Fetcher::file_name(&got.url),
        };
        let size = std::fs::metadata(&got.path).map(|m| m.len()).unwrap_or(0);
        for (ri, pool) in &needs[*ni].targets {
            let Some(run) = plan.runs.get(*ri) else {
                continue;
            };
            let cfg = &run.config;
            let pool = pool.clone().unwrap_or_else(|| "local".to_string());
            let key = (
                cfg.proxmox_url.clone().unwrap_or_default(),
                cfg.node.clone(),
                pool.clone(),
                name.clone(),
            );
            if !done.insert(key) {
                continue;
            }
            let volid = format!("{pool}:iso/{name}");
            let opts = match kiln_build::steps::connect_options(cfg, &|k| std::env::var(k).ok()) {
                Ok(o) => o,
                Err(e) => {
                    println!("  upload {volid}: {e}");
                    ok = false;
                    continue;
                }
            };
            let client = match kiln_pve::Client::connect(opts).await {
                Ok(c) => c,
                Err(e) => {
                    println!("  upload {volid}: cannot connect to PVE: {e}");
                    ok = false;
                    continue;
                }
            };
            match client
                .find_volume(&cfg.node, &pool, UploadContent::Iso, &name)
                .await
            {
                Ok(Some(c)) if c.size == size => {
                    println!(
                        "  {volid}: already on {} with the same size, not uploading",
                        cfg.node
                    );
                    continue;
                }
                Ok(Some(_)) => {
                    println!("  {volid}: exists on {} with a different size; delete it or rename the ISO", cfg.node);
                    ok = false;
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    println!("  {volid}: cannot list storage {pool} on {}: {e}", cfg.node);
                    ok = false;
                    continue;
                }
            }
            let bar = if show_bars {
                ProgressBar::new(size)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(bar_style());
            bar.set_message(format!("upload {name}"));
            let b2 = bar.clone();
            let cb: kiln_pve::UploadProgress =
                std::sync::Arc::new(move |sent, _total| b2.set_position(sent));
            let req = UploadRequest {
                path: got.path.clone(),
                filename: name.clone(),
                content: UploadContent::Iso,
                checksum: None,
            };
            let res = match client.upload(&cfg.node, &pool, &req, Some(cb)).await {
                Ok(upid) => {
                    let wait = kiln_pve::WaitOptions {
                        timeout: std::time::Duration::from_secs(3600),
                        ..Default::default()
                    };
                    client.wait_task(&upid, &wait, None).await.map(|_| ())
                }
                Err(e) => Err(e),
            };
            bar.finish_and_clear();
            match res {
                Ok(()) => println!("  {volid}: uploaded {size} bytes to {}", cfg.node),
                Err(e) => {
                    println!("  {volid}: upload failed: {e}");
                    ok = false;
                }
            }
        }
    }
    ok
}

fn report_offline(needs: &[IsoNeed], fetcher: &Fetcher) -> bool {
    let mut ok = true;
    for need in needs {
        let name = Fetcher::file_name(&need.src.urls[0]);
        match fetcher.plan(&need.src) {
            Ok(Planned::Cached { path }) => println!(
                "  {name}: cached at {} (re-verified on the next online run)",
                path.display()
            ),
            Ok(Planned::Local { path, exists: true }) => {
                println!("  {name}: local file {}", path.display())
            }
            Ok(Planned::Local {
                path,
                exists: false,
            }) => {
                println!("  {name}: local file {} is missing", path.display());
                ok = false;
            }
            Ok(Planned::Download { url, path, partial }) => {
                let resume = if partial > 0 {
                    format!(" (resuming after {partial} bytes)")
                } else {
                    String::new()
                };
                println!(
                    "  {name}: would download {url}{resume} -> {}",
                    path.display()
                );
                if let kiln_iso::ChecksumSpec::File { url: c, .. } = &need.src.checksum {
                    println!("  {name}: would fetch checksum file {c}");
                }
            }
            Err(e) => {
                println!("  {name}: error: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// Run a tool and return its first output line, or None when it cannot be started.
async fn tool_version(cmd: &str, args: &[&str]) -> Option<(bool, String)> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    Some((
        out.status.success(),
        text.lines().next().unwrap_or("").trim().to_string(),
    ))
}

fn resolve(root: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        // Packer resolves provisioner paths against the cwd; fall back to the template directory.
        let cwd = std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or_else(|_| path.clone());
        if cwd.exists() {
            cwd
        } else {
            root.join(&path)
        }
    }
}

async fn check_tools(plan: &kiln_config::BuildPlan, offline: bool) -> bool {
    let mut ok = true;
    let mut playbook_cmds = BTreeSet::new();
    let mut galaxy = Vec::new();
    let mut agent = false;
    for run in &plan.runs {
        agent |= run.config.communicator.ssh_agent_auth;
        for p in &run.provisioners {
            if let ProvisionerKind::Ansible(a) = &p.kind {
                playbook_cmds.insert(
                    a.command
                        .clone()
                        .unwrap_or_else(|| "ansible-playbook".to_string()),
                );
                if let Some(g) = &a.galaxy_file {
                    galaxy.push(galaxy_of(a, g));
                }
            }
        }
    }
    for cmd in &playbook_cmds {
        // `command` may carry env assignments or arguments; the program is the last word without '='.
        let prog = cmd
            .split_whitespace()
            .find(|w| !w.contains('='))
            .unwrap_or("ansible-playbook");
        match tool_version(prog, &["--version"]).await {
            Some((true, v)) => println!("  {prog}: {v}"),
            _ => {
                println!("  {prog}: not found; fix: sudo apt-get install -y ansible (or: pipx install ansible-core)");
                ok = false;
            }
        }
    }
    let mut seen = BTreeSet::new();
    for g in galaxy {
        if !seen.insert((
            g.file.clone(),
            g.roles_path.clone(),
            g.collections_path.clone(),
        )) {
            continue;
        }
        let file = resolve(&plan.root, &g.file);
        if !file.is_file() {
            println!(
                "  galaxy_file {}: not found (looked at {})",
                g.file,
                file.display()
            );
            ok = false;
            continue;
        }
        let mut args: Vec<String> = vec!["install".into(), "-r".into(), file.display().to_string()];
        if let Some(r) = &g.roles_path {
            args.extend(["-p".into(), r.clone()]);
        }
        if g.force {
            args.push("--force".into());
        }
        let line = format!("{} {}", g.command, args.join(" "));
        if offline {
            println!("  would run: {line}");
            continue;
        }
        println!("  running: {line}");
        let status = tokio::process::Command::new(&g.command)
            .args(&args)
            .status()
            .await;
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                println!("  {line}: failed ({s}); fix: check the requirements file and your network access to Galaxy");
                ok = false;
            }
            Err(_) => {
                println!("  {}: not found; fix: sudo apt-get install -y ansible (ansible-galaxy ships with it)", g.command);
                ok = false;
            }
        }
    }
    if agent {
        match std::env::var_os("SSH_AUTH_SOCK").filter(|s| Path::new(s).exists()) {
            None => {
                println!("  ssh agent: not running but ssh_agent_auth = true; fix: eval \"$(ssh-agent)\" && ssh-add");
                ok = false;
            }
            Some(_) => {
                match tokio::process::Command::new("ssh-add")
                    .arg("-l")
                    .output()
                    .await
                {
                    Ok(o) if o.status.success() => {
                        let n = String::from_utf8_lossy(&o.stdout).lines().count();
                        println!("  ssh agent: running with {n} key(s)");
                    }
                    Ok(o) if o.status.code() == Some(1) => {
                        println!("  ssh agent: running but holds no keys; fix: ssh-add ~/.ssh/id_ed25519");
                        ok = false;
                    }
                    _ => {
                        println!(
                            "  ssh agent: cannot be reached; fix: eval \"$(ssh-agent)\" && ssh-add"
                        );
                        ok = false;
                    }
                }
            }
        }
    }
    ok
}

struct Galaxy {
    file: String,
    command: String,
    roles_path: Option<String>,
    collections_path: Option<String>,
    force: bool,
}

fn galaxy_of(a: &Ansible, file: &str) -> Galaxy {
    Galaxy {
        file: file.to_string(),
        command: a
            .galaxy_command
            .clone()
            .unwrap_or_else(|| "ansible-galaxy".to_string()),
        roles_path: a.roles_path.clone(),
        collections_path: a.collections_path.clone(),
        force: a.galaxy_force_install,
    }
}

pub async fn run(args: Args) -> CmdResult {
    let opts = match args.template.prepare() {
        Ok(o) => o,
        Err(code) => return Ok(code),
    };
    let loaded = match kiln_config::load(&args.template.path, &opts) {
        Ok(l) => l,
        Err(e) => {
            print_diags(&e.warnings, false);
            print_diags(&e.errors, false);
            eprintln!("kiln init: the configuration is invalid ({} error(s)); run `kiln validate` for details", e.errors.len());
            return Ok(Code::Failed);
        }
    };
    print_diags(&loaded.warnings, true);
    let plan = &loaded.plan;

    println!("==> version pins");
    let mut ok = report_pins(plan);

    println!("==> ISOs");
    let (needs, notes) = collect_isos(plan);
    for n in &notes {
        println!("  {n}");
    }
    if needs.is_empty() {
        println!("  nothing to download (sources use iso_file or let PVE download)");
    } else {
        let cache = args
            .cache_dir
            .clone()
            .unwrap_or_else(Fetcher::default_cache_dir);
        let base = std::env::current_dir().unwrap_or_else(|_| plan.root.clone());
        let fetcher = match Fetcher::new(cache) {
            Ok(f) => f.with_base_dir(base),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(Code::Failed);
            }
        };
        println!("  cache: {}", fetcher.cache_dir().display());
        for n in &needs {
            tracing::debug!(users = ?n.users, urls = ?n.src.urls, "ISO needed");
        }
        if args.offline {
            ok &= report_offline(&needs, &fetcher);
            if args.upload {
                println!("  --upload: would stage the ISOs on the sources' iso_storage_pool (skipped offline)");
            }
        } else {
            let bars = !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut fetched = Vec::new();
            ok &= fetch_isos(&needs, &fetcher, bars, &mut fetched).await;
            if args.upload {
                println!("==> staging ISOs on PVE storage");
                ok &= upload_isos(plan, &needs, &fetched, bars).await;
            }
        }
    }

    println!("==> local tools");
    ok &= check_tools(plan, args.offline).await;

    if ok {
        println!(
            "kiln init: ready{}",
            if args.offline {
                " (offline report)"
            } else {
                ""
            }
        );
        Ok(Code::Ok)
    } else {
        println!("kiln init: some steps failed (see above)");
        Ok(Code::Failed)
    }
}
