//! Running the firewall tools. A trait so that unit tests can check the exact command lines.

use crate::FirewallError;
use std::path::Path;
use std::process::Command;

/// What a finished command printed.
#[derive(Debug, Clone, Default)]
pub struct CmdOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs a program with arguments (never through a shell).
pub trait Runner {
    /// Runs `program args…` and returns its output, whatever its exit code.
    fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, FirewallError>;
    /// Whether `program` can be found on PATH.
    fn has(&self, program: &str) -> bool;
    /// Whether a file exists (detection looks at `/etc/NIXOS`); a method so tests can fake it.
    fn file_exists(&self, path: &str) -> bool {
        Path::new(path).exists()
    }

    /// Runs and fails with [`FirewallError::Command`] on a non-zero exit.
    fn run_ok(&self, program: &str, args: &[&str]) -> Result<CmdOutput, FirewallError> {
        let out = self.run(program, args)?;
        if !out.success() {
            return Err(FirewallError::Command {
                command: render(program, args),
                code: out.code,
                stderr: out.stderr.trim().to_string(),
            });
        }
        Ok(out)
    }
}

/// The command line as a user would type it, for messages.
pub fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Runs the real programs.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, FirewallError> {
        tracing::debug!(command = %render(program, args), "firewall");
        let out = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| FirewallError::Spawn {
                program: program.to_string(),
                source,
            })?;
        Ok(CmdOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn has(&self, program: &str) -> bool {
        let Some(path) = std::env::var_os("PATH") else {
            return false;
        };
        std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
            // iptables & co live in /usr/sbin, which a non-login root shell may lack on PATH
            || ["/usr/sbin", "/sbin"].iter().any(|d| is_executable(&Path::new(d).join(program)))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted runner for unit tests: answers by command prefix and records every call.
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct FakeRunner {
        /// (command prefix, output, how many more times it may answer: None = always)
        pub answers: Vec<(String, CmdOutput, std::cell::Cell<Option<u32>>)>,
        pub calls: RefCell<Vec<String>>,
        pub missing: Vec<String>,
        pub files: Vec<String>,
    }

    impl FakeRunner {
        pub fn answer(mut self, prefix: &str, code: i32, stdout: &str) -> Self {
            let out = CmdOutput {
                code,
                stdout: stdout.to_string(),
                stderr: String::new(),
            };
            self.answers
                .push((prefix.to_string(), out, std::cell::Cell::new(None)));
            self
        }
        /// Like `answer`, but only for the next `times` matching calls; it wins over `answer`s.
        pub fn answer_times(mut self, prefix: &str, times: u32, code: i32, stdout: &str) -> Self {
            let out = CmdOutput {
                code,
                stdout: stdout.to_string(),
                stderr: String::new(),
            };
            self.answers
                .push((prefix.to_string(), out, std::cell::Cell::new(Some(times))));
            self
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Runner for FakeRunner {
        fn run(&self, program: &str, args: &[&str]) -> Result<CmdOutput, FirewallError> {
            let line = render(program, args);
            self.calls.borrow_mut().push(line.clone());
            // the longest matching prefix wins, so specific answers override general ones
            let best = self
                .answers
                .iter()
                .filter(|(p, _, left)| line.starts_with(p.as_str()) && left.get() != Some(0))
                .max_by_key(|(p, _, left)| (left.get().is_some(), p.len()));
            Ok(best
                .map(|(_, o, left)| {
                    if let Some(n) = left.get() {
                        left.set(Some(n - 1));
                    }
                    o.clone()
                })
                .unwrap_or_default())
        }
        fn has(&self, program: &str) -> bool {
            !self.missing.iter().any(|m| m == program)
        }
        fn file_exists(&self, path: &str) -> bool {
            self.files.iter().any(|f| f == path)
        }
    }
}
