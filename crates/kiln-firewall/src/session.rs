//! The operations the CLI and the build use: choose the backend (or detect it), open/close, record it
//! in the state file, close stale rules, and a guard that closes what a build opened.

use crate::backend::{self, CloseOutcome, OpenOutcome, PortStatus, NIXOS_RESET_NOTE};
use crate::detect::{detect, Detection};
use crate::runner::{Runner, SystemRunner};
use crate::state::{current_netns, now_secs, Entry, Owner, StateFile};
use crate::{Backend, FirewallError, Rule};

/// `--backend auto|iptables|nftables|ufw|nixos`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    #[default]
    Auto,
    Backend(Backend),
}

impl std::str::FromStr for Choice {
    type Err = FirewallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") || s.trim().is_empty() {
            Ok(Choice::Auto)
        } else {
            s.parse().map(Choice::Backend)
        }
    }
}

/// What `open` did, with what detection found (for `auto`).
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub backend: Option<Backend>,
    pub detection: Option<Detection>,
    pub outcome: OpenOutcome,
}

/// What `close` did.
#[derive(Debug, Clone)]
pub struct CloseReport {
    pub backend: Option<Backend>,
    pub detection: Option<Detection>,
    pub outcome: CloseOutcome,
}

/// What `status` found.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub backend: Option<Backend>,
    pub detection: Option<Detection>,
    pub status: Option<PortStatus>,
    /// What the state file says kiln opened for this port (all namespaces).
    pub recorded: Vec<Entry>,
}

/// Firewall operations with their bookkeeping.
pub struct Firewall<R: Runner = SystemRunner> {
    runner: R,
    state: StateFile,
    require_root: bool,
}

impl Firewall<SystemRunner> {
    /// The real tools and the default state file.
    pub fn system() -> Self {
        Firewall {
            runner: SystemRunner,
            state: StateFile::default_location(),
            require_root: true,
        }
    }
}

impl<R: Runner> Firewall<R> {
    /// A custom runner and state file (tests). `require_root: false` skips the root check.
    pub fn new(runner: R, state: StateFile, require_root: bool) -> Self {
        Firewall {
            runner,
            state,
            require_root,
        }
    }

    pub fn state(&self) -> &StateFile {
        &self.state
    }

    fn check_root(&self) -> Result<(), FirewallError> {
        if self.require_root && !crate::is_root() {
            return Err(FirewallError::NotRoot);
        }
        Ok(())
    }

    /// Resolves `auto` by detection; an explicit backend is only checked for its tool.
    pub fn resolve(
        &self,
        choice: Choice,
    ) -> Result<(Option<Backend>, Option<Detection>), FirewallError> {
        self.check_root()?;
        match choice {
            Choice::Backend(b) => {
                backend::preflight(&self.runner, b)?;
                Ok((Some(b), None))
            }
            Choice::Auto => {
                let d = detect(&self.runner)?;
                Ok((d.backend, Some(d)))
            }
        }
    }

    /// Opens `rule` and records it (owner: who to blame when it is left behind).
    pub fn open(
        &self,
        choice: Choice,
        rule: &Rule,
        owner: Owner,
    ) -> Result<OpenReport, FirewallError> {
        rule.validate()?;
        let (backend, detection) = self.resolve(choice)?;
        let Some(b) = backend else {
            let detail = detection
                .as_ref()
                .map(|d| d.findings.join("; "))
                .unwrap_or_else(|| "no firewall found".to_string());
            return Ok(OpenReport {
                backend: None,
                detection,
                outcome: OpenOutcome::NotFiltered { detail },
            });
        };
        // NixOS cannot list temporary rules: the state file is the only memory of an earlier open
        if b == Backend::Nixos && self.state.entries()?.iter().any(|e| e.same_rule(b, rule)) {
            return Ok(OpenReport {
                backend,
                detection,
                outcome: OpenOutcome::AlreadyOpen,
            });
        }
        let outcome = backend::open(&self.runner, b, rule)?;
        if matches!(outcome, OpenOutcome::Opened { .. }) {
            self.state.add(Entry {
                backend: b,
                rule: rule.clone(),
                owner,
                netns: current_netns(),
                opened_at: now_secs(),
            })?;
        }
        Ok(OpenReport {
            backend,
            detection,
            outcome,
        })
    }

    /// Closes `rule`. With `auto`, the backend kiln recorded for this rule is used first.
    pub fn close(&self, choice: Choice, rule: &Rule) -> Result<CloseReport, FirewallError> {
        rule.validate()?;
        let recorded = self
            .state
            .entries()?
            .into_iter()
            .find(|e| e.rule == *rule && e.netns == current_netns())
            .map(|e| e.backend);
        let choice = match (choice, recorded) {
            (Choice::Auto, Some(b)) => Choice::Backend(b),
            (c, _) => c,
        };
        let (backend, detection) = self.resolve(choice)?;
        let Some(b) = backend else {
            return Ok(CloseReport {
                backend: None,
                detection,
                outcome: CloseOutcome::NotOpen,
            });
        };
        // NixOS: reset only when kiln opened something there (it drops every temporary rule)
        if b == Backend::Nixos && self.state.remove(b, rule)?.is_none() {
            return Ok(CloseReport {
                backend,
                detection,
                outcome: CloseOutcome::NotOpen,
            });
        }
        let outcome = backend::close(&self.runner, b, rule)?;
        self.state.remove(b, rule)?;
        Ok(CloseReport {
            backend,
            detection,
            outcome,
        })
    }

    /// `kiln port status`
    pub fn status(&self, choice: Choice, rule: &Rule) -> Result<StatusReport, FirewallError> {
        let (backend, detection) = self.resolve(choice)?;
        let status = match backend {
            Some(b) => Some(backend::status(&self.runner, b, rule)?),
            None => None,
        };
        let recorded = self
            .state
            .entries()?
            .into_iter()
            .filter(|e| e.rule.port == rule.port)
            .collect();
        Ok(StatusReport {
            backend,
            detection,
            status,
            recorded,
        })
    }

    /// Closes every rule whose build process is gone (this namespace only).
    pub fn close_stale(&self) -> Result<Vec<(Entry, CloseOutcome)>, FirewallError> {
        let stale = self.state.stale()?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        self.check_root()?;
        let mut done = Vec::new();
        for e in stale {
            let outcome = backend::close(&self.runner, e.backend, &e.rule)?;
            self.state.remove(e.backend, &e.rule)?;
            done.push((e, outcome));
        }
        Ok(done)
    }
}

/// What a build opened, closed again by [`BuildGuard::close`] or, failing that, on drop.
pub struct BuildGuard {
    fw: Firewall<SystemRunner>,
    opened: Option<(Backend, Rule)>,
    pub report: OpenReport,
}

impl BuildGuard {
    /// Closes stale rules of dead builds, then opens `rule` for this process.
    pub fn open(
        choice: Choice,
        rule: Rule,
    ) -> Result<(BuildGuard, Vec<(Entry, CloseOutcome)>), FirewallError> {
        let fw = Firewall::system();
        let stale = fw.close_stale()?;
        let report = fw.open(choice, &rule, Owner::this_process())?;
        let opened = match (&report.outcome, report.backend) {
            (OpenOutcome::Opened { .. }, Some(b)) => Some((b, rule)),
            _ => None,
        };
        Ok((BuildGuard { fw, opened, report }, stale))
    }

    /// The note to show before closing (NixOS resets every temporary rule).
    pub fn close_note(&self) -> Option<&'static str> {
        matches!(self.opened, Some((Backend::Nixos, _))).then_some(NIXOS_RESET_NOTE)
    }

    /// Closes what this guard opened (nothing if it opened nothing).
    pub fn close(mut self) -> Result<Option<CloseOutcome>, FirewallError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<Option<CloseOutcome>, FirewallError> {
        match self.opened.take() {
            Some((b, rule)) => Ok(Some(self.fw.close(Choice::Backend(b), &rule)?.outcome)),
            None => Ok(None),
        }
    }
}

impl Drop for BuildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!("could not close the firewall port kiln opened: {e} (run `kiln port close --stale`)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRunner;
    use crate::Proto;

    #[test]
    fn nixos_open_is_idempotent_and_close_resets_only_when_kiln_opened() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::at(dir.path().join("fw.json"));
        let fw = Firewall::new(FakeRunner::default(), state, false);
        let rule = Rule::new(8888, Proto::Tcp);
        let nixos = Choice::Backend(Backend::Nixos);

        // nothing opened yet: close must not reset anybody's rules
        assert_eq!(
            fw.close(nixos, &rule).unwrap().outcome,
            CloseOutcome::NotOpen
        );
        assert!(matches!(
            fw.open(nixos, &rule, Owner::Manual).unwrap().outcome,
            OpenOutcome::Opened { .. }
        ));
        assert_eq!(
            fw.open(nixos, &rule, Owner::Manual).unwrap().outcome,
            OpenOutcome::AlreadyOpen
        );
        assert!(matches!(
            fw.close(nixos, &rule).unwrap().outcome,
            CloseOutcome::Closed { .. }
        ));
        assert_eq!(
            fw.runner.calls(),
            vec![
                "nixos-firewall-tool open tcp 8888",
                "nixos-firewall-tool reset"
            ]
        );
    }

    #[test]
    fn auto_with_nothing_filtering_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = FakeRunner::default()
            .answer("ufw status", 0, "Status: inactive\n")
            .answer("iptables -S INPUT", 0, "-P INPUT ACCEPT\n")
            .answer("nft -j -a list ruleset", 0, r#"{"nftables":[]}"#);
        let fw = Firewall::new(r, StateFile::at(dir.path().join("fw.json")), false);
        let rep = fw
            .open(Choice::Auto, &Rule::new(8888, Proto::Tcp), Owner::Manual)
            .unwrap();
        assert!(rep.backend.is_none());
        assert!(matches!(rep.outcome, OpenOutcome::NotFiltered { .. }));
        assert!(fw.state.entries().unwrap().is_empty());
        assert!(fw
            .runner
            .calls()
            .iter()
            .all(|c| !c.contains("-I") && !c.contains("allow")));
    }

    #[test]
    fn choice_parses() {
        assert_eq!("auto".parse::<Choice>().unwrap(), Choice::Auto);
        assert_eq!(
            "UFW".parse::<Choice>().unwrap(),
            Choice::Backend(Backend::Ufw)
        );
        assert!("pf".parse::<Choice>().is_err());
    }
}
