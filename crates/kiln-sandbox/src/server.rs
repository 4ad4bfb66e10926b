//! The HTTPS server and the request pipeline: route → auth → faults → parameters → validation →
//! handler → PVE-shaped answer, with every request written to the events log.

use crate::api::{decode_urlencoded, render_err, render_ok, ApiError, Params};
use crate::auth::{Auth, Identity};
use crate::events::{mask, Events};
use crate::faults::{FaultState, Faults};
use crate::schema::{Route, Schema};
use crate::storage::Storage;
use crate::tasks::Tasks;
use crate::vms::{Locks, VmStore};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub node: String,
    /// (userid `user@realm`, password)
    pub users: Vec<(String, String)>,
    /// (`user@realm!tokenid`, secret)
    pub tokens: Vec<(String, String)>,
    pub faults: Faults,
    /// PVE delays 401 answers by ~3 s.
    pub auth_failure_delay: Duration,
    /// How long a config lock is waited for (PVE: 10 s).
    pub lock_timeout: Duration,
    pub accel: kiln_qemu::Accel,
    /// Set up bridge `vmbr0` + dnsmasq in the current network namespace.
    pub network: bool,
    pub bridge: String,
    /// A client must finish the TLS handshake within this long (PVE's proxy: a few seconds).
    pub handshake_timeout: Duration,
    /// An HTTP request's headers must arrive within this long; idle kept-alive connections are
    /// closed after it too.
    pub header_timeout: Duration,
    /// At most this many connections at once (more are closed at once, never queued forever).
    pub max_connections: usize,
    /// Users/tokens restricted to fewer privileges (everyone else holds all of them).
    pub privileges: crate::access::Privileges,
}

impl SandboxConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            state_dir: state_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            node: "pve".to_string(),
            users: vec![("root@pam".to_string(), "kiln-sandbox".to_string())],
            tokens: Vec::new(),
            faults: Faults::default(),
            auth_failure_delay: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(10),
            accel: kiln_qemu::Accel::Auto,
            network: false,
            bridge: "vmbr0".to_string(),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            max_connections: 512,
            privileges: crate::access::Privileges::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The state directory cannot be created or written.
    #[error("state directory {path}: {msg}")]
    State { path: PathBuf, msg: String },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {msg} (is another sandbox or PVE running there?)")]
    Listen { addr: SocketAddr, msg: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Bridge / dnsmasq setup failed.
    #[error("sandbox network: {0}")]
    Network(String),
}

/// Shared server state.
pub struct State {
    pub cfg: SandboxConfig,
    pub auth: Auth,
    pub tasks: Tasks,
    pub events: Events,
    pub faults: FaultState,
    pub storage: Storage,
    pub vms: VmStore,
    pub locks: Locks,
    pub running: Mutex<HashMap<u32, Arc<kiln_qemu::RunningVm>>>,
    pub fingerprint: String,
    pub network: Mutex<Option<kiln_qemu::net::SandboxNetwork>>,
    pub bridge_addr: Option<String>,
}

/// A running sandbox server.
pub struct Sandbox {
    pub url: String,
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub node: String,
    pub state: Arc<State>,
    shutdown: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Bind, generate the certificate, and serve in the background.
    pub async fn start(cfg: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let st_err = |e: std::io::Error| SandboxError::State {
            path: cfg.state_dir.clone(),
            msg: e.to_string(),
        };
        std::fs::create_dir_all(&cfg.state_dir).map_err(st_err)?;
        let tls = crate::tls::generate(&cfg.node).map_err(SandboxError::Tls)?;
        std::fs::write(cfg.state_dir.join("pve-ssl.pem"), &tls.cert_pem).map_err(st_err)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| SandboxError::Listen {
                addr: cfg.listen,
                msg: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| SandboxError::Listen {
            addr: cfg.listen,
            msg: e.to_string(),
        })?;
        let mut network = None;
        let mut bridge_addr = None;
        if cfg.network {
            let subnet = kiln_qemu::net::Subnet {
                network: std::net::Ipv4Addr::new(10, 88, 0, 0),
                prefix: 24,
            };
            let opts =
                kiln_qemu::net::NetOptions::new(&cfg.bridge, subnet, &cfg.state_dir.join("net"));
            let _ = std::fs::create_dir_all(cfg.state_dir.join("net"));
            let n = kiln_qemu::net::SandboxNetwork::setup(opts)
                .map_err(|e| SandboxError::Network(e.to_string()))?;
            bridge_addr = Some(n.gateway().to_string());
            network = Some(n);
        }
        let state = Arc::new(State {
            auth: Auth::new(cfg.users.clone(), cfg.tokens.clone()),
            tasks: Tasks::new(&cfg.node),
            events: Events::open(&cfg.state_dir).map_err(st_err)?,
            faults: FaultState::new(cfg.faults.clone()),
            storage: Storage::new(&cfg.state_dir).map_err(st_err)?,
            vms: VmStore::load(&cfg.state_dir.join("qemu-server")).map_err(st_err)?,
            locks: Locks::default(),
            running: Mutex::new(HashMap::new()),
            fingerprint: tls.fingerprint.clone(),
            network: Mutex::new(network),
            bridge_addr,
            cfg,
        });
        state.events.log(
            "server",
            json!({"action": "start", "addr": addr.to_string(), "node": state.cfg.node}),
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let acceptor = tls.acceptor.clone();
        let st = state.clone();
        let handle = tokio::spawn(accept_loop(listener, acceptor, st, rx));
        Ok(Sandbox {
            url: format!("https://{addr}/api2/json"),
            addr,
            fingerprint: tls.fingerprint,
            node: state.cfg.node.clone(),
            state,
            shutdown: tx,
            handle,
        })
    }

    /// Stop serving, stop all VMs, tear the network down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.handle.await;
        let vms: Vec<_> = self
            .state
            .running
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        for (_, vm) in vms {
            let _ = vm.stop().await;
        }
        if let Ok(mut n) = self.state.network.lock() {
            if let Some(mut net) = n.take() {
                let _ = net.teardown();
            }
        }
        self.state.events.log("server", json!({"action": "stop"}));
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    st: Arc<State>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let handshake_timeout = st.cfg.handshake_timeout;
    let header_timeout = st.cfg.header_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(st.cfg.max_connections.max(1)));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = Duration::from_millis(5);
                    x
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the listener stays readable, so retrying at once
                    // spins at 100 % CPU; back off (up to 1 s) and let connections finish
                    tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let st = st.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // a client that never starts (or never finishes) TLS is cut off
            let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await
            else {
                return;
            };
            let io = hyper_util::rt::TokioIo::new(tls);
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { handle(st, req, peer).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped (fault injection)")
    }
}
impl std::error::Error for Dropped {}

/// Request context handed to handlers.
pub struct Ctx {
    pub ident: Identity,
    pub method: String,
    pub path: String,
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().as_str().to_string();
    let raw_path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let decoded = percent_encoding::percent_decode_str(&raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let mut log = json!({"method": method, "path": decoded, "peer": peer.to_string()});
    let (result, params_for_log) = pipeline(&st, req, &method, &decoded, &query, &mut log).await;
    if let Some(p) = params_for_log {
        log["params"] = mask(&p);
    }
    let resp = match &result {
        Ok(r) => {
            log["status"] = json!(200);
            render_ok(r)
        }
        Err(ApiError::Drop) => {
            log["status"] = json!("dropped");
            st.events.log("request", log);
            return Err(Dropped);
        }
        Err(e) => {
            log["status"] = json!(e.status());
            log["message"] = json!(e.message());
            if let ApiError::Params(errs) = e {
                log["errors"] = json!(errs);
            }
            render_err(e)
        }
    };
    st.events.log("request", log);
    Ok(resp)
}

type Pipe = (
    Result<crate::api::Reply, ApiError>,
    Option<IndexMap<String, Value>>,
);

async fn pipeline(
    st: &Arc<State>,
    req: Request<Incoming>,
    method: &str,
    path: &str,
    query: &str,
    log: &mut Value,
) -> Pipe {
    // ---- /api2/json prefix
    let rel = if let Some(r) = path.strip_prefix("/api2/json") {
        if !r.is_empty() && !r.starts_with('/') {
            return (
                Err(ApiError::Status(
                    501,
                    format!("Method '{method} {path}' not implemented"),
                )),
                None,
            );
        }
        r.to_string()
    } else if path.starts_with("/api2/") {
        return (Err(ApiError::Status(501, "no such uri".to_string())), None);
    } else {
        return (Err(ApiError::Empty(404, "Not Found".to_string())), None);
    };
    let rel = if rel.is_empty() { "/".to_string() } else { rel };
    // ---- route
    let schema = Schema::get();
    let (ep, path_params) = match schema.route(method, &rel) {
        Route::Found(e, p) => (e, p),
        Route::Unsupported(which) => {
            return (
                Err(ApiError::Status(
                    501,
                    format!(
                        "Method '{method} {rel}' not implemented by the kiln sandbox (PVE endpoint '{which}' is not supported)"
                    ),
                )),
                None,
            )
        }
        Route::NotFound => {
            return (Err(ApiError::Status(501, format!("Method '{method} {rel}' not implemented"))), None)
        }
    };
    log["endpoint"] = json!(ep.path);
    // ---- auth
    let unauth = ep.path == "/access/ticket";
    let ident = if unauth {
        Identity {
            user: String::new(),
            tokenid: None,
            ticket: false,
        }
    } else {
        match authenticate(st, &req, method, &ep.path) {
            Ok(i) => i,
            Err(e) => {
                if !st.cfg.auth_failure_delay.is_zero() {
                    tokio::time::sleep(st.cfg.auth_failure_delay).await;
                }
                return (Err(e), None);
            }
        }
    };
    if !ident.user.is_empty() {
        log["user"] = json!(ident.upid_user());
    }
    if ident.tokenid.is_some() && !ep.allowtoken {
        return (
            Err(ApiError::Status(
                403,
                format!("Permission check failed (URI '{rel}' not available with API token, need proper ticket.\n)"),
            )),
            None,
        );
    }
    // ---- faults
    let fault = st.faults.for_request(method, &ep.path, &rel);
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    if fault.drop {
        return (Err(ApiError::Drop), None);
    }
    if let Some((status, msg)) = fault.fail {
        log["fault"] = json!(status);
        let e = if status == 595 || status == 596 {
            ApiError::Empty(status, msg)
        } else {
            ApiError::Status(status, msg)
        };
        return (Err(e), None);
    }
    let ctx = Ctx {
        ident,
        method: method.to_string(),
        path: rel.clone(),
    };
    // ---- upload: multipart stream
    if ep.path == "/nodes/{node}/storage/{storage}/upload" {
        let pp = Params(
            path_params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
        let checks = crate::access::required(method, &ep.path, &pp);
        if let Err(e) = st.cfg.privileges.check(&ctx.ident, &checks) {
            return (Err(e), None);
        }
        return crate::handlers::upload(st, ep, &ctx, req, path_params, query).await;
    }
    // ---- parameters
    let mut params: IndexMap<String, Value> = IndexMap::new();
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_ascii_lowercase();
    let has_body = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n > 0)
        .unwrap_or(req.headers().contains_key("transfer-encoding"));
    if has_body {
        if method == "GET" || method == "DELETE" {
            // PVE ignores/refuses bodies on GET; read and refuse
            return (
                Err(ApiError::Status(
                    501,
                    format!("Unexpected content for method '{method}'"),
                )),
                None,
            );
        }
        let body = match Limited::new(req.into_body(), 512 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return (
                    Err(ApiError::Status(501, "for data too large".to_string())),
                    None,
                )
            }
        };
        if ct.starts_with("application/json") {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(m)) => {
                    for (k, v) in m {
                        params.insert(k, v);
                    }
                }
                Ok(Value::Null) => {}
                _ => {
                    return (
                        Err(ApiError::Status(400, "malformed JSON body".to_string())),
                        None,
                    )
                }
            }
        } else if ct.starts_with("application/x-www-form-urlencoded") {
            decode_urlencoded(&String::from_utf8_lossy(&body), &mut params);
        } else {
            let ct_show = ct.split(';').next().unwrap_or("").to_string();
            return (
                Err(ApiError::Status(
                    506,
                    format!("upload 'Content-Type '{ct_show}' not implemented"),
                )),
                None,
            );
        }
    }
    // query values override body values
    let mut q = IndexMap::new();
    decode_urlencoded(query, &mut q);
    for (k, v) in q {
        params.insert(k, v);
    }
    // path params: conflicts → 400
    for (k, v) in &path_params {
        if let Some(existing) = params.get(k) {
            if crate::validate::scalar_text(existing).as_deref() != Some(v.as_str()) {
                return (
                    Err(ApiError::param(
                        k,
                        "duplicate parameter (already defined in URI) with conflicting values!",
                    )),
                    Some(params),
                );
            }
        }
        params.insert(k.clone(), Value::String(v.clone()));
    }
    if let Err(errs) = crate::validate::validate(ep, &mut params) {
        return (Err(ApiError::Params(errs)), Some(params));
    }
    // node check
    if let Some(node) = params.get("node").and_then(Value::as_str) {
        if node != st.cfg.node {
            let e = if ep.proxyto_node {
                ApiError::Empty(596, format!("no such cluster node '{node}'"))
            } else {
                ApiError::e500(format!("no such cluster node '{node}'"))
            };
            return (Err(e), Some(params));
        }
    }
    let p = Params(params.clone());
    let checks = crate::access::required(method, &ep.path, &p);
    if let Err(e) = st.cfg.privileges.check(&ctx.ident, &checks) {
        return (Err(e), Some(params));
    }
    (
        crate::handlers::dispatch(st, ep, &ctx, p).await,
        Some(params),
    )
}

fn cookie_ticket(req: &Request<Incoming>) -> Option<String> {
    for h in req.headers().get_all("cookie") {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some(v) = part.trim().strip_prefix("PVEAuthCookie=") {
                return Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
        }
    }
    None
}

fn authenticate(
    st: &State,
    req: &Request<Incoming>,
    method: &str,
    ep_path: &str,
) -> Result<Identity, ApiError> {
    let authz = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ticket = cookie_ticket(req).or_else(|| {
        authz
            .as_deref()
            .and_then(|a| a.strip_prefix("PVEAuthCookie="))
            .map(|t| {
                percent_encoding::percent_decode_str(t)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    });
    if let Some(t) = ticket {
        let user = st
            .auth
            .verify_ticket(&t)
            .ok_or_else(|| ApiError::Empty(401, "Authentication failed!".to_string()))?;
        if method != "GET" && ep_path != "/nodes/{node}/storage/{storage}/upload" {
            let csrf = req
                .headers()
                .get("csrfpreventiontoken")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !st.auth.verify_csrf(csrf, &user) {
                return Err(ApiError::Empty(
                    401,
                    "Permission denied - invalid csrf token".to_string(),
                ));
            }
        }
        return Ok(Identity {
            user,
            tokenid: None,
            ticket: true,
        });
    }
    if let Some(a) = authz.as_deref().filter(|a| a.starts_with("PVEAPIToken")) {
        return st
            .auth
            .verify_token(a)
            .ok_or_else(|| ApiError::Empty(401, "Authentication failed!".to_string()));
    }
    Err(ApiError::Empty(401, "No ticket".to_string()))
}
