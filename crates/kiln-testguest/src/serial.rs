//! Watch QEMU's serial log file (`-chardev file,id=ser0,path=…,append=on -serial chardev:ser0`)
//! for markers.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct SerialLog {
    path: PathBuf,
}

impl SerialLog {
    pub fn new(path: &Path) -> SerialLog {
        SerialLog {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything written so far (lossy UTF-8; empty before QEMU created the file).
    pub fn text(&self) -> String {
        std::fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How often `needle` occurs so far.
    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// Wait until `done(text)` is true; `alive()` returning false aborts early (e.g. QEMU exited).
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if done(&self.text()) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("{what} on serial ({})", self.path.display()),
                    secs: timeout.as_secs_f64(),
                });
            }
            if !alive() {
                // one last look: the marker may have been written just before the exit
                if done(&self.text()) {
                    return Ok(start.elapsed());
                }
                return Err(Error::Command {
                    cmd: "qemu".into(),
                    detail: format!("exited while waiting for {what} on serial"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the `n`-th occurrence of `needle`.
    pub fn wait_for(
        &self,
        needle: &str,
        n: usize,
        timeout: Duration,
        alive: impl FnMut() -> bool,
    ) -> Result<Duration> {
        self.wait_until(needle, timeout, alive, |t| t.matches(needle).count() >= n)
    }

    /// The last line containing `needle`, without escape sequences.
    pub fn line_with(&self, needle: &str) -> Option<String> {
        self.text()
            .lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().to_string())
    }
}
