//! `--open-firewall[=BACKEND]` (or `KILN_OPEN_FIREWALL`): let the HTTP server's port in through the
//! host firewall for the duration of the build, and close it again whatever happens.
//!
//! It runs right after the HTTP server has bound its port (the port is only known then) and before the
//! VM exists, so the guest never meets a closed port; its cleanup runs before the server stops. Rules
//! left behind by a build that died (crash, `kill -9`) are closed first, from the state file
//! `kiln-firewall` keeps (`kiln port close --stale` does the same by hand).

use super::{BuildState, StepError};
use crate::pipeline::{Outcome, Step, StepContext};
use async_trait::async_trait;
use kiln_firewall::{BuildGuard, CloseOutcome, OpenOutcome, Proto, Rule};

/// Opens the HTTP port when `BuildFlags::open_firewall` is set; closes it in cleanup.
#[derive(Default)]
pub struct StepFirewall {
    guard: Option<BuildGuard>,
    port: u16,
}

#[async_trait]
impl Step<BuildState> for StepFirewall {
    fn name(&self) -> &str {
        "firewall"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let Some(choice) = st.flags.open_firewall else {
            return Ok(());
        };
        let Some(port) = st.http.as_ref().map(|h| h.port()) else {
            cx.ui
                .message("firewall: this build serves no HTTP content; nothing to open");
            return Ok(());
        };
        self.port = port;
        let rule = Rule::new(port, Proto::Tcp);
        let opened = tokio::task::spawn_blocking(move || BuildGuard::open(choice, rule))
            .await
            .map_err(|e| StepError::failed(format!("opening the firewall port panicked: {e}")))?;
        let (guard, stale) = opened.map_err(|e| {
            StepError::failed(format!(
                "cannot open the HTTP port {port}/tcp in the host firewall: {e}\n  \
                 hint: open it yourself (`sudo kiln port open --port {port}`) and build without --open-firewall"
            ))
        })?;
        for (entry, _) in &stale {
            cx.ui.message(&format!(
                "firewall: closed {} in {}, left open by a build that is no longer running",
                entry.rule, entry.backend
            ));
        }
        if let Some(d) = &guard.report.detection {
            cx.ui
                .message(&format!("firewall: {}", d.findings.join("; ")));
        }
        let backend = guard
            .report
            .backend
            .map(|b| b.to_string())
            .unwrap_or_default();
        match &guard.report.outcome {
            OpenOutcome::Opened { commands } => {
                crate::leftovers::add(
                    &format!("firewall:{port}"),
                    format!("HTTP port {port}/tcp open in {backend}: `sudo kiln port close --stale`"),
                );
                cx.ui.say(&format!("Opened HTTP port {port}/tcp in {backend} for this build"));
                for c in commands {
                    cx.ui.message(&format!("ran: {c}"));
                }
            }
            OpenOutcome::AlreadyOpen => cx.ui.message(&format!(
                "firewall: kiln's rule for port {port}/tcp is already in place (opened by `kiln port open`); leaving it"
            )),
            OpenOutcome::AllowedByOther { detail } => cx.ui.message(&format!(
                "firewall: port {port}/tcp is already allowed by a rule kiln did not add ({detail}); leaving it"
            )),
            OpenOutcome::NotFiltered { detail } => cx.ui.message(&format!(
                "firewall: nothing filters incoming connections ({detail}); nothing to open"
            )),
        }
        self.guard = Some(guard);
        Ok(())
    }

    async fn cleanup(&mut self, cx: &StepContext, _st: &mut BuildState, _outcome: Outcome) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if let Some(note) = guard.close_note() {
            cx.ui.message(&format!("firewall: {note}"));
        }
        let port = self.port;
        match tokio::task::spawn_blocking(move || guard.close()).await {
            Ok(Ok(Some(CloseOutcome::Closed { .. }))) => {
                crate::leftovers::remove(&format!("firewall:{port}"));
                cx.ui
                    .say(&format!("Closed HTTP port {port}/tcp in the host firewall"))
            }
            Ok(Ok(_)) => crate::leftovers::remove(&format!("firewall:{port}")),
            Ok(Err(e)) => cx.ui.error(&format!(
                "could not close HTTP port {port}/tcp in the host firewall: {e}\n  \
                 hint: `sudo kiln port close --stale` closes what kiln left open"
            )),
            Err(e) => cx
                .ui
                .error(&format!("closing the firewall port panicked: {e}")),
        }
    }
}
