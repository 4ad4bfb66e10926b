//! The HTTP seed server: serves `http_directory` and `http_content` to the VM being installed,
//! logs every request with the client address and status, never serves a file outside its root,
//! and records which paths the VM fetched (for the "VM fetched /user-data at 00:41" lines and the
//! "nothing fetched" diagnosis).

use axum::body::Body;
use axum::http::{header, Method, Response, StatusCode};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the server serves and where it listens (from the source's `http_*` keys).
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    pub directory: Option<PathBuf>,
    /// URL path (`/user-data`) → content, already rendered.
    pub content: BTreeMap<String, String>,
    /// `http_bind_address` (default `0.0.0.0`).
    pub bind_address: Option<String>,
    /// `http_interface`: take `{{ .HTTPIP }}` from this interface.
    pub interface: Option<String>,
    pub port_min: u16,
    pub port_max: u16,
}

impl HttpConfig {
    pub fn enabled(&self) -> bool {
        self.directory.is_some() || !self.content.is_empty()
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Since the server started.
    pub at: Duration,
    pub client: SocketAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The bind address is not an IP address.
    #[error("http_bind_address {0:?} is not an IP address")]
    BadBindAddress(String),
    /// Every port in the range is taken.
    #[error("no free TCP port for the HTTP server in {min}–{max} on {ip}: {last} — widen http_port_min/http_port_max or stop what holds the port")]
    NoFreePort {
        ip: IpAddr,
        min: u16,
        max: u16,
        last: String,
    },
    /// `{{ .HTTPIP }}` could not be chosen.
    #[error("cannot determine the IP the VM should use to reach kiln's HTTP server ({{{{ .HTTPIP }}}}): {0} — set http_bind_address or http_interface")]
    NoHostIp(String),
    /// `http_directory` is not a directory.
    #[error("http_directory {0}: {1}")]
    BadDirectory(String, String),
}

/// An IPv4/IPv6 address of a host interface.
#[derive(Debug, Clone)]
pub struct IfAddr {
    pub name: String,
    pub ip: IpAddr,
}

/// The host's interface addresses (`getifaddrs`).
pub fn host_addresses() -> Vec<IfAddr> {
    let mut v = Vec::new();
    if let Ok(it) = nix::ifaddrs::getifaddrs() {
        for a in it {
            let Some(addr) = a.address else { continue };
            if let Some(sin) = addr.as_sockaddr_in() {
                v.push(IfAddr {
                    name: a.interface_name.clone(),
                    ip: IpAddr::V4(sin.ip()),
                });
            } else if let Some(sin6) = addr.as_sockaddr_in6() {
                v.push(IfAddr {
                    name: a.interface_name.clone(),
                    ip: IpAddr::V6(sin6.ip()),
                });
            }
        }
    }
    v
}

fn usable_v4(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    }
}

/// The local address the OS would use to reach `host` (UDP "connect", no packet sent).
pub fn routed_source_ip(host: &str) -> Option<IpAddr> {
    let target: IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => {
            use std::net::ToSocketAddrs;
            (host, 9)
                .to_socket_addrs()
                .ok()?
                .map(|s| s.ip())
                .find(IpAddr::is_ipv4)?
        }
    };
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .ok()?;
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect((target, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Choose `{{ .HTTPIP }}` as Packer does, a little smarter:
/// 1. `http_bind_address` when it is a specific address;
/// 2. the first usable IPv4 of `http_interface`;
/// 3. (kiln) the address the host uses to reach the PVE API host, when it is not loopback —
///    the VM usually sits on the PVE host's network, so that address is the likeliest to work;
/// 4. the first IPv4 of any interface that is neither loopback nor link-local (Packer takes
///    link-local and VPN addresses too, a known pain).
pub fn choose_http_ip(
    bind: Option<&str>,
    interface: Option<&str>,
    addrs: &[IfAddr],
    routed_to_pve: Option<IpAddr>,
) -> Result<IpAddr, HttpError> {
    if let Some(b) = bind.filter(|b| !b.is_empty()) {
        let ip: IpAddr = b
            .parse()
            .map_err(|_| HttpError::BadBindAddress(b.to_string()))?;
        if !ip.is_unspecified() {
            return Ok(ip);
        }
    }
    if let Some(ifname) = interface.filter(|i| !i.is_empty()) {
        let mine: Vec<&IfAddr> = addrs.iter().filter(|a| a.name == ifname).collect();
        if mine.is_empty() {
            return Err(HttpError::NoHostIp(format!(
                "interface {ifname:?} not found on this host"
            )));
        }
        return mine
            .iter()
            .map(|a| a.ip)
            .find(usable_v4)
            .or_else(|| {
                mine.iter()
                    .map(|a| a.ip)
                    .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            })
            .ok_or_else(|| {
                HttpError::NoHostIp(format!("interface {ifname:?} has no IPv4 address"))
            });
    }
    if let Some(ip) = routed_to_pve.filter(usable_v4) {
        return Ok(ip);
    }
    addrs
        .iter()
        .map(|a| a.ip)
        .find(usable_v4)
        .ok_or_else(|| HttpError::NoHostIp("no non-loopback IPv4 address on any interface".into()))
}

/// Bind a listener on `ip` in `[min, max]`, starting at a random port of the range.
pub async fn bind_in_range(ip: IpAddr, min: u16, max: u16) -> Result<TcpListener, HttpError> {
    let (lo, hi) = if min == 0 && max == 0 {
        (8000, 9000)
    } else {
        (min.min(max), max.max(min))
    };
    let n = u32::from(hi - lo) + 1;
    let start = rand::random_range(0..n);
    let mut last = String::from("no port tried");
    for k in 0..n {
        let port = lo + ((start + k) % n) as u16;
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = format!("port {port}: {e}"),
        }
    }
    Err(HttpError::NoFreePort {
        ip,
        min: lo,
        max: hi,
        last,
    })
}

/// Map a request path to a file under `root`, refusing anything that would leave it
/// (`..`, absolute components, NUL, symlinks pointing outside).
pub fn resolve_under(root: &Path, url_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(url_path)
        .decode_utf8()
        .ok()?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut rel = PathBuf::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => continue,
            ".." => return None,
            p => {
                let c = Path::new(p).components().next()?;
                if !matches!(c, Component::Normal(_)) {
                    return None;
                }
                rel.push(p);
            }
        }
    }
    let root = root.canonicalize().ok()?;
    let full = root.join(&rel);
    // follow symlinks: the target must still be under root
    match full.canonicalize() {
        Ok(real) if real.starts_with(&root) => Some(real),
        Ok(_) => None,
        Err(_) => Some(full), // does not exist: 404 later, still under root lexically
    }
}

/// Packer's path.Clean for http_content lookups.
fn clean_path(p: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(p)
        .decode_utf8_lossy()
        .to_string();
    let mut out: Vec<&str> = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}

struct Shared {
    cfg: HttpConfig,
    fetches: Arc<Mutex<Vec<Fetch>>>,
    started: Instant,
    log: Arc<dyn Fn(&Fetch) + Send + Sync>,
}

/// Limits that keep a slow or hostile client from tying the server up.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// A request's headers must arrive within this long after the connection opens (or after
    /// the previous response on a kept-alive connection).
    pub header_timeout: Duration,
    /// A connection with no bytes moving in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// At most this many connections at once; more are closed at once (the installer retries).
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

/// A running server. Dropping it without [`HttpServer::stop`] also stops it (abort).
pub struct HttpServer {
    pub local_addr: SocketAddr,
    /// `{{ .HTTPIP }}`
    pub http_ip: IpAddr,
    fetches: Arc<Mutex<Vec<Fetch>>>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Start serving with the default [`ServerLimits`]. `log` is called for every answered request.
    pub async fn start(
        cfg: HttpConfig,
        http_ip: IpAddr,
        log: Arc<dyn Fn(&Fetch) + Send + Sync>,
    ) -> Result<HttpServer, HttpError> {
        Self::start_with_limits(cfg, http_ip, log, ServerLimits::default()).await
    }

    /// Start serving with explicit limits.
    pub async fn start_with_limits(
        cfg: HttpConfig,
        http_ip: IpAddr,
        log: Arc<dyn Fn(&Fetch) + Send + Sync>,
        limits: ServerLimits,
    ) -> Result<HttpServer, HttpError> {
        if let Some(d) = &cfg.directory {
            if !d.is_dir() {
                return Err(HttpError::BadDirectory(
                    d.display().to_string(),
                    "not a directory".into(),
                ));
            }
        }
        let bind_ip: IpAddr = match cfg.bind_address.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => b
                .parse()
                .map_err(|_| HttpError::BadBindAddress(b.to_string()))?,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let listener = bind_in_range(bind_ip, cfg.port_min, cfg.port_max).await?;
        let local_addr = listener.local_addr().map_err(|e| HttpError::NoFreePort {
            ip: bind_ip,
            min: cfg.port_min,
            max: cfg.port_max,
            last: e.to_string(),
        })?;
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            cfg,
            fetches: fetches.clone(),
            started: Instant::now(),
            log,
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared, limits, stop.clone()));
        Ok(HttpServer {
            local_addr,
            http_ip,
            fetches,
            stop,
            task: Some(task),
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Everything answered so far.
    pub fn fetches(&self) -> Vec<Fetch> {
        self.fetches.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// A handle to the live list of fetches.
    pub fn fetch_log(&self) -> Arc<Mutex<Vec<Fetch>>> {
        self.fetches.clone()
    }

    /// Stop and wait until the port is closed (open connections are cut after 2 s).
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Accept connections until `stop`; each one under the limits, all cut when the server stops.
async fn accept_loop(
    listener: TcpListener,
    sh: Arc<Shared>,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning
                    tracing::debug!(error = %e, "HTTP server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP server: connection limit reached, closing");
            drop(tcp);
            continue;
        };
        let sh = sh.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, sh, limits, stop).await;
        });
    }
    drop(listener); // the port closes now; open connections get a moment to finish
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// A socket that records when bytes last moved (for the idle timeout).
struct Activity<T> {
    io: T,
    last: Arc<std::sync::atomic::AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    sh: Arc<Shared>,
    limits: ServerLimits,
    stop: CancellationToken,
) {
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let epoch = Instant::now();
    let io = hyper_util::rt::TokioIo::new(Activity {
        io: tcp,
        last: last.clone(),
        epoch,
    });
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let sh = sh.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            Ok::<_, std::convert::Infallible>(handle(&sh, peer, method, path).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    // closed when no request has started within the header timeout, when nothing moved for the
    // idle timeout, or when the server stops
    let watchdog = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let idle_for = epoch.elapsed().saturating_sub(Duration::from_millis(
                last.load(std::sync::atomic::Ordering::Relaxed),
            ));
            let never_spoke = last.load(std::sync::atomic::Ordering::Relaxed) == 0;
            if (never_spoke && epoch.elapsed() >= limits.header_timeout)
                || idle_for >= limits.idle_timeout
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = watchdog => tracing::debug!(%peer, "HTTP server: closing an idle connection"),
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
        }
    }
}

async fn handle(sh: &Shared, client: SocketAddr, method: Method, path: String) -> Response<Body> {
    let resp = if method != Method::GET && method != Method::HEAD {
        plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        )
    } else {
        serve(sh, &path, method == Method::HEAD).await
    };
    let f = Fetch {
        at: sh.started.elapsed(),
        client,
        method: method.to_string(),
        path: path.clone(),
        status: resp.status().as_u16(),
    };
    (sh.log)(&f);
    if let Ok(mut v) = sh.fetches.lock() {
        v.push(f);
    }
    resp
}

fn plain(code: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

async fn serve(sh: &Shared, path: &str, head: bool) -> Response<Body> {
    let cleaned = clean_path(path);
    if let Some(c) = sh.cfg.content.get(&cleaned) {
        let body = if head {
            Body::empty()
        } else {
            Body::from(c.clone())
        };
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CONTENT_LENGTH, c.len())
            .body(body)
            .unwrap_or_default();
    }
    if let Some(root) = &sh.cfg.directory {
        let Some(file) = resolve_under(root, path) else {
            return plain(StatusCode::FORBIDDEN, "forbidden\n".into());
        };
        // the index file is resolved like any other path: a symlink out of the root is refused
        let file = if file.is_dir() {
            match resolve_under(root, &format!("{}/index.html", path.trim_end_matches('/'))) {
                Some(f) => f,
                None => return plain(StatusCode::FORBIDDEN, "forbidden\n".into()),
            }
        } else {
            file
        };
        if let Ok(meta) = tokio::fs::metadata(&file).await {
            if meta.is_file() {
                if head {
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_LENGTH, meta.len())
                        .body(Body::empty())
                        .unwrap_or_default();
                }
                if let Ok(f) = tokio::fs::File::open(&file).await {
                    let stream = tokio_util::io::ReaderStream::new(f);
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_LENGTH, meta.len())
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .body(Body::from_stream(stream))
                        .unwrap_or_default();
                }
            }
        }
    }
    // 404, with Packer's suggestion for http_content
    let mut msg = format!("{cleaned} not found.");
    if let Some(best) = sh
        .cfg
        .content
        .keys()
        .map(|k| (strsim_levenshtein(k, &cleaned), k))
        .filter(|(d, _)| *d <= 3)
        .min()
    {
        msg.push_str(&format!(" Did you mean {:?}?", best.1));
    }
    plain(StatusCode::NOT_FOUND, msg + "\n")
}

fn strsim_levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifa(name: &str, ip: &str) -> IfAddr {
        IfAddr {
            name: name.into(),
            ip: ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        }
    }

    #[test]
    fn http_ip_choice() {
        let addrs = vec![
            ifa("lo", "127.0.0.1"),
            ifa("eth0", "169.254.3.4"),
            ifa("eth0", "fe80::1"),
            ifa("docker0", "172.17.0.1"),
            ifa("vmbr0", "10.9.0.1"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(
            choose_http_ip(Some("10.1.1.1"), None, &addrs, None).ok(),
            ip("10.1.1.1")
        );
        assert_eq!(
            choose_http_ip(Some("0.0.0.0"), Some("vmbr0"), &addrs, None).ok(),
            ip("10.9.0.1")
        );
        // routed address to the PVE host wins over interface order
        assert_eq!(
            choose_http_ip(None, None, &addrs, ip("10.9.0.1")).ok(),
            ip("10.9.0.1")
        );
        // without it: first non-loopback, non-link-local IPv4
        assert_eq!(
            choose_http_ip(None, None, &addrs, ip("127.0.0.1")).ok(),
            ip("172.17.0.1")
        );
        assert!(matches!(
            choose_http_ip(None, Some("wg0"), &addrs, None),
            Err(HttpError::NoHostIp(_))
        ));
        assert!(matches!(
            choose_http_ip(Some("nope"), None, &addrs, None),
            Err(HttpError::BadBindAddress(_))
        ));
        assert!(choose_http_ip(None, None, &[ifa("lo", "127.0.0.1")], None).is_err());
    }

    #[test]
    fn traversal_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("http");
        std::fs::create_dir_all(root.join("sub")).ok();
        std::fs::write(root.join("user-data"), "x").ok();
        std::fs::write(dir.path().join("secret"), "s").ok();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).ok();
        assert!(resolve_under(&root, "/user-data").is_some());
        assert!(resolve_under(&root, "/sub/../user-data").is_none());
        assert!(resolve_under(&root, "/../secret").is_none());
        assert!(resolve_under(&root, "/%2e%2e/secret").is_none());
        assert!(resolve_under(&root, "/sub/%2e%2e%2f%2e%2e/secret").is_none());
        assert!(resolve_under(&root, "/..%5csecret").is_none());
        assert!(
            resolve_under(&root, "/link").is_none(),
            "symlink escaping the root"
        );
        assert!(resolve_under(&root, "/a%00b").is_none());
    }

    #[test]
    fn clean_path_like_go() {
        assert_eq!(clean_path("/user-data"), "/user-data");
        assert_eq!(clean_path("//a/./b/../user-data"), "/a/user-data");
        assert_eq!(clean_path("/../../x"), "/x");
    }

    #[tokio::test]
    async fn port_range_and_busy_ports() {
        let lo: IpAddr = "127.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let a = bind_in_range(lo, 0, 0).await.ok();
        let a = a.unwrap_or_else(|| panic!("bind"));
        let p = a.local_addr().map(|x| x.port()).unwrap_or(0);
        assert!((8000..=9000).contains(&p));
        // the same single port again: busy → clear error naming the range
        match bind_in_range(lo, p, p).await {
            Err(HttpError::NoFreePort { min, max, .. }) => assert_eq!((min, max), (p, p)),
            other => panic!("expected NoFreePort, got {:?}", other.map(|_| ())),
        }
    }

    /// A minimal HTTP/1.0 GET (status, body).
    pub(crate) async fn raw_get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok();
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn serves_content_and_directory_logs_and_stops() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("http");
        std::fs::create_dir_all(&root).ok();
        std::fs::write(root.join("meta-data"), "instance-id: x\n").ok();
        std::fs::write(dir.path().join("outside"), "nope").ok();
        let mut content = BTreeMap::new();
        content.insert("/user-data".to_string(), "#cloud-config\n".to_string());
        let cfg = HttpConfig {
            directory: Some(root),
            content,
            bind_address: Some("127.0.0.1".into()),
            interface: None,
            port_min: 18000,
            port_max: 18999,
        };
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        let log: Arc<dyn Fn(&Fetch) + Send + Sync> = Arc::new(move |f: &Fetch| {
            if let Ok(mut v) = s2.lock() {
                v.push(format!("{} {} {}", f.client.ip(), f.path, f.status));
            }
        });
        let ip: IpAddr = "127.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let srv = HttpServer::start(cfg, ip, log)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = srv.local_addr;
        let get = |p: &'static str| raw_get(addr, p);
        assert_eq!(get("/user-data").await, (200, "#cloud-config\n".into()));
        assert_eq!(get("/meta-data").await, (200, "instance-id: x\n".into()));
        let (st, body) = get("/user-dat").await;
        assert_eq!(st, 404);
        assert!(body.contains("Did you mean \"/user-data\""), "{body}");
        assert_eq!(get("/%2e%2e/outside").await.0, 403);
        let fetched = srv.fetches();
        assert_eq!(fetched.len(), 4);
        assert_eq!(fetched[0].path, "/user-data");
        assert!(seen
            .lock()
            .map(|v| v.iter().any(|l| l == "127.0.0.1 /meta-data 200"))
            .unwrap_or(false));
        srv.stop().await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "port still open after stop"
        );
    }

    fn local_cfg(root: PathBuf) -> HttpConfig {
        HttpConfig {
            directory: Some(root),
            content: BTreeMap::new(),
            bind_address: Some("127.0.0.1".into()),
            interface: None,
            port_min: 18000,
            port_max: 18999,
        }
    }

    fn no_log() -> Arc<dyn Fn(&Fetch) + Send + Sync> {
        Arc::new(|_: &Fetch| {})
    }

    /// issue 11: `GET /sub/` served a file outside http_directory when `sub/index.html` was a
    /// symlink to it.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_symlinked_index_file_pointing_outside_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("http");
        std::fs::create_dir_all(root.join("sub")).ok();
        std::fs::create_dir_all(root.join("ok")).ok();
        std::fs::write(dir.path().join("secret"), "TOP-SECRET").ok();
        std::fs::write(root.join("ok/index.html"), "fine").ok();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("sub/index.html")).ok();
        let ip: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let srv = HttpServer::start(local_cfg(root), ip, no_log())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for p in ["/sub/", "/sub", "/sub/index.html"] {
            let (st, body) = raw_get(srv.local_addr, p).await;
            assert!(st == 403 || st == 404, "{p}: {st} {body}");
            assert!(!body.contains("TOP-SECRET"), "{p}: {body}");
        }
        assert_eq!(raw_get(srv.local_addr, "/ok/").await, (200, "fine".into()));
        srv.stop().await;
    }

    /// issue 11: half-open requests stayed open for 40 s and, with a low fd limit, starved the
    /// installer. Now they are closed after the header timeout and a real GET still works.
    #[tokio::test]
    async fn half_open_connections_are_closed_and_real_requests_still_work() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("http");
        std::fs::create_dir_all(&root).ok();
        std::fs::write(root.join("user-data"), "#cloud-config\n").ok();
        let limits = ServerLimits {
            header_timeout: Duration::from_millis(800),
            idle_timeout: Duration::from_secs(3),
            max_connections: 64,
        };
        let ip: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let srv = HttpServer::start_with_limits(local_cfg(root), ip, no_log(), limits)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = srv.local_addr;
        let mut held = Vec::new();
        for i in 0..50 {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if i % 2 == 0 {
                // half a request, never finished
                s.write_all(b"GET /user-data HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .ok();
            }
            held.push(s);
        }
        // while they hang, a real client is served
        assert_eq!(
            raw_get(addr, "/user-data").await,
            (200, "#cloud-config\n".into())
        );
        // every half-open connection is closed by the server within a few seconds
        let t0 = Instant::now();
        for mut s in held {
            let mut buf = [0u8; 512];
            let r = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue, // a 408 before the close is fine
                    }
                }
            })
            .await;
            assert!(r.is_ok(), "a half-open connection stayed open");
        }
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(
            raw_get(addr, "/user-data").await,
            (200, "#cloud-config\n".into())
        );
        srv.stop().await;
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("http");
        std::fs::create_dir_all(&root).ok();
        let limits = ServerLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_connections: 2,
        };
        let ip: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let srv = HttpServer::start_with_limits(local_cfg(root), ip, no_log(), limits)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a = tokio::net::TcpStream::connect(srv.local_addr).await;
        let b = tokio::net::TcpStream::connect(srv.local_addr).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut c = tokio::net::TcpStream::connect(srv.local_addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "the third connection was not closed"
        );
        drop((a, b));
        srv.stop().await;
    }
}
