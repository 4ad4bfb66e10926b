//! kiln-bootcmd: the `boot_command` language of Packer, for Proxmox VE.
//!
//! Two steps, in Packer's order: [`gotmpl::render`] fills in `{{ .HTTPIP }}`
//! and friends, then [`keys::parse`] turns the text into `sendkey` key
//! chords and waits. [`plan`] does both for a `boot_command` list and maps
//! error offsets back to the list entry.
//!
//! ```
//! use kiln_bootcmd::{gotmpl::Data, plan, Action};
//! use std::time::Duration;
//! let data = Data::new().with("HTTPIP", "10.0.2.2").with("HTTPPort", 8888);
//! let p = plan(&["<esc><wait>".into(), "ds=http://{{ .HTTPIP }}:{{ .HTTPPort }}/<enter>".into()],
//!              &data, Duration::from_millis(5)).unwrap();
//! assert_eq!(p.steps[0].action, Action::Key("esc".into()));
//! assert_eq!(p.key_count(), 1 + 24 + 1); // esc, 24 characters, enter
//! ```

pub mod duration;
pub mod gotmpl;
pub mod keys;
pub mod qcodes;

pub use keys::{parse, parse_steps, Action, ParseError, Step};

use std::time::Duration;

/// A boot command ready to type: steps with their source positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Keys and waits, in order.
    pub steps: Vec<PlanStep>,
    /// Pause after each key (`boot_key_interval`).
    pub key_interval: Duration,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// Key or wait.
    pub action: Action,
    /// Index of the `boot_command` entry it came from.
    pub entry: usize,
}

impl Plan {
    /// Number of `sendkey` calls.
    pub fn key_count(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.action, Action::Key(_)))
            .count()
    }
    /// Sum of explicit waits and key intervals (excluding HTTP round trips).
    pub fn min_duration(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| match &s.action {
                Action::Wait(d) => *d,
                Action::Key(_) => self.key_interval,
            })
            .sum()
    }
}

/// A boot command that cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `{{ … }}` problem.
    #[error("boot_command[{entry}]: {message} (at column {column}: {excerpt:?})")]
    Template {
        /// Entry index.
        entry: usize,
        /// 1-based column (in characters) within the entry.
        column: usize,
        /// The text around the problem.
        excerpt: String,
        /// What is wrong.
        message: String,
    },
    /// A key-grammar problem.
    #[error("boot_command[{entry}]: {message} (at column {column}: {excerpt:?})")]
    Keys {
        /// Entry index (of the rendered text).
        entry: usize,
        /// 1-based column (in characters) within the rendered entry.
        column: usize,
        /// The text around the problem.
        excerpt: String,
        /// What is wrong.
        message: String,
    },
}

fn locate(entries: &[String], offset: usize) -> (usize, usize, String) {
    let mut start = 0;
    for (i, e) in entries.iter().enumerate() {
        if offset < start + e.len() || i + 1 == entries.len() {
            let local = offset.saturating_sub(start).min(e.len());
            let local = (0..=local)
                .rev()
                .find(|&k| e.is_char_boundary(k))
                .unwrap_or(0);
            let col = e[..local].chars().count() + 1;
            let excerpt: String = e[local..].chars().take(20).collect();
            return (i, col, excerpt);
        }
        start += e.len();
    }
    (0, 1, String::new())
}

/// Render each entry with `data`, join them (Packer joins with no
/// separator) and parse. Errors name the entry and column.
pub fn plan(
    commands: &[String],
    data: &dyn gotmpl::Lookup,
    key_interval: Duration,
) -> Result<Plan, PlanError> {
    // Render per entry so template offsets map to the entry directly. Packer
    // renders the joined string, so an action split across entries
    // (`"{{ .HTTP", "IP }}"`) still works there: fall back to that.
    let mut rendered = Vec::with_capacity(commands.len());
    let mut first_err = None;
    for (i, c) in commands.iter().enumerate() {
        match gotmpl::render(c, data) {
            Ok(r) => rendered.push(r),
            Err(e) => {
                let (_, column, excerpt) = locate(std::slice::from_ref(c), e.offset);
                first_err = Some(PlanError::Template {
                    entry: i,
                    column,
                    excerpt,
                    message: e.message,
                });
                break;
            }
        }
    }
    if let Some(err) = first_err {
        match gotmpl::render(&commands.concat(), data) {
            Ok(joined) => rendered = vec![joined],
            // an error inside one entry is reported as found there
            Err(_) if !matches!(&err, PlanError::Template { message, .. } if message.starts_with("unclosed")) => {
                return Err(err)
            }
            Err(e) => {
                let (entry, column, excerpt) = locate(commands, e.offset);
                return Err(PlanError::Template {
                    entry,
                    column,
                    excerpt,
                    message: e.message,
                });
            }
        }
    }
    let joined: String = rendered.concat();
    let steps = keys::parse_steps(&joined).map_err(|e| {
        let (entry, column, excerpt) = locate(&rendered, e.offset);
        PlanError::Keys {
            entry,
            column,
            excerpt,
            message: e.message,
        }
    })?;
    let mut bounds = Vec::with_capacity(rendered.len());
    let mut acc = 0;
    for r in &rendered {
        acc += r.len();
        bounds.push(acc);
    }
    let steps = steps
        .into_iter()
        .map(|s| PlanStep {
            entry: bounds
                .iter()
                .position(|&b| s.offset < b)
                .unwrap_or(bounds.len().saturating_sub(1)),
            action: s.action,
        })
        .collect();
    Ok(Plan {
        steps,
        key_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gotmpl::Data;

    #[test]
    fn plan_maps_entries_and_errors() {
        let d = Data::new()
            .with("HTTPIP", "10.0.2.2")
            .with("HTTPPort", 8888);
        let p = plan(
            &["a<wait2>".into(), "b".into()],
            &d,
            Duration::from_millis(10),
        )
        .unwrap();
        assert_eq!(
            p.steps.iter().map(|s| s.entry).collect::<Vec<_>>(),
            vec![0, 0, 1]
        );
        assert_eq!(p.key_count(), 2);
        assert_eq!(p.min_duration(), Duration::from_millis(2020));

        let e = plan(&["ok".into(), "x {{ .Nope }}".into()], &d, Duration::ZERO).unwrap_err();
        match &e {
            PlanError::Template { entry, column, .. } => assert_eq!((*entry, *column), (1, 6)),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("boot_command[1]"), "{e}");

        let e = plan(&["ok".into(), "ab<wait-1s>".into()], &d, Duration::ZERO).unwrap_err();
        match e {
            PlanError::Keys { entry, column, .. } => assert_eq!((entry, column), (1, 3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn template_split_across_entries_renders_like_packer() {
        let d = Data::new().with("HTTPIP", "10.0.2.2");
        let p = plan(&["a{{ .HTT".into(), "PIP }}b".into()], &d, Duration::ZERO).unwrap();
        assert_eq!(p.key_count(), 10);
        let e = plan(&["a{{ .HTT".into(), "PIPX }}b".into()], &d, Duration::ZERO).unwrap_err();
        assert!(
            matches!(&e, PlanError::Template { entry: 0, column: 5, message, .. } if message.contains(".HTTPIPX")),
            "{e:?}"
        );
    }

    #[test]
    fn tag_split_across_entries_still_parses() {
        // Packer joins before parsing, so a tag may span entries.
        let d = Data::new();
        let p = plan(&["<ent".into(), "er>".into()], &d, Duration::ZERO).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].action, Action::Key("ret".into()));
    }
}
