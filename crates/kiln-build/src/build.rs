//! Run the builds of a plan: one pipeline per source run, up to `-parallel-builds` at once,
//! Packer-style summary lines, step timings, post-processors.

use crate::manifest::{write_manifest, ManifestEntry};
use crate::pipeline::{self, Asker, OnError, RunReport, Step, StepContext, StepError};
use crate::steps::{
    boot::StepHttpServer, BuildFlags, BuildState, StepBootCommand, StepCloneVm, StepConnect,
    StepCreateVm, StepFinalize, StepIso, StepPreflight, StepProvision, StepShutdown, StepStartVm,
    StepTemplate, StepWaitGuest,
};
use crate::ui::{fmt_duration_words, Ui};
use kiln_config::model::{BuildPlan, PostProcessorKind, SourceRun};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Run-wide options (the CLI flags).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub on_error: OnError,
    pub force: bool,
    /// `-parallel-builds`: 0 = no limit.
    pub parallel_builds: usize,
    pub http_diag_after: Option<Duration>,
    /// `--open-firewall[=BACKEND]`: open the HTTP port in the host firewall around each build.
    pub open_firewall: Option<kiln_firewall::Choice>,
    /// `--cache-install`: cached install layers for `proxmox-iso` builds.
    pub cache_install: bool,
}

/// One build's result.
pub struct BuildResult {
    pub name: String,
    /// The VM id of the artifact.
    pub artifact: Result<u32, StepError>,
    pub report: RunReport,
    pub duration: Duration,
}

/// All builds.
pub struct Summary {
    pub results: Vec<BuildResult>,
    pub cancelled: bool,
}

impl Summary {
    /// True only when there was at least one build and every build produced its artifact
    /// (a build whose task died is in `results` as a failure, never missing).
    pub fn all_ok(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.artifact.is_ok())
    }
}

/// The steps of a `proxmox-iso` build, in order.
pub fn proxmox_iso_steps() -> Vec<Box<dyn Step<BuildState>>> {
    vec![
        Box::new(StepConnect),
        Box::new(StepPreflight),
        Box::new(StepIso::new()),
        Box::new(StepHttpServer),
        Box::new(crate::steps::firewall::StepFirewall::default()),
        Box::new(StepCreateVm),
        Box::new(StepStartVm),
        Box::new(StepBootCommand),
        Box::new(StepWaitGuest),
        Box::new(StepProvision),
        Box::new(StepShutdown),
        Box::new(StepFinalize),
        Box::new(StepTemplate),
    ]
}

/// The steps of a `proxmox-clone` build, in order: no ISO, HTTP server, create or boot command.
pub fn proxmox_clone_steps() -> Vec<Box<dyn Step<BuildState>>> {
    vec![
        Box::new(StepConnect),
        Box::new(StepPreflight),
        Box::new(StepCloneVm),
        Box::new(StepStartVm),
        Box::new(StepWaitGuest),
        Box::new(StepProvision),
        Box::new(StepShutdown),
        Box::new(StepFinalize),
        Box::new(StepTemplate),
    ]
}

/// The steps of a `proxmox-iso` build with `--cache-install`: `cache_lookup` and `cache_clone`
/// after preflight (on a hit the install steps are skipped), `cache_layer` after wait_guest (on a
/// miss it keeps the installed system as the base template).
pub fn proxmox_iso_cached_steps() -> Vec<Box<dyn Step<BuildState>>> {
    use crate::steps::cache::{
        SkipFlag, StepCacheClone, StepCacheLayer, StepCacheLookup, UnlessCached,
    };
    let skip = SkipFlag::default();
    vec![
        Box::new(StepConnect),
        Box::new(StepPreflight),
        Box::new(StepCacheLookup),
        Box::new(StepCacheClone::new(skip.clone())),
        UnlessCached::wrap(StepIso::new(), &skip),
        UnlessCached::wrap(StepHttpServer, &skip),
        UnlessCached::wrap(crate::steps::firewall::StepFirewall::default(), &skip),
        UnlessCached::wrap(StepCreateVm, &skip),
        Box::new(StepStartVm),
        UnlessCached::wrap(StepBootCommand, &skip),
        Box::new(StepWaitGuest),
        Box::new(StepCacheLayer::new(skip.clone())),
        Box::new(StepProvision),
        Box::new(StepShutdown),
        Box::new(StepFinalize),
        Box::new(StepTemplate),
    ]
}

/// The steps of a source type (`proxmox-iso` or `proxmox-clone`); `cache_install` applies to
/// `proxmox-iso` only (a clone build installs nothing).
pub fn steps_for(source_type: &str, cache_install: bool) -> Vec<Box<dyn Step<BuildState>>> {
    if source_type == kiln_config::model::keys::CLONE {
        proxmox_clone_steps()
    } else if cache_install {
        proxmox_iso_cached_steps()
    } else {
        proxmox_iso_steps()
    }
}

/// `kiln build --preflight`: connect and run only the preflight checks of every run (nothing is
/// uploaded or created). True when every run passed.
pub async fn preflight_plan(
    plan: &BuildPlan,
    opts: &BuildOptions,
    ui: &Ui,
    cancel: CancellationToken,
) -> bool {
    for s in &plan.sensitive_values {
        ui.masker().add(s);
    }
    let mut all_ok = !plan.runs.is_empty();
    for run in plan.runs.iter().cloned() {
        let name = run.full_name();
        let bui = ui.for_build(&name);
        let flags = BuildFlags {
            force: opts.force,
            ..BuildFlags::default()
        };
        let abs_root = std::path::absolute(&plan.root).unwrap_or_else(|_| plan.root.clone());
        let mut state = BuildState::new(run, abs_root, flags);
        let mut steps: Vec<Box<dyn Step<BuildState>>> =
            vec![Box::new(StepConnect), Box::new(StepPreflight)];
        let cx = StepContext::new(bui.clone(), cancel.clone());
        let asker = pipeline::StdinAsker;
        let report = pipeline::run(&mut steps, &cx, &mut state, OnError::Cleanup, &asker).await;
        match &report.result {
            Ok(()) => ui.raw(&format!("Build '{name}': preflight passed.")),
            Err(e) => {
                all_ok = false;
                ui.raw(
                    &ui.masker()
                        .mask(&format!("Build '{name}': preflight failed: {e}")),
                );
            }
        }
        if cancel.is_cancelled() {
            return false;
        }
    }
    all_ok
}

fn run_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Build every run of `plan`.
pub async fn build_plan(
    plan: &BuildPlan,
    opts: &BuildOptions,
    ui: &Ui,
    cancel: CancellationToken,
    asker: Arc<dyn Asker>,
) -> Summary {
    for s in &plan.sensitive_values {
        ui.masker().add(s);
    }
    let uuid = run_uuid();
    let limit = if opts.parallel_builds == 0 {
        plan.runs.len().max(1)
    } else {
        opts.parallel_builds
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut handles = Vec::new();
    for run in plan.runs.iter().cloned() {
        let name = run.full_name();
        let sem = sem.clone();
        let ui = ui.clone();
        let cancel = cancel.clone();
        let opts = opts.clone();
        let root = plan.root.clone();
        let asker = asker.clone();
        let uuid = uuid.clone();
        let t0 = Instant::now();
        handles.push((
            name,
            t0,
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.ok();
                build_one(run, root, &opts, &ui, cancel, asker.as_ref(), &uuid).await
            }),
        ));
    }
    let mut results = Vec::new();
    for (name, t0, h) in handles {
        match h.await {
            Ok(r) => results.push(r),
            // the pipeline guards every step, so this is a panic outside the steps (or an abort):
            // the build failed, and what it created may be left behind
            Err(e) => {
                let why = if e.is_panic() {
                    format!(
                        "internal error: the build task panicked: {} — this is a bug in kiln, please report it; check Proxmox VE for a VM left behind by this build",
                        pipeline::panic_message(e.into_panic().as_ref())
                    )
                } else {
                    format!("internal error: the build task was aborted: {e}")
                };
                ui.raw(&ui.masker().mask(&format!("Build '{name}' errored: {why}")));
                results.push(BuildResult {
                    name,
                    artifact: Err(StepError::failed(why)),
                    report: RunReport {
                        result: Err(StepError::failed("build task failed")),
                        timings: Vec::new(),
                        outcome: pipeline::Outcome::Failed,
                        total: t0.elapsed(),
                    },
                    duration: t0.elapsed(),
                });
            }
        }
    }
    let summary = Summary {
        results,
        cancelled: cancel.is_cancelled(),
    };
    print_summary(ui, &summary);
    summary
}

async fn build_one(
    run: SourceRun,
    root: std::path::PathBuf,
    opts: &BuildOptions,
    ui: &Ui,
    cancel: CancellationToken,
    asker: &dyn Asker,
    uuid: &str,
) -> BuildResult {
    let name = run.full_name();
    let bui = ui.for_build(&name);
    let t0 = Instant::now();
    let flags = BuildFlags {
        force: opts.force,
        http_diag_after: opts.http_diag_after,
        open_firewall: opts.open_firewall,
        cache_install: opts.cache_install,
    };
    let abs_root = std::path::absolute(&root).unwrap_or_else(|_| root.clone());
    let mut state = BuildState::new(run.clone(), abs_root, flags);
    let mut steps = steps_for(&run.source_type, opts.cache_install);
    let cx = StepContext::new(bui.clone(), cancel.clone());
    let report = pipeline::run(&mut steps, &cx, &mut state, opts.on_error, asker).await;
    let mut artifact = match (&report.result, state.artifact_id) {
        (Ok(()), Some(id)) => Ok(id),
        (Ok(()), None) => Err(StepError::failed("no artifact was created")),
        (Err(e), _) => Err(e.clone()),
    };
    if let Ok(id) = artifact {
        for pp in &run.post_processors {
            match &pp.kind {
                PostProcessorKind::Manifest(m) => {
                    let e = ManifestEntry {
                        name: &run.source_name,
                        builder_type: &run.source_type,
                        artifact_id: id.to_string(),
                        run_uuid: uuid,
                        build_time: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0),
                    };
                    bui.say("Running post-processor: manifest");
                    match write_manifest(
                        m,
                        &std::env::current_dir().unwrap_or_else(|_| root.clone()),
                        &e,
                    ) {
                        Ok(p) => bui.message(&format!("Wrote {}", p.display())),
                        Err(e) => {
                            bui.error(&format!("manifest post-processor failed: {e}"));
                            artifact =
                                Err(StepError::failed(format!("manifest post-processor: {e}")));
                        }
                    }
                }
                PostProcessorKind::ShellLocal(s) => {
                    bui.say("Running post-processor: shell-local");
                    let mut vars = std::collections::BTreeMap::new();
                    vars.insert("ID".to_string(), id.to_string());
                    vars.insert("Name".to_string(), state.vm_name.clone());
                    let cwd = std::env::current_dir().unwrap_or_else(|_| root.clone());
                    let ctx = crate::provision::ProvisionContext {
                        comm: None,
                        ssh: None,
                        build_name: &run.source_name,
                        builder_type: &run.source_type,
                        template_dir: &cwd,
                        ui: &bui,
                        cancel: &cancel,
                        vars: &vars,
                        interactive: false,
                    };
                    if let Err(e) = crate::provision::run_shell_local_post_processor(s, &ctx).await
                    {
                        bui.error(&format!("shell-local post-processor failed: {e}"));
                        artifact = Err(StepError::failed(format!(
                            "shell-local post-processor: {e}"
                        )));
                    }
                }
            }
        }
    }
    bui.say("Step timings:");
    for l in report.step_list() {
        bui.message(&format!("  {l}"));
    }
    let duration = t0.elapsed();
    match &artifact {
        Ok(_) => ui.raw(&format!(
            "Build '{name}' finished after {}.",
            fmt_duration_words(duration)
        )),
        Err(e) => ui.raw(&ui.masker().mask(&format!(
            "Build '{name}' errored after {}: {e}",
            fmt_duration_words(duration)
        ))),
    }
    BuildResult {
        name,
        artifact,
        report,
        duration,
    }
}

fn print_summary(ui: &Ui, s: &Summary) {
    let failed: Vec<&BuildResult> = s.results.iter().filter(|r| r.artifact.is_err()).collect();
    if !failed.is_empty() {
        ui.raw("");
        ui.say("Some builds didn't complete successfully and had errors:");
        for r in &failed {
            if let Err(e) = &r.artifact {
                let first = e.to_string();
                ui.raw(&format!(
                    "--> {}: {}",
                    r.name,
                    first.lines().next().unwrap_or_default()
                ));
            }
        }
        ui.machine("", "error-count", &[&failed.len().to_string()]);
    }
    if s.cancelled {
        ui.say("Cleanly cancelled builds after being interrupted.");
    }
    let ok: Vec<&BuildResult> = s.results.iter().filter(|r| r.artifact.is_ok()).collect();
    if ok.is_empty() {
        ui.say("Builds finished but no artifacts were created.");
        return;
    }
    ui.raw("");
    ui.say("Builds finished. The artifacts of successful builds are:");
    for r in ok {
        if let Ok(id) = &r.artifact {
            ui.raw(&format!("--> {}: A template was created: {id}", r.name));
            ui.machine(&r.name, "artifact-count", &["1"]);
            let builder_id = if r.name.starts_with("proxmox-clone.") {
                "proxmox.clone"
            } else {
                "proxmox.iso"
            };
            ui.machine(&r.name, "artifact", &["0", "builder-id", builder_id]);
            ui.machine(&r.name, "artifact", &["0", "id", &id.to_string()]);
            ui.machine(
                &r.name,
                "artifact",
                &["0", "string", &format!("A template was created: {id}")],
            );
            ui.machine(&r.name, "artifact", &["0", "files-count", "0"]);
            ui.machine(&r.name, "artifact", &["0", "end"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool) -> BuildResult {
        BuildResult {
            name: "proxmox-iso.x".into(),
            artifact: if ok {
                Ok(100)
            } else {
                Err(StepError::failed("x"))
            },
            report: RunReport {
                result: Ok(()),
                timings: Vec::new(),
                outcome: pipeline::Outcome::Success,
                total: Duration::ZERO,
            },
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn all_ok_needs_at_least_one_artifact_and_no_failure() {
        let s = |r: Vec<BuildResult>| Summary {
            results: r,
            cancelled: false,
        };
        assert!(!s(vec![]).all_ok(), "no results must not be success");
        assert!(s(vec![result(true)]).all_ok());
        assert!(!s(vec![result(true), result(false)]).all_ok());
    }
}
