//! The pipeline core: steps with `run` and `cleanup`, a cleanup stack unwound in reverse on
//! success, error or cancellation, and Packer's `-on-error=cleanup|abort|ask` semantics.
//!
//! A step is pushed on the cleanup stack *before* it runs, so a step that fails or is
//! interrupted half-way still gets its `cleanup` (each step records what it created in the
//! shared state before the call that creates it, and its cleanup undoes only what is recorded).

use crate::ui::{fmt_duration, BuildUi};
use async_trait::async_trait;
use futures::FutureExt;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What `-on-error` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Undo everything (default).
    #[default]
    Cleanup,
    /// Leave the remote resources (VM, uploaded ISOs) as they are for debugging; local ones
    /// (HTTP server, temp files) still go away.
    Abort,
    /// Ask: clean up, abort, or retry the failed step.
    Ask,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cleanup" | "" => Ok(OnError::Cleanup),
            "abort" => Ok(OnError::Abort),
            "ask" => Ok(OnError::Ask),
            "run-cleanup-provisioner" => Ok(OnError::Abort),
            o => Err(format!(
                "-on-error must be one of cleanup, abort, ask (got {o:?})"
            )),
        }
    }
}

/// Why a step stopped.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The message says what failed, why, and what to try.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C / SIGTERM.
    #[error("build was cancelled")]
    Cancelled,
}

impl StepError {
    pub fn failed(msg: impl fmt::Display) -> Self {
        StepError::Failed(msg.to_string())
    }
}

/// How a cleanup is asked to behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded: keep the artifact, release the rest.
    Success,
    /// A step failed or the build was cancelled: undo everything.
    Failed,
    /// `-on-error=abort`: keep remote resources for inspection, release local ones.
    Aborted,
}

impl Outcome {
    /// Whether remote resources created by the build (the VM, generated ISOs) must be removed.
    pub fn undo_remote(self) -> bool {
        self == Outcome::Failed
    }
}

/// What a step sees besides the shared state.
#[derive(Clone)]
pub struct StepContext {
    pub ui: BuildUi,
    /// Cancelled on Ctrl-C; long waits inside steps should select on it too.
    pub cancel: CancellationToken,
    /// When the build started (for "VM fetched /user-data at 00:41").
    pub started: Instant,
}

impl StepContext {
    pub fn new(ui: BuildUi, cancel: CancellationToken) -> Self {
        StepContext {
            ui,
            cancel,
            started: Instant::now(),
        }
    }

    /// Sleep, but return `Err(Cancelled)` as soon as the build is cancelled.
    pub async fn sleep(&self, d: Duration) -> Result<(), StepError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(StepError::Cancelled),
        }
    }

    /// `mm:ss` since the build started.
    pub fn elapsed_mmss(&self) -> String {
        mmss(self.started.elapsed())
    }
}

pub fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// One build step. `S` is the state shared by the steps of one build.
#[async_trait]
pub trait Step<S: Send>: Send {
    /// Short name for the step list (`create_vm`).
    fn name(&self) -> &str;
    /// Do the work. Record anything created in `state` before creating it.
    async fn run(&mut self, cx: &StepContext, state: &mut S) -> Result<(), StepError>;
    /// Undo or release what `run` created (also after a partial or failed run).
    async fn cleanup(&mut self, _cx: &StepContext, _state: &mut S, _outcome: Outcome) {}
}

/// The answer to `-on-error=ask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskChoice {
    Cleanup,
    Abort,
    Retry,
}

/// Asks the user what to do after a failed step (`-on-error=ask`).
#[async_trait]
pub trait Asker: Send + Sync {
    async fn ask(&self, build: &str, step: &str, error: &str) -> AskChoice;
}

/// Reads the answer from stdin (one prompt at a time across parallel builds). Without a
/// terminal, the answer is "cleanup".
pub struct StdinAsker;

static ASK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[async_trait]
impl Asker for StdinAsker {
    async fn ask(&self, build: &str, step: &str, error: &str) -> AskChoice {
        use std::io::IsTerminal;
        let _g = ASK_LOCK.lock().await;
        if !std::io::stdin().is_terminal() {
            return AskChoice::Cleanup;
        }
        let prompt = format!(
            "==> {build}: Step \"{step}\" failed\n==> {build}: Error: {error}\n==> {build}: [c] Clean up and exit, [a] abort without cleanup, or [r] retry step (build may fail even if retry succeeds)? "
        );
        tokio::task::spawn_blocking(move || loop {
            use std::io::{BufRead, Write};
            let mut err = std::io::stderr();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(0) | Err(_) => return AskChoice::Cleanup,
                Ok(_) => {}
            }
            match line.trim() {
                "c" | "C" => return AskChoice::Cleanup,
                "a" | "A" => return AskChoice::Abort,
                "r" | "R" => return AskChoice::Retry,
                _ => continue,
            }
        })
        .await
        .unwrap_or(AskChoice::Cleanup)
    }
}

/// How a step ended, for the step list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    Ok,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct StepTiming {
    pub name: String,
    pub duration: Duration,
    pub status: StepStatus,
    /// Time spent in its cleanup (None when cleanup was skipped).
    pub cleanup: Option<Duration>,
}

/// The result of running a pipeline.
#[derive(Debug)]
pub struct RunReport {
    pub result: Result<(), StepError>,
    pub timings: Vec<StepTiming>,
    pub outcome: Outcome,
    pub total: Duration,
}

impl RunReport {
    /// The step list with timings, one line per step.
    pub fn step_list(&self) -> Vec<String> {
        let w = self.timings.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let mut lines: Vec<String> = self
            .timings
            .iter()
            .map(|t| {
                let st = match t.status {
                    StepStatus::Ok => "ok",
                    StepStatus::Failed => "FAILED",
                    StepStatus::Cancelled => "cancelled",
                };
                let cl = t
                    .cleanup
                    .map(|c| format!("  (cleanup {})", fmt_duration(c)))
                    .unwrap_or_default();
                format!("{:<w$}  {:>8}  {st}{cl}", t.name, fmt_duration(t.duration))
            })
            .collect();
        lines.push(format!("{:<w$}  {:>8}", "total", fmt_duration(self.total)));
        lines
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Test hook, compiled in always: `KILN_TEST_PANIC_IN_STEP=<step name>` makes that step panic at
/// the start of its `run` (the fault-matrix tests use it to prove that a panicking step is a
/// failed step whose cleanup still runs). Not a user setting; never set it outside tests.
pub const TEST_PANIC_ENV: &str = "KILN_TEST_PANIC_IN_STEP";

fn test_panic_requested(step: &str) -> bool {
    hook_matches(std::env::var(TEST_PANIC_ENV).ok().as_deref(), step)
}

fn hook_matches(value: Option<&str>, step: &str) -> bool {
    value.is_some_and(|v| !v.is_empty() && v == step)
}

/// Run `steps` in order; on failure, cancellation or success unwind the cleanup stack.
///
/// Every `run` and `cleanup` is guarded against unwinding: a panic in `run` is a failed step
/// carrying the panic message (its cleanup and the earlier ones still run); a panic in `cleanup`
/// is reported and the remaining cleanups still run.
pub async fn run<S: Send>(
    steps: &mut [Box<dyn Step<S>>],
    cx: &StepContext,
    state: &mut S,
    on_error: OnError,
    asker: &dyn Asker,
) -> RunReport {
    let t0 = Instant::now();
    let mut timings: Vec<StepTiming> = Vec::new();
    let mut entered = 0usize; // steps [0, entered) are on the cleanup stack
    let mut result: Result<(), StepError> = Ok(());
    let mut outcome = Outcome::Success;

    let mut i = 0usize;
    while i < steps.len() {
        if cx.cancel.is_cancelled() {
            result = Err(StepError::Cancelled);
            break;
        }
        entered = entered.max(i + 1);
        let name = steps[i].name().to_string();
        tracing::debug!(step = %name, "running step");
        let ts = Instant::now();
        let r = {
            let step = &mut steps[i];
            let step_name = name.as_str();
            let st: &mut S = &mut *state;
            let guarded = AssertUnwindSafe(async move {
                if test_panic_requested(step_name) {
                    panic!("{TEST_PANIC_ENV}={step_name}: injected panic (test hook)");
                }
                step.run(cx, st).await
            })
            .catch_unwind();
            tokio::select! {
                biased;
                _ = cx.cancel.cancelled() => Err(StepError::Cancelled),
                r = guarded => r.unwrap_or_else(|p| Err(StepError::failed(format!(
                    "internal error: step \"{name}\" panicked: {} — this is a bug in kiln, please report it",
                    panic_message(p.as_ref())
                )))),
            }
        };
        let dur = ts.elapsed();
        match r {
            Ok(()) => {
                timings.push(StepTiming {
                    name,
                    duration: dur,
                    status: StepStatus::Ok,
                    cleanup: None,
                });
                i += 1;
            }
            Err(StepError::Cancelled) => {
                timings.push(StepTiming {
                    name,
                    duration: dur,
                    status: StepStatus::Cancelled,
                    cleanup: None,
                });
                result = Err(StepError::Cancelled);
                break;
            }
            Err(e) => {
                timings.push(StepTiming {
                    name: name.clone(),
                    duration: dur,
                    status: StepStatus::Failed,
                    cleanup: None,
                });
                let msg = e.to_string();
                cx.ui.error(&msg);
                let choice = match on_error {
                    OnError::Cleanup => AskChoice::Cleanup,
                    OnError::Abort => AskChoice::Abort,
                    OnError::Ask => asker.ask(cx.ui.name(), &name, &msg).await,
                };
                match choice {
                    AskChoice::Retry => {
                        cx.ui.say(&format!("Retrying step \"{name}\""));
                        continue;
                    }
                    AskChoice::Abort => {
                        cx.ui.say(&format!("Step \"{name}\" failed, aborting..."));
                        outcome = Outcome::Aborted;
                    }
                    AskChoice::Cleanup => {}
                }
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() && outcome != Outcome::Aborted {
        outcome = Outcome::Failed;
    }
    if result == Err(StepError::Cancelled) {
        cx.ui.say("Cancelling build after receiving interrupt");
    }

    // unwind, last entered first; cleanups run to the end even after a cancel
    let cleanup_cx = StepContext {
        cancel: CancellationToken::new(),
        ..cx.clone()
    };
    for j in (0..entered).rev() {
        let name = steps[j].name().to_string();
        if outcome == Outcome::Aborted {
            tracing::debug!(step = %name, "abort: remote resources of this step are kept");
        }
        let ts = Instant::now();
        let guarded = AssertUnwindSafe(steps[j].cleanup(&cleanup_cx, &mut *state, outcome))
            .catch_unwind()
            .await;
        if let Err(p) = guarded {
            cx.ui.error(&format!(
                "internal error: the cleanup of step \"{name}\" panicked: {} — what it created may be left behind; this is a bug in kiln, please report it",
                panic_message(p.as_ref())
            ));
        }
        let d = ts.elapsed();
        // attach to the last timing entry of that step
        if let Some(t) = timings.iter_mut().rev().find(|t| t.name == name) {
            t.cleanup = Some(d);
        }
    }
    RunReport {
        result,
        timings,
        outcome,
        total: t0.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::{Masker, Ui, UiOptions};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log(Vec<String>);

    struct Fake {
        name: &'static str,
        fail_times: usize,
        hang: bool,
        cancel_on_run: Option<CancellationToken>,
    }

    fn fake(name: &'static str) -> Box<dyn Step<Log>> {
        Box::new(Fake {
            name,
            fail_times: 0,
            hang: false,
            cancel_on_run: None,
        })
    }

    #[async_trait]
    impl Step<Log> for Fake {
        fn name(&self) -> &str {
            self.name
        }
        async fn run(&mut self, _cx: &StepContext, s: &mut Log) -> Result<(), StepError> {
            s.0.push(format!("run {}", self.name));
            if let Some(t) = &self.cancel_on_run {
                t.cancel();
            }
            if self.hang {
                futures::future::pending::<()>().await;
            }
            if self.fail_times > 0 {
                self.fail_times -= 1;
                return Err(StepError::failed(format!("{} broke", self.name)));
            }
            Ok(())
        }
        async fn cleanup(&mut self, _cx: &StepContext, s: &mut Log, o: Outcome) {
            s.0.push(format!("cleanup {} {:?}", self.name, o));
        }
    }

    struct Fixed(AskChoice, Arc<Mutex<usize>>);
    #[async_trait]
    impl Asker for Fixed {
        async fn ask(&self, _b: &str, _s: &str, _e: &str) -> AskChoice {
            if let Ok(mut n) = self.1.lock() {
                *n += 1;
            }
            self.0
        }
    }

    fn cx() -> (StepContext, Arc<Mutex<Vec<u8>>>) {
        let (ui, buf) = Ui::capture(UiOptions::default(), Arc::new(Masker::new()));
        (
            StepContext::new(ui.for_build("proxmox-iso.t"), CancellationToken::new()),
            buf,
        )
    }

    fn never() -> Fixed {
        Fixed(AskChoice::Cleanup, Arc::new(Mutex::new(0)))
    }

    #[tokio::test]
    async fn success_cleans_up_in_reverse_with_success_outcome() {
        let (cx, _) = cx();
        let mut steps = vec![fake("a"), fake("b"), fake("c")];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Cleanup, &never()).await;
        assert!(r.result.is_ok());
        assert_eq!(
            log.0,
            [
                "run a",
                "run b",
                "run c",
                "cleanup c Success",
                "cleanup b Success",
                "cleanup a Success"
            ]
        );
        assert_eq!(r.timings.len(), 3);
        assert_eq!(r.step_list().len(), 4);
    }

    #[tokio::test]
    async fn failure_cleans_the_failed_step_and_earlier_ones_only() {
        let (cx, buf) = cx();
        let mut steps = vec![
            fake("a"),
            Box::new(Fake {
                name: "b",
                fail_times: 1,
                hang: false,
                cancel_on_run: None,
            }) as Box<dyn Step<Log>>,
            fake("c"),
        ];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Cleanup, &never()).await;
        assert_eq!(r.result, Err(StepError::Failed("b broke".into())));
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            log.0,
            ["run a", "run b", "cleanup b Failed", "cleanup a Failed"]
        );
        let out = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(out.contains("==> proxmox-iso.t: b broke"), "{out}");
    }

    #[tokio::test]
    async fn abort_keeps_remote_resources() {
        let (cx, buf) = cx();
        let mut steps = vec![
            fake("a"),
            Box::new(Fake {
                name: "b",
                fail_times: 1,
                hang: false,
                cancel_on_run: None,
            }) as Box<dyn Step<Log>>,
        ];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Abort, &never()).await;
        assert_eq!(r.outcome, Outcome::Aborted);
        assert!(!r.outcome.undo_remote());
        assert_eq!(
            log.0,
            ["run a", "run b", "cleanup b Aborted", "cleanup a Aborted"]
        );
        let out = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(out.contains("Step \"b\" failed, aborting..."), "{out}");
    }

    #[tokio::test]
    async fn ask_retry_reruns_the_step() {
        let (cx, _) = cx();
        let n = Arc::new(Mutex::new(0));
        let mut steps = vec![
            fake("a"),
            Box::new(Fake {
                name: "b",
                fail_times: 1,
                hang: false,
                cancel_on_run: None,
            }) as Box<dyn Step<Log>>,
        ];
        let mut log = Log::default();
        let r = run(
            &mut steps,
            &cx,
            &mut log,
            OnError::Ask,
            &Fixed(AskChoice::Retry, n.clone()),
        )
        .await;
        assert!(r.result.is_ok());
        assert_eq!(*n.lock().map(|g| *g).as_ref().unwrap_or(&0), 1);
        assert_eq!(
            log.0,
            [
                "run a",
                "run b",
                "run b",
                "cleanup b Success",
                "cleanup a Success"
            ]
        );
    }

    #[tokio::test]
    async fn cancellation_interrupts_a_hanging_step_and_unwinds() {
        let (cx, _) = cx();
        let token = cx.cancel.clone();
        let mut steps = vec![
            fake("a"),
            Box::new(Fake {
                name: "wait",
                fail_times: 0,
                hang: true,
                cancel_on_run: Some(token),
            }) as Box<dyn Step<Log>>,
            fake("c"),
        ];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Cleanup, &never()).await;
        assert_eq!(r.result, Err(StepError::Cancelled));
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            log.0,
            [
                "run a",
                "run wait",
                "cleanup wait Failed",
                "cleanup a Failed"
            ]
        );
        assert_eq!(r.timings[1].status, StepStatus::Cancelled);
    }

    struct Panicky {
        name: &'static str,
        in_run: bool,
        in_cleanup: bool,
    }

    #[async_trait]
    impl Step<Log> for Panicky {
        fn name(&self) -> &str {
            self.name
        }
        async fn run(&mut self, _cx: &StepContext, s: &mut Log) -> Result<(), StepError> {
            s.0.push(format!("run {}", self.name));
            if self.in_run {
                let big = 1e20_f64;
                // the defect of issue 11: this used to be reached from PACKER_KEY_INTERVAL=1e20s
                let _ = Duration::from_secs_f64(big);
            }
            Ok(())
        }
        async fn cleanup(&mut self, _cx: &StepContext, s: &mut Log, o: Outcome) {
            s.0.push(format!("cleanup {} {:?}", self.name, o));
            if self.in_cleanup {
                panic!("cleanup exploded");
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_step_is_a_failed_step_and_every_cleanup_runs() {
        let (cx, buf) = cx();
        let mut steps = vec![
            fake("a"),
            Box::new(Panicky {
                name: "boom",
                in_run: true,
                in_cleanup: false,
            }) as Box<dyn Step<Log>>,
            fake("c"),
        ];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Cleanup, &never()).await;
        let Err(StepError::Failed(msg)) = &r.result else {
            panic!("expected a failed step, got {:?}", r.result);
        };
        assert!(msg.contains("step \"boom\" panicked"), "{msg}");
        assert!(
            msg.contains("overflow") || msg.contains("Duration"),
            "{msg}"
        );
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(
            log.0,
            [
                "run a",
                "run boom",
                "cleanup boom Failed",
                "cleanup a Failed"
            ]
        );
        assert_eq!(r.timings[1].status, StepStatus::Failed);
        let out = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(out.contains("panicked"), "{out}");
    }

    #[tokio::test]
    async fn a_panicking_cleanup_is_reported_and_the_others_still_run() {
        let (cx, buf) = cx();
        let mut steps = vec![
            fake("a"),
            Box::new(Panicky {
                name: "b",
                in_run: false,
                in_cleanup: true,
            }) as Box<dyn Step<Log>>,
            Box::new(Fake {
                name: "c",
                fail_times: 1,
                hang: false,
                cancel_on_run: None,
            }) as Box<dyn Step<Log>>,
        ];
        let mut log = Log::default();
        let r = run(&mut steps, &cx, &mut log, OnError::Cleanup, &never()).await;
        assert_eq!(r.result, Err(StepError::Failed("c broke".into())));
        assert_eq!(
            log.0,
            [
                "run a",
                "run b",
                "run c",
                "cleanup c Failed",
                "cleanup b Failed",
                "cleanup a Failed"
            ]
        );
        let out = String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert!(
            out.contains("the cleanup of step \"b\" panicked: cleanup exploded"),
            "{out}"
        );
    }

    #[test]
    fn the_test_hook_names_one_step() {
        assert!(hook_matches(Some("create_vm"), "create_vm"));
        assert!(!hook_matches(Some("create_vm"), "start_vm"));
        assert!(!hook_matches(Some(""), "create_vm"));
        assert!(!hook_matches(None, "create_vm"));
    }

    #[test]
    fn on_error_parses() {
        assert_eq!("abort".parse::<OnError>(), Ok(OnError::Abort));
        assert!("nope".parse::<OnError>().is_err());
    }
}
