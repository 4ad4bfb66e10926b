//! Typed errors. The split that matters for retries:
//!
//! * [`Error::NotSent`] / [`Error::Tls`]: the request never reached PVE
//!   (connection refused, DNS, TLS handshake): always safe to retry;
//! * [`Error::MaybeProcessed`]: the request was (or may have been) sent and
//!   the answer was lost (timeout, connection dropped): PVE may have acted;
//! * [`Error::Api`]: PVE answered with an error status.

use crate::upid::Upid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to PVE.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured URL cannot be used.
    #[error("invalid Proxmox URL {url:?}: {reason}")]
    InvalidUrl {
        /// URL as given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A client option is invalid (bad fingerprint, unreadable CA file, ...).
    #[error("{0}")]
    InvalidOption(String),
    /// The request did not reach the server. Safe to retry.
    #[error("{method} {url}: could not reach Proxmox VE: {reason}")]
    NotSent {
        /// HTTP method.
        method: String,
        /// URL (no secrets in it).
        url: String,
        /// Cause (connection refused, DNS, ...).
        reason: String,
    },
    /// The server's TLS certificate was rejected (request not sent).
    #[error("{}", tls_message(.url, .fingerprint.as_deref(), .reason))]
    Tls {
        /// URL.
        url: String,
        /// SHA-256 fingerprint of the server's leaf certificate (`AA:BB:…`), if seen.
        fingerprint: Option<String>,
        /// Why it was rejected.
        reason: String,
    },
    /// The request was sent (or may have been) but the answer was lost; PVE
    /// may have acted on it.
    #[error("{method} {url}: no complete answer from Proxmox VE ({reason}); the request may have been processed")]
    MaybeProcessed {
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// Cause (timeout, connection reset, ...).
        reason: String,
    },
    /// PVE answered with an error status.
    #[error("{0}")]
    Api(Box<ApiError>),
    /// A PVE task ended with an error exit status.
    #[error("{}", task_failed_message(.upid, .exitstatus, .log))]
    TaskFailed {
        /// The task.
        upid: Box<Upid>,
        /// PVE's exit status text (the error).
        exitstatus: String,
        /// Last lines of the task log.
        log: Vec<String>,
    },
    /// A task did not finish in time (it may still be running on PVE).
    #[error("task {upid} did not finish within {}s (still running on the node; raise task_timeout for large ISOs or slow storage)", .waited.as_secs())]
    TaskTimeout {
        /// The task.
        upid: Box<Upid>,
        /// How long we waited.
        waited: Duration,
    },
    /// PVE's answer could not be understood.
    #[error("{method} {url}: unexpected answer from Proxmox VE: {reason}")]
    Decode {
        /// HTTP method.
        method: String,
        /// URL.
        url: String,
        /// What did not parse.
        reason: String,
    },
    /// A local file (upload source, CA file) could not be read.
    #[error("{}: {source}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
}

fn tls_message(url: &str, fp: Option<&str>, reason: &str) -> String {
    let mut s = format!("TLS certificate of {url} rejected: {reason}");
    if let Some(fp) = fp {
        s.push_str(&format!(
            "\n  the server's certificate SHA-256 fingerprint is {fp}\n  \
             if that is your Proxmox node's certificate, pin it: proxmox_fingerprint = \"{fp}\" \
             (or PROXMOX_FINGERPRINT={fp}),\n  or provide its CA (pve-root-ca.pem), or skip verification \
             with insecure_skip_tls_verify = true (not recommended)"
        ));
    } else {
        s.push_str(
            "\n  pin the certificate with proxmox_fingerprint / PROXMOX_FINGERPRINT, provide its CA, \
             or skip verification with insecure_skip_tls_verify = true",
        );
    }
    s
}

fn task_failed_message(upid: &Upid, exitstatus: &str, log: &[String]) -> String {
    let mut s = format!(
        "Proxmox task {} ({} {}) failed: {exitstatus}",
        upid.task_type, upid.id, upid
    );
    if !log.is_empty() {
        s.push_str("\n  last lines of the task log:");
        for l in log {
            s.push_str("\n    ");
            s.push_str(l);
        }
    }
    s
}

impl Error {
    /// `true` when the request certainly did not reach PVE.
    pub fn is_not_sent(&self) -> bool {
        matches!(self, Error::NotSent { .. } | Error::Tls { .. })
    }
    /// `true` when PVE may have processed the request without us seeing the answer.
    pub fn is_maybe_processed(&self) -> bool {
        matches!(self, Error::MaybeProcessed { .. })
    }
    /// The API error, if PVE answered with an error status.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(a) => Some(a),
            _ => None,
        }
    }
    /// HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(Box::new(e))
    }
}

/// Which kind of API error this is (derived from status + message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 401 on login: wrong user, realm or password.
    BadCredentials,
    /// 401 otherwise: ticket expired/invalid, token unknown or secret wrong.
    Unauthenticated,
    /// 401 `invalid csrf token`.
    InvalidCsrf,
    /// 403 permission check failed.
    PermissionDenied,
    /// 400 parameter verification failed (see `errors`).
    InvalidParameters,
    /// 595: the PVE node we talk to could not connect to the target node.
    NodeUnreachable,
    /// 596: the connection to the target node broke (TLS, request sending).
    NodeConnectionBroken,
    /// 501: unknown path/method, body too large, chunked upload ...
    NotImplemented,
    /// 500 and other server errors (PVE's message says what).
    Server,
    /// Anything else.
    Other,
}

/// How the client was authenticated (for error hints; no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthContext {
    /// Ticket login as this user (`user@realm`).
    Password {
        /// User id as configured.
        username: String,
    },
    /// API token.
    Token {
        /// `user@realm!name`.
        token_id: String,
    },
}

/// An error status from PVE.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP method.
    pub method: String,
    /// API path (`/nodes/pve/qemu`), no secrets.
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// PVE's message (reason phrase or body `message`), trimmed.
    pub message: String,
    /// Per-parameter errors (`errors` member).
    pub errors: BTreeMap<String, String>,
    /// Classification.
    pub kind: ApiErrorKind,
    /// What to try, if we know.
    pub hint: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {} {}",
            self.method, self.path, self.status, self.message
        )?;
        for (k, v) in &self.errors {
            write!(f, "\n  {k}: {}", v.trim_end())?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

fn split_user(user: &str) -> (&str, Option<&str>) {
    match user.rsplit_once('@') {
        Some((u, r)) => (u, Some(r)),
        None => (user, None),
    }
}

/// Node name from an API path `/nodes/<node>/…`.
fn node_of(path: &str) -> Option<&str> {
    let mut it = path.trim_start_matches('/').split('/');
    if it.next()? == "nodes" {
        it.next().filter(|n| !n.is_empty())
    } else {
        None
    }
}

impl ApiError {
    /// Build an API error, classify it and attach a hint.
    pub fn new(
        method: &str,
        path: &str,
        status: u16,
        message: &str,
        errors: BTreeMap<String, String>,
        auth: Option<&AuthContext>,
    ) -> ApiError {
        let message = message.trim().to_string();
        let lower = message.to_ascii_lowercase();
        let is_login = path.trim_end_matches('/') == "/access/ticket" && method == "POST";
        let kind = match status {
            401 if lower.contains("csrf") => ApiErrorKind::InvalidCsrf,
            401 if is_login => ApiErrorKind::BadCredentials,
            401 => ApiErrorKind::Unauthenticated,
            403 => ApiErrorKind::PermissionDenied,
            400 => ApiErrorKind::InvalidParameters,
            595 => ApiErrorKind::NodeUnreachable,
            596 => ApiErrorKind::NodeConnectionBroken,
            501 => ApiErrorKind::NotImplemented,
            500..=599 => ApiErrorKind::Server,
            _ => ApiErrorKind::Other,
        };
        let hint = Self::hint_for(kind, path, &lower, auth);
        ApiError {
            method: method.to_string(),
            path: path.to_string(),
            status,
            message,
            errors,
            kind,
            hint,
        }
    }

    fn hint_for(
        kind: ApiErrorKind,
        path: &str,
        lower: &str,
        auth: Option<&AuthContext>,
    ) -> Option<String> {
        match kind {
            ApiErrorKind::BadCredentials | ApiErrorKind::Unauthenticated => match auth {
                Some(AuthContext::Password { username }) => {
                    let (user, realm) = split_user(username);
                    Some(match realm {
                        None => format!(
                            "username {username:?} has no realm: write it as user@realm, e.g. {user}@pam \
                             (Linux PAM users) or {user}@pve (Proxmox VE users)"
                        ),
                        Some(realm) => format!(
                            "authentication failed for user {user:?} in realm {realm:?}: check proxmox_username / \
                             PROXMOX_USERNAME (the realm is the part after '@': pam = Linux users, pve = Proxmox VE \
                             users) and the password (PROXMOX_PASSWORD)"
                        ),
                    })
                }
                Some(AuthContext::Token { token_id }) => Some(format!(
                    "the API token {token_id:?} was rejected: check the token id (user@realm!tokenname, see \
                     `pveum user token list <user>`) and its secret; the token may be deleted or expired"
                )),
                None => None,
            },
            ApiErrorKind::InvalidCsrf => Some(
                "the CSRF token was refused; the ticket is renewed and the request retried once".into(),
            ),
            ApiErrorKind::PermissionDenied => {
                let needed = lower
                    .find("permission check failed (")
                    .map(|i| &lower[i + 25..])
                    .and_then(|s| s.split(')').next())
                    .map(|s| format!(" (needed: {s})"))
                    .unwrap_or_default();
                match auth {
                    Some(AuthContext::Token { token_id }) => Some(format!(
                        "permission denied for API token {token_id:?}{needed}. Tokens created with privilege \
                         separation (privsep=1, the default) start with NO permissions: grant the token its own \
                         ACL (`pveum acl modify / --tokens '{token_id}' --roles PVEVMAdmin,PVEDatastoreUser`) \
                         or recreate it with `--privsep 0` to inherit the user's permissions"
                    )),
                    Some(AuthContext::Password { username }) => Some(format!(
                        "user {username:?} lacks a privilege{needed}: grant a role on the path \
                         (`pveum acl modify / --users {username} --roles PVEVMAdmin,PVEDatastoreUser`)"
                    )),
                    None => None,
                }
            }
            ApiErrorKind::NodeUnreachable => Some(format!(
                "the Proxmox node you connected to could not reach node {:?} (595 = connection could not be \
                 established). Check that `node` is the exact cluster node name (GET /nodes lists them) and that \
                 the node is online",
                node_of(path).unwrap_or("?")
            )),
            ApiErrorKind::NodeConnectionBroken => Some(format!(
                "the connection between the Proxmox node you connected to and node {:?} broke (596: TLS between \
                 cluster nodes, request sending, or pvedaemon too slow). kiln's TLS options do not affect this \
                 node-to-node hop: check the node name and the cluster certificates (`pvecm updatecerts`), or \
                 connect to that node directly",
                node_of(path).unwrap_or("?")
            )),
            ApiErrorKind::NotImplemented if lower.contains("data too large") => Some(
                "PVE refused the body size; for uploads check the storage name is not empty".into(),
            ),
            ApiErrorKind::Server if lower.contains("guest agent is not running") => Some(
                "install and enable qemu-guest-agent in the guest (and set qemu_agent = true), or set ssh_host"
                    .into(),
            ),
            ApiErrorKind::Server if lower.contains("can't lock file") => {
                Some("another task holds the VM lock; it is retried after the lock is released".into())
            }
            _ => None,
        }
    }

    /// 401 (any cause).
    pub fn is_unauthorized(&self) -> bool {
        self.status == 401
    }
    /// 403.
    pub fn is_forbidden(&self) -> bool {
        self.status == 403
    }
    /// 595/596: the PVE proxy could not talk to the target node.
    pub fn is_proxy_failure(&self) -> bool {
        matches!(self.status, 595 | 596)
    }
    /// The object is gone: `Configuration file '…' does not exist`, `no such
    /// VM`, `volume '…' does not exist`, `no such task` (useful to make
    /// cleanup idempotent).
    pub fn is_not_found(&self) -> bool {
        matches!(self.status, 400 | 404 | 500)
            && (self.message_contains("does not exist")
                || self.message_contains("no such")
                || self.errors.values().any(|v| v.contains("no such")))
    }
    /// Create conflict: `VM 100 already exists`, `refusing to override existing file`.
    pub fn is_already_exists(&self) -> bool {
        self.message_contains("already exists")
            || self.message_contains("refusing to override existing")
            || self.errors.values().any(|v| v.contains("already exists"))
    }
    /// A config lock timeout (`can't lock file … got timeout`, `VM is locked`).
    pub fn is_locked(&self) -> bool {
        self.message_contains("can't lock file") || self.message_contains("is locked")
    }
    /// `true` if the message contains `needle` (case-insensitive).
    pub fn message_contains(&self, needle: &str) -> bool {
        self.message
            .to_ascii_lowercase()
            .contains(&needle.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw() -> AuthContext {
        AuthContext::Password {
            username: "kiln@pve".into(),
        }
    }
    fn tok() -> AuthContext {
        AuthContext::Token {
            token_id: "kiln@pve!build".into(),
        }
    }

    #[test]
    fn classify_and_hint() {
        let e = ApiError::new(
            "POST",
            "/access/ticket",
            401,
            "authentication failure\n",
            BTreeMap::new(),
            Some(&pw()),
        );
        assert_eq!(e.kind, ApiErrorKind::BadCredentials);
        let s = e.to_string();
        assert!(s.contains("\"kiln\" in realm \"pve\""), "{s}");
        assert!(
            s.starts_with("POST /access/ticket: 401 authentication failure"),
            "{s}"
        );

        let e = ApiError::new(
            "POST",
            "/access/ticket",
            401,
            "authentication failure",
            BTreeMap::new(),
            Some(&AuthContext::Password {
                username: "root".into(),
            }),
        );
        assert!(e.to_string().contains("root@pam"));

        let e = ApiError::new(
            "GET",
            "/version",
            401,
            "Authentication failed!",
            BTreeMap::new(),
            Some(&tok()),
        );
        assert_eq!(e.kind, ApiErrorKind::Unauthenticated);
        assert!(e.to_string().contains("kiln@pve!build"));

        let e = ApiError::new(
            "POST",
            "/nodes/pve/qemu",
            403,
            "Permission check failed (/vms/100, VM.Allocate)",
            BTreeMap::new(),
            Some(&tok()),
        );
        assert_eq!(e.kind, ApiErrorKind::PermissionDenied);
        let s = e.to_string();
        assert!(s.contains("privsep") && s.contains("vm.allocate"), "{s}");

        let e = ApiError::new(
            "POST",
            "/nodes/pve2/qemu",
            595,
            "Errors during connection establishment, proxy handshake: No route to host",
            BTreeMap::new(),
            None,
        );
        assert_eq!(e.kind, ApiErrorKind::NodeUnreachable);
        assert!(e.to_string().contains("\"pve2\""));
        assert!(e.is_proxy_failure());

        let e = ApiError::new(
            "POST",
            "/nodes/pve2/qemu",
            596,
            "tls_process_server_certificate: certificate verify failed",
            BTreeMap::new(),
            None,
        );
        assert_eq!(e.kind, ApiErrorKind::NodeConnectionBroken);
        assert!(e.to_string().contains("node-to-node"));

        let mut errs = BTreeMap::new();
        errs.insert(
            "vmid".to_string(),
            "value must have a minimum value of 100\n".to_string(),
        );
        let e = ApiError::new(
            "POST",
            "/nodes/pve/qemu",
            400,
            "Parameter verification failed.",
            errs,
            None,
        );
        assert_eq!(e.kind, ApiErrorKind::InvalidParameters);
        assert!(e
            .to_string()
            .ends_with("vmid: value must have a minimum value of 100"));

        let e = ApiError::new(
            "GET",
            "/nodes/pve/qemu/1/agent/ping",
            500,
            "QEMU guest agent is not running",
            BTreeMap::new(),
            None,
        );
        assert_eq!(e.kind, ApiErrorKind::Server);
        assert!(e.hint.is_some());

        let e = ApiError::new(
            "POST",
            "/x",
            401,
            "Permission denied - invalid csrf token",
            BTreeMap::new(),
            Some(&pw()),
        );
        assert_eq!(e.kind, ApiErrorKind::InvalidCsrf);
    }

    #[test]
    fn predicates() {
        let e = |s: u16, m: &str| ApiError::new("GET", "/x", s, m, BTreeMap::new(), None);
        assert!(e(
            500,
            "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"
        )
        .is_not_found());
        assert!(e(500, "volume 'local:iso/x.iso' does not exist").is_not_found());
        assert!(!e(500, "QEMU guest agent is not running").is_not_found());
        assert!(e(500, "VM 100 already exists on node 'pve'").is_already_exists());
        assert!(e(500, "refusing to override existing file 'x.iso'").is_already_exists());
        let mut errs = BTreeMap::new();
        errs.insert("vmid".to_string(), "VM 100 already exists".to_string());
        assert!(ApiError::new(
            "GET",
            "/cluster/nextid",
            400,
            "Parameter verification failed.",
            errs,
            None
        )
        .is_already_exists());
        assert!(e(
            500,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        )
        .is_locked());
        assert!(e(500, "VM is locked (create)").is_locked());
    }

    #[test]
    fn tls_message_has_pin_instructions() {
        let e = Error::Tls {
            url: "https://pve:8006".into(),
            fingerprint: Some("AA:BB".into()),
            reason: "invalid peer certificate: UnknownIssuer".into(),
        };
        let s = e.to_string();
        assert!(s.contains("proxmox_fingerprint = \"AA:BB\""));
        assert!(s.contains("PROXMOX_FINGERPRINT=AA:BB"));
        assert!(s.contains("insecure_skip_tls_verify"));
        assert!(e.is_not_sent());
    }
}
