//! The record of the rules kiln opened, so that a crashed build cannot leave one forever.
//!
//! A JSON file (`/var/lib/kiln/firewall.json` for root, `$XDG_STATE_HOME/kiln/firewall.json` otherwise,
//! `$KILN_STATE_DIR/firewall.json` when set), changed under an exclusive `flock` and replaced atomically.
//! A rule opened by a build records the build's pid and the process start time (pids are reused); when
//! that process is gone the rule is stale and `kiln port close --stale` (and the next build) closes it.
//! Rules opened by hand with `kiln port open` stay until `kiln port close`. Each entry also records the
//! network namespace it was opened in, so that a run in one namespace never touches another's rules.

use crate::{Backend, FirewallError, Rule};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Who opened a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Owner {
    /// `kiln port open`: stays open until `kiln port close`.
    Manual,
    /// A build: stale once that process is gone.
    Build { pid: u32, start_time: u64 },
}

impl Owner {
    /// The current process, as a build owner.
    pub fn this_process() -> Owner {
        let pid = std::process::id();
        Owner::Build {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
        }
    }

    /// A build owner whose process no longer runs.
    pub fn is_gone(&self) -> bool {
        match self {
            Owner::Manual => false,
            Owner::Build { pid, start_time } => process_start_time(*pid) != Some(*start_time),
        }
    }
}

/// One rule kiln opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub backend: Backend,
    pub rule: Rule,
    pub owner: Owner,
    /// inode of /proc/self/ns/net when it was opened
    pub netns: u64,
    /// seconds since the Unix epoch
    pub opened_at: u64,
}

impl Entry {
    pub fn same_rule(&self, backend: Backend, rule: &Rule) -> bool {
        self.backend == backend && self.rule == *rule && self.netns == current_netns()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    version: u32,
    entries: Vec<Entry>,
}

/// The state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// The default location (see the module docs).
    pub fn default_location() -> Self {
        let dir = if let Some(d) = std::env::var_os("KILN_STATE_DIR") {
            PathBuf::from(d)
        } else if crate::is_root() {
            PathBuf::from("/var/lib/kiln")
        } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            PathBuf::from(d).join("kiln")
        } else if let Some(h) = std::env::var_os("HOME") {
            PathBuf::from(h).join(".local/state/kiln")
        } else {
            PathBuf::from("/tmp/kiln-state")
        };
        StateFile {
            path: dir.join("firewall.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All entries (of every namespace).
    pub fn entries(&self) -> Result<Vec<Entry>, FirewallError> {
        self.locked(|c| Ok((c.entries.clone(), false)))
    }

    /// Records an opened rule (replacing a record of the same rule in this namespace).
    pub fn add(&self, e: Entry) -> Result<(), FirewallError> {
        self.locked(|c| {
            c.entries
                .retain(|x| !(x.backend == e.backend && x.rule == e.rule && x.netns == e.netns));
            c.entries.push(e.clone());
            Ok(((), true))
        })
    }

    /// Forgets a rule of this namespace; returns the removed entry if there was one.
    pub fn remove(&self, backend: Backend, rule: &Rule) -> Result<Option<Entry>, FirewallError> {
        self.locked(|c| {
            let pos = c.entries.iter().position(|x| x.same_rule(backend, rule));
            Ok(match pos {
                Some(i) => (Some(c.entries.remove(i)), true),
                None => (None, false),
            })
        })
    }

    /// Entries of this namespace whose build process is gone.
    pub fn stale(&self) -> Result<Vec<Entry>, FirewallError> {
        let ns = current_netns();
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.netns == ns && e.owner.is_gone())
            .collect())
    }

    fn err(&self, detail: impl ToString) -> FirewallError {
        FirewallError::State {
            path: self.path.display().to_string(),
            detail: detail.to_string(),
        }
    }

    /// Runs `f` on the contents under an exclusive lock; writes them back when `f` says they changed.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut Contents) -> Result<(T, bool), FirewallError>,
    ) -> Result<T, FirewallError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .map_err(|e| self.err(format!("cannot create {}: {e}", dir.display())))?;
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.err(format!("cannot open lock {}: {e}", lock_path.display())))?;
        flock(&lock).map_err(|e| self.err(format!("cannot lock: {e}")))?;
        let mut contents = match File::open(&self.path) {
            Ok(mut file) => {
                let mut s = String::new();
                file.read_to_string(&mut s).map_err(|e| self.err(e))?;
                if s.trim().is_empty() {
                    Contents::default()
                } else {
                    serde_json::from_str(&s).map_err(|e| {
                        self.err(format!(
                            "unreadable ({e}); delete it after checking the rules by hand"
                        ))
                    })?
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(self.err(e)),
        };
        let (out, changed) = f(&mut contents)?;
        if changed {
            contents.version = 1;
            let tmp = self.path.with_extension("json.tmp");
            let json = serde_json::to_string_pretty(&contents).map_err(|e| self.err(e))?;
            let mut file = File::create(&tmp).map_err(|e| self.err(e))?;
            file.write_all(json.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| self.err(e))?;
            fs::rename(&tmp, &self.path).map_err(|e| self.err(e))?;
        }
        Ok(out)
        // the lock is released when `lock` is dropped
    }
}

fn flock(f: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open file descriptor owned by `f` for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The inode of this process's network namespace (0 when /proc is unavailable).
pub fn current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Field 22 of /proc/PID/stat: the process start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name (field 2) is in parentheses and may contain spaces: split after the last ')'
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Proto;

    fn entry(owner: Owner) -> Entry {
        Entry {
            backend: Backend::Iptables,
            rule: Rule::new(8888, Proto::Tcp),
            owner,
            netns: current_netns(),
            opened_at: now_secs(),
        }
    }

    #[test]
    fn add_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateFile::at(dir.path().join("firewall.json"));
        assert!(st.entries().unwrap().is_empty());
        st.add(entry(Owner::Manual)).unwrap();
        st.add(entry(Owner::Manual)).unwrap(); // same rule: replaced, not duplicated
        assert_eq!(st.entries().unwrap().len(), 1);
        let removed = st
            .remove(Backend::Iptables, &Rule::new(8888, Proto::Tcp))
            .unwrap();
        assert!(removed.is_some());
        assert!(st.entries().unwrap().is_empty());
    }

    #[test]
    fn dead_build_owner_is_stale_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateFile::at(dir.path().join("firewall.json"));
        st.add(entry(Owner::this_process())).unwrap();
        assert!(st.stale().unwrap().is_empty(), "this process is alive");

        // a finished child process: its pid is gone (or reused with another start time)
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_time(pid).unwrap_or(1);
        child.wait().unwrap();
        let mut e = entry(Owner::Build {
            pid,
            start_time: start,
        });
        e.rule.port = 9999;
        st.add(e).unwrap();
        let stale = st.stale().unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].rule.port, 9999);
    }

    #[test]
    fn manual_rules_are_never_stale() {
        assert!(!Owner::Manual.is_gone());
        assert!(!Owner::this_process().is_gone());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firewall.json");
        fs::write(&path, "{not json").unwrap();
        let e = StateFile::at(&path).entries().unwrap_err();
        assert!(e.to_string().contains("unreadable"), "{e}");
    }
}
