//! Open and close kiln's HTTP port in the host firewall.
//!
//! The guest fetches its cloud-init files from kiln's HTTP server, so the build host's firewall must let
//! that port in. This crate knows four backends and changes only what it added itself:
//!
//! | backend | open | close |
//! |---|---|---|
//! | iptables (+ ip6tables) | `-I INPUT 1 -p tcp -m tcp --dport N -m comment --comment kiln -j ACCEPT` | `-D INPUT` of exactly that rule |
//! | nftables | `insert rule <family> <table> <chain> tcp dport N accept comment "kiln"` in every input base chain that filters | `delete rule … handle H` of the rules carrying kiln's comment |
//! | ufw | `ufw allow N/tcp comment kiln` | `ufw delete allow N/tcp` (only when the rule carries kiln's comment) |
//! | NixOS | `nixos-firewall-tool open tcp N` | `nixos-firewall-tool reset` (drops every temporary rule: said before doing it) |
//!
//! Why insert rather than append (iptables) and why not a table of kiln's own (nftables): an appended
//! rule lands after a trailing `-j REJECT` and does nothing; and nftables evaluates every base chain
//! hooked on input, so an `accept` in a separate table cannot undo another table's `drop`. One commented
//! rule at the head of the filtering chain is the smallest change that works, and it is removed exactly.
//!
//! Every change is recorded in a state file ([`state`]) so that a crashed build's rule can be closed
//! later (`kiln port close --stale`).

pub mod backend;
pub mod detect;
pub mod runner;
pub mod session;
pub mod state;

use std::fmt;

pub use backend::{close, open, status, CloseOutcome, OpenOutcome, PortStatus};
pub use detect::{detect, Detection};
pub use runner::{CmdOutput, Runner, SystemRunner};
pub use session::{BuildGuard, Choice, CloseReport, Firewall, OpenReport, StatusReport};
pub use state::{Owner, StateFile};

/// The firewall kiln talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Iptables,
    Nftables,
    Ufw,
    Nixos,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Iptables,
        Backend::Nftables,
        Backend::Ufw,
        Backend::Nixos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
            Backend::Ufw => "ufw",
            Backend::Nixos => "nixos",
        }
    }

    /// The program this backend runs, for "missing tool" messages.
    pub fn program(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nft",
            Backend::Ufw => "ufw",
            Backend::Nixos => "nixos-firewall-tool",
        }
    }

    /// How to get the program on Debian/Ubuntu (or where it comes from).
    pub fn install_hint(self) -> &'static str {
        match self {
            Backend::Iptables => "apt-get install iptables",
            Backend::Nftables => "apt-get install nftables",
            Backend::Ufw => "apt-get install ufw",
            Backend::Nixos => "it ships with NixOS (networking.firewall.enable = true)",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = FirewallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| FirewallError::UnknownBackend(s.to_string()))
    }
}

/// Transport protocol of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Proto {
    type Err = FirewallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(FirewallError::UnknownProto(other.to_string())),
        }
    }
}

/// One "let this port in" rule, marked with a comment so kiln only ever removes its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub port: u16,
    pub proto: Proto,
    pub comment: String,
}

impl Rule {
    /// The default comment that marks kiln's rules.
    pub const DEFAULT_COMMENT: &'static str = "kiln";

    pub fn new(port: u16, proto: Proto) -> Self {
        Rule {
            port,
            proto,
            comment: Self::DEFAULT_COMMENT.to_string(),
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
        self
    }

    /// Comments end up in shell-less argv and in nft's quoted strings: keep them to a safe alphabet.
    pub fn validate(&self) -> Result<(), FirewallError> {
        let ok = !self.comment.is_empty()
            && self.comment.len() <= 64
            && self
                .comment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:@ ".contains(c));
        if !ok {
            return Err(FirewallError::BadComment(self.comment.clone()));
        }
        if self.port == 0 {
            return Err(FirewallError::BadPort);
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (comment \"{}\")",
            self.port, self.proto, self.comment
        )
    }
}

/// What can go wrong. Nothing is changed when one of these is returned before a change started.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// Changing the firewall needs root.
    #[error("changing the firewall needs root (CAP_NET_ADMIN); nothing was changed\n  hint: run `sudo kiln port …`, or open the port yourself")]
    NotRoot,
    /// The backend's program is not installed.
    #[error("`{program}` was not found on PATH, so the {backend} backend cannot be used; nothing was changed\n  hint: {hint}, or choose another backend with --backend")]
    MissingTool {
        backend: Backend,
        program: &'static str,
        hint: &'static str,
    },
    /// A firewall command failed.
    #[error("`{command}` failed (exit {code}): {stderr}")]
    Command {
        command: String,
        code: i32,
        stderr: String,
    },
    /// A command could not be started at all.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The output of a firewall tool was not what kiln expects.
    #[error("cannot read the output of `{command}`: {detail}")]
    Parse { command: String, detail: String },
    #[error(
        "unknown firewall backend \"{0}\"\n  hint: use auto, iptables, nftables, ufw or nixos"
    )]
    UnknownBackend(String),
    #[error("unknown protocol \"{0}\"\n  hint: use tcp or udp")]
    UnknownProto(String),
    #[error("the rule comment \"{0}\" is not allowed\n  hint: up to 64 letters, digits, spaces and -_.:@")]
    BadComment(String),
    #[error("port 0 cannot be opened\n  hint: pass --port N (1-65535)")]
    BadPort,
    /// The state file could not be read or written.
    #[error("firewall state file {path}: {detail}")]
    State { path: String, detail: String },
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    euid == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().ok(), Some(b));
        }
        assert!("pf".parse::<Backend>().is_err());
    }

    #[test]
    fn comments_are_restricted() {
        assert!(Rule::new(8888, Proto::Tcp).validate().is_ok());
        assert!(Rule::new(8888, Proto::Tcp)
            .with_comment("kiln build 42")
            .validate()
            .is_ok());
        assert!(Rule::new(8888, Proto::Tcp)
            .with_comment("a\"; drop")
            .validate()
            .is_err());
        assert!(Rule::new(8888, Proto::Tcp)
            .with_comment("")
            .validate()
            .is_err());
        assert!(Rule::new(0, Proto::Tcp).validate().is_err());
    }
}
