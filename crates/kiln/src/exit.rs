//! The exit-code contract: 0 ok, 1 build/validation failed, 2 usage error, 130 interrupted.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything worked.
    Ok,
    /// The build or the validation failed.
    Failed,
    /// The command line or its arguments were wrong.
    Usage,
    /// Interrupted by Ctrl-C / SIGINT (after cleanup).
    Interrupted,
}

impl Code {
    pub fn as_u8(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::Failed => 1,
            Code::Usage => 2,
            Code::Interrupted => 130,
        }
    }
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c.as_u8())
    }
}

/// What every subcommand returns: an exit code, or a report printed by `main` (exit 1).
pub type CmdResult = miette::Result<Code>;
