//! kiln-pve: a typed Proxmox VE REST API client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_pve::Error> {
//! use kiln_pve::{Auth, Client, ConnectOptions, Secret, Tls, WaitOptions};
//! let mut opts = ConnectOptions::new(
//!     "https://pve.example.com:8006",
//!     Auth::Password { username: "root@pam".into(), password: Secret::new("…") },
//! );
//! opts.tls = Tls::Pin { sha256_fingerprint: "AA:BB:…".into() };
//! let pve = Client::connect(opts).await?;
//! let vmid = pve.next_id().await?;
//! let task = pve.qemu_create("pve", vmid, &vec![("name".into(), "x".into())]).await?;
//! pve.wait_opt(task, &WaitOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Errors and retries
//!
//! [`Error::NotSent`] (connection refused, DNS, connect timeout) never
//! reached PVE; [`Error::MaybeProcessed`] (timeout after sending, connection
//! dropped mid-answer) may have; [`Error::Api`] is PVE's answer, with hints
//! for 401 (which user/realm or token), 403 (privilege separation of
//! tokens), 595/596 (node-to-node proxy failures). A 401 with ticket auth
//! triggers one re-login and one repeat (PVE rejects it before acting).
//!
//! Each endpoint has a [`RetryClass`]; with the default [`RetryPolicy`] (4
//! attempts, 0.5 s doubling backoff up to 4 s):
//!
//! | Endpoint | Class | Retried on |
//! |---|---|---|
//! | every `GET` (version, nextid, resources, nodes, network, qemu list, config, status, agent network-get-interfaces, storages, content, task status/log), `POST /access/ticket`, `POST …/agent/ping` | `Read` | not sent, lost answer, 502/503/504/595/596/599 |
//! | `POST /nodes/{n}/qemu` (create), `POST`/`PUT …/config`, `…/status/start|stop|shutdown`, `…/template`, `…/clone`, `DELETE` VM, `download-url`, `upload`, `DELETE` volume | `Write` | not sent, 595 (PVE's proxy never reached the node) |
//! | `PUT …/sendkey` | `SendKey` | not sent, 595, 500 `unable to connect to VM …` (raised before the key reaches QEMU). A lost answer is NOT retried (the key may have been typed) |
//!
//! A TLS certificate rejection is never retried: [`Error::Tls`] shows the
//! server's SHA-256 fingerprint and how to pin it.
//!
//! With `rustls` 0.23 and no default provider feature, a process-wide crypto
//! provider must exist before any `reqwest::Client` is built; the
//! constructors here install `ring` if none is installed.

mod api;
mod client;
pub mod de;
mod error;
mod secret;
mod tls;
mod types;
mod upid;

pub use api::{
    extension_ok, poll_pause, CloneOptions, DeleteVmOptions, DownloadUrlRequest, ParamsExt,
    ShutdownOptions, UploadProgress, UploadRequest, WaitOptions, FIRST_POLL_PAUSE,
};
pub use client::{normalize_api_url, seg, Auth, Client, ConnectOptions, RetryClass, RetryPolicy};
pub use error::{ApiError, ApiErrorKind, AuthContext, Error, Result};
pub use reqwest::Method;
pub use secret::Secret;
pub use tls::{crypto_provider, Fingerprint, FingerprintError, Tls};
pub use types::*;
pub use upid::{Upid, UpidParseError};
