//! [`SshCommunicator`]: the russh implementation of [`Communicator`].

use std::path::Path;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::client::{self, AuthResult, Handle, KeyboardInteractiveAuthResponse, Msg};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, MethodKind, MethodSet, Sig};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::FileAttributes;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::comm::{shell_quote, Communicator, ExitStatus, LineBuffer, LineSink};
use crate::config::{format_addr, HostKeyPolicy, SshAuth, SshConfig};
use crate::error::{CommError, ConnectError};
use crate::keys::load_private_key;

/// russh event handler: host key policy and fingerprint capture.
pub(crate) struct ClientHandler {
    policy: HostKeyPolicy,
    addr: String,
    seen: Arc<StdMutex<Option<String>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (fingerprint, openssh) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (
                key.fingerprint(HashAlg::Sha256).to_string(),
                key.to_openssh().unwrap_or_default(),
            ),
            PublicKeyOrCertificate::Certificate(c) => (
                c.public_key().fingerprint(HashAlg::Sha256).to_string(),
                String::new(),
            ),
        };
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(fingerprint.clone());
        }
        match &self.policy {
            HostKeyPolicy::Ignore => {
                debug!(addr = %self.addr, %fingerprint, "host key not verified (Packer's default)");
                Ok(true)
            }
            HostKeyPolicy::Pinned(pins) => {
                Ok(pins.iter().any(|p| pin_matches(p, &fingerprint, &openssh)))
            }
        }
    }
}

fn pin_matches(pin: &str, fingerprint: &str, openssh: &str) -> bool {
    let pin = pin.trim();
    if pin.contains(' ') {
        // an OpenSSH public key line: compare type and base64 blob, ignore the comment
        let a: Vec<&str> = pin.split_whitespace().take(2).collect();
        let b: Vec<&str> = openssh.split_whitespace().take(2).collect();
        return a.len() == 2 && a == b;
    }
    let strip = |s: &str| {
        s.strip_prefix("SHA256:")
            .unwrap_or(s)
            .trim_end_matches('=')
            .to_string()
    };
    strip(pin) == strip(fingerprint)
}

/// One authenticated SSH connection (plus the bastion connection it is tunnelled through, if any).
pub(crate) struct Conn {
    pub(crate) handle: Handle<ClientHandler>,
    _bastion: Option<Box<Conn>>,
    pub(crate) host_key_fingerprint: Option<String>,
}

fn method_names(m: &MethodSet) -> String {
    if m.is_empty() {
        return "nothing".to_string();
    }
    m.iter()
        .map(<&'static str>::from)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Open one connection and authenticate; no retries.
pub(crate) async fn connect_once(
    cfg: &SshConfig,
    deadline: Duration,
) -> Result<Conn, ConnectError> {
    let addr = cfg.address();
    let run = async {
        let seen = Arc::new(StdMutex::new(None));
        let handler = ClientHandler {
            policy: cfg.host_key.clone(),
            addr: addr.clone(),
            seen: seen.clone(),
        };
        let config = Arc::new(client::Config {
            keepalive_interval: cfg.keepalive,
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let map_hs = |e: russh::Error| {
            let fp = seen.lock().ok().and_then(|s| s.clone());
            match (e, fp) {
                (russh::Error::UnknownKey, Some(fingerprint)) => ConnectError::HostKeyRejected {
                    addr: addr.clone(),
                    fingerprint,
                },
                (e, _) => ConnectError::Handshake {
                    addr: addr.clone(),
                    message: e.to_string(),
                },
            }
        };
        let (mut handle, bastion) = match &cfg.bastion {
            None => {
                let tcp = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port))
                    .await
                    .map_err(|source| ConnectError::PortClosed {
                        addr: addr.clone(),
                        source,
                    })?;
                let _ = tcp.set_nodelay(true);
                (
                    client::connect_stream(config, tcp, handler)
                        .await
                        .map_err(map_hs)?,
                    None,
                )
            }
            Some(b) => {
                let baddr = format_addr(&b.host, b.port);
                let mut bcfg = SshConfig::new(b.host.clone(), b.username.clone(), b.auth.clone());
                bcfg.port = b.port;
                bcfg.keepalive = cfg.keepalive;
                let bconn = Box::pin(connect_once(&bcfg, deadline)).await.map_err(|e| {
                    ConnectError::Bastion {
                        addr: baddr.clone(),
                        message: e.to_string(),
                    }
                })?;
                let ch = bconn
                    .handle
                    .channel_open_direct_tcpip(
                        cfg.host.clone(),
                        u32::from(cfg.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| ConnectError::Bastion {
                        addr: baddr.clone(),
                        message: format!("cannot open a tunnel to {addr}: {e}"),
                    })?;
                (
                    client::connect_stream(config, ch.into_stream(), handler)
                        .await
                        .map_err(map_hs)?,
                    Some(Box::new(bconn)),
                )
            }
        };
        let fingerprint = seen.lock().ok().and_then(|s| s.clone());
        authenticate(&mut handle, cfg, &addr).await?;
        Ok(Conn {
            handle,
            _bastion: bastion,
            host_key_fingerprint: fingerprint,
        })
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            addr,
            after: deadline,
        }),
    }
}

async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    cfg: &SshConfig,
    addr: &str,
) -> Result<(), ConnectError> {
    if cfg.auth.is_empty() {
        return Err(ConnectError::NoAuthMethod {
            user: cfg.username.clone(),
        });
    }
    let user = cfg.username.as_str();
    let hs = |e: russh::Error| ConnectError::Handshake {
        addr: addr.to_string(),
        message: format!("during authentication: {e}"),
    };
    let mut tried = Vec::new();
    let mut remaining = MethodSet::empty();
    for method in &cfg.auth {
        tried.push(method.describe());
        let result = match method {
            SshAuth::Password(pw) => {
                let r = handle
                    .authenticate_password(user, pw.expose())
                    .await
                    .map_err(hs)?;
                match r {
                    AuthResult::Failure {
                        remaining_methods, ..
                    } if remaining_methods.contains(&MethodKind::KeyboardInteractive) => {
                        keyboard_interactive(handle, user, pw.expose())
                            .await
                            .map_err(hs)?
                    }
                    other => other,
                }
            }
            SshAuth::PrivateKeyFile { path, passphrase } => {
                let key = load_private_key(path, passphrase.as_ref())?;
                publickey(handle, user, Arc::new(key)).await.map_err(hs)?
            }
            SshAuth::TempKey(k) => publickey(handle, user, k.private_key()).await.map_err(hs)?,
            SshAuth::Agent => match agent_auth(handle, user).await {
                Ok(r) => r,
                // an unusable agent must not hide the other configured methods
                Err(e) if cfg.auth.len() > 1 => {
                    warn!(error = %e, "ssh-agent unusable; trying the other methods");
                    if let Some(t) = tried.last_mut() {
                        *t = format!("ssh-agent ({e})");
                    }
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        match result {
            AuthResult::Success => {
                debug!(%addr, user, method = %method.describe(), "authenticated");
                return Ok(());
            }
            AuthResult::Failure {
                remaining_methods, ..
            } => remaining = remaining_methods,
        }
    }
    Err(ConnectError::AuthFailed {
        addr: addr.to_string(),
        user: user.to_string(),
        tried: tried.join(", "),
        server_accepts: method_names(&remaining),
    })
}

async fn publickey(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    key: Arc<PrivateKey>,
) -> Result<AuthResult, russh::Error> {
    let hash = if key.algorithm().is_rsa() {
        handle.best_supported_rsa_hash().await?.flatten()
    } else {
        None
    };
    handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
        .await
}

async fn keyboard_interactive(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    password: &str,
) -> Result<AuthResult, russh::Error> {
    let mut resp = handle
        .authenticate_keyboard_interactive_start(user, None::<String>)
        .await?;
    // a server may ask several rounds (or send empty ones); bound it
    for _ in 0..5 {
        match resp {
            KeyboardInteractiveAuthResponse::Success => return Ok(AuthResult::Success),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods,
                partial_success,
            } => {
                return Ok(AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                })
            }
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts.iter().map(|_| password.to_string()).collect();
                resp = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(AuthResult::Failure {
        remaining_methods: MethodSet::empty(),
        partial_success: false,
    })
}

async fn agent_auth(
    handle: &mut Handle<ClientHandler>,
    user: &str,
) -> Result<AuthResult, ConnectError> {
    let mut agent = AgentClient::connect_env()
        .await
        .map_err(|e| ConnectError::Agent(e.to_string()))?;
    let ids = agent
        .request_identities()
        .await
        .map_err(|e| ConnectError::Agent(e.to_string()))?;
    if ids.is_empty() {
        return Err(ConnectError::Agent("the agent holds no keys".to_string()));
    }
    let mut last = AuthResult::Failure {
        remaining_methods: MethodSet::empty(),
        partial_success: false,
    };
    for id in ids {
        let AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        let hash = if key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| ConnectError::Agent(e.to_string()))?
                .flatten()
        } else {
            None
        };
        last = handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
            .map_err(|e| ConnectError::Agent(e.to_string()))?;
        if last.success() {
            break;
        }
    }
    Ok(last)
}

/// An SSH connection to the guest that reconnects on demand.
pub struct SshCommunicator {
    cfg: SshConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    host_key_fingerprint: StdMutex<Option<String>>,
}

impl std::fmt::Debug for SshCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCommunicator")
            .field("addr", &self.cfg.address())
            .field("user", &self.cfg.username)
            .finish_non_exhaustive()
    }
}

impl SshCommunicator {
    /// Connect once (no waiting; see [`crate::wait_for_ssh`] for the patient version).
    pub async fn connect(cfg: SshConfig) -> Result<Self, ConnectError> {
        let conn = connect_once(&cfg, cfg.connect_timeout).await?;
        Ok(Self::from_conn(cfg, conn))
    }

    pub(crate) fn from_conn(cfg: SshConfig, conn: Conn) -> Self {
        let fp = conn.host_key_fingerprint.clone();
        SshCommunicator {
            cfg,
            conn: tokio::sync::Mutex::new(Some(Arc::new(conn))),
            host_key_fingerprint: StdMutex::new(fp),
        }
    }

    pub fn config(&self) -> &SshConfig {
        &self.cfg
    }

    /// SHA-256 fingerprint of the server's host key seen on the last connection.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        self.host_key_fingerprint
            .lock()
            .ok()
            .and_then(|s| s.clone())
    }

    /// Close the connection politely.
    pub async fn disconnect(&self) {
        if let Some(c) = self.conn.lock().await.take() {
            let _ = c
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    async fn connect_retrying(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Arc<Conn>, CommError> {
        let start = Instant::now();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let left = timeout.saturating_sub(start.elapsed());
            let attempt = connect_once(
                &self.cfg,
                self.cfg
                    .connect_timeout
                    .min(left.max(Duration::from_secs(1))),
            );
            let r = tokio::select! {
                _ = cancel.cancelled() => return Err(CommError::Cancelled),
                r = attempt => r,
            };
            match r {
                Ok(c) => {
                    if tries > 1 {
                        info!(addr = %self.cfg.address(), tries, "SSH reconnected");
                    }
                    if let Ok(mut fp) = self.host_key_fingerprint.lock() {
                        *fp = c.host_key_fingerprint.clone();
                    }
                    return Ok(Arc::new(c));
                }
                Err(e) if e.is_fatal() => return Err(e.into()),
                Err(e) => {
                    if start.elapsed() + Duration::from_secs(1) >= timeout {
                        return Err(e.into());
                    }
                    debug!(error = %e, "SSH reconnect attempt failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(CommError::Cancelled),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// The live connection, reconnecting (with retries for `reconnect_timeout`) if it is gone.
    async fn live(&self, cancel: &CancellationToken) -> Result<Arc<Conn>, CommError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.handle.is_closed() {
                return Ok(c.clone());
            }
            warn!(addr = %self.cfg.address(), "SSH connection was closed; reconnecting");
        }
        *guard = None;
        let c = self
            .connect_retrying(self.cfg.reconnect_timeout, cancel)
            .await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self, dead: &Arc<Conn>) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, dead)) {
            *guard = None;
        }
    }

    /// A new session channel; if the connection turns out dead, reconnect once and retry.
    async fn channel(&self, cancel: &CancellationToken) -> Result<Channel<Msg>, CommError> {
        let c = self.live(cancel).await?;
        // a half-dead connection (VM rebooted without closing TCP) must not hang us
        let limit = self.cfg.connect_timeout;
        let first = tokio::time::timeout(limit, c.handle.channel_open_session()).await;
        match first {
            Ok(Ok(ch)) => Ok(ch),
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {limit:?}"),
                };
                debug!(error = %why, "opening a channel failed; reconnecting");
                self.forget(&c).await;
                let c = self.live(cancel).await?;
                match tokio::time::timeout(limit, c.handle.channel_open_session()).await {
                    Ok(Ok(ch)) => Ok(ch),
                    Ok(Err(e)) => Err(CommError::Channel(format!(
                        "cannot open a session channel: {e}"
                    ))),
                    Err(_) => Err(CommError::Channel(format!(
                        "cannot open a session channel: no answer within {limit:?}"
                    ))),
                }
            }
        }
    }

    /// An SFTP session on a new channel, or `None` if the server has no `sftp` subsystem.
    async fn sftp(&self) -> Result<Option<SftpSession>, CommError> {
        let never = CancellationToken::new();
        let mut ch = self.channel(&never).await?;
        ch.request_subsystem(true, "sftp")
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) | Some(ChannelMsg::Close) | None => {
                    debug!("server refused the sftp subsystem; falling back to shell commands");
                    return Ok(None);
                }
                Some(_) => continue,
            }
        }
        let s = SftpSession::new(ch.into_stream())
            .await
            .map_err(|e| CommError::Channel(format!("SFTP start failed: {e}")))?;
        s.set_timeout(60);
        Ok(Some(s))
    }

    async fn sftp_required(
        &self,
        what: &'static str,
        path: &str,
    ) -> Result<SftpSession, CommError> {
        self.sftp().await?.ok_or_else(|| CommError::Remote {
            op: what,
            path: path.to_string(),
            message: "the server has no SFTP subsystem (install openssh-sftp-server in the guest)"
                .to_string(),
        })
    }

    /// Run a command with `stdin` as its input; collect stderr for error messages.
    async fn exec_with_stdin(
        &self,
        cmd: &str,
        stdin: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(ExitStatus, String), CommError> {
        let never = CancellationToken::new();
        let ch = self.channel(&never).await?;
        ch.exec(true, cmd)
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        ch.data(stdin)
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        ch.eof()
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        let err = StdMutex::new(String::new());
        let sink = |l: &str| {
            if let Ok(mut s) = err.lock() {
                s.push_str(l);
                s.push('\n');
            }
        };
        let status = drain(ch, &crate::comm::discard, &sink, &never).await?;
        Ok((status, err.into_inner().unwrap_or_default()))
    }

    /// `cat` the remote file into `local` (no SFTP on the server).
    async fn download_via_cat(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let never = CancellationToken::new();
        let mut ch = self.channel(&never).await?;
        ch.exec(true, format!("cat -- {}", shell_quote(remote)))
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        let lerr = |source| CommError::Local {
            op: "write",
            path: local.to_path_buf(),
            source,
        };
        let mut out = tokio::fs::File::create(local).await.map_err(lerr)?;
        let mut status = None;
        let mut err = Vec::new();
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.write_all(&data).await.map_err(lerr)?,
                ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        out.flush().await.map_err(lerr)?;
        if status != Some(0) {
            let _ = tokio::fs::remove_file(local).await;
            return Err(CommError::Remote {
                op: "download",
                path: remote.to_string(),
                message: String::from_utf8_lossy(&err).trim().to_string(),
            });
        }
        Ok(())
    }

    async fn sftp_mkdir_p(sftp: &SftpSession, path: &str) -> Result<(), CommError> {
        if let Ok(m) = sftp.metadata(path).await {
            if m.is_dir() {
                return Ok(());
            }
        }
        let mut cur = String::new();
        if path.starts_with('/') {
            cur.push('/');
        }
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.is_empty() && !cur.ends_with('/') {
                cur.push('/');
            }
            cur.push_str(part);
            let _ = sftp.create_dir(cur.clone()).await;
        }
        match sftp.metadata(path).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(CommError::Remote {
                op: "mkdir",
                path: path.to_string(),
                message: "exists and is not a directory".to_string(),
            }),
            Err(e) => Err(CommError::Remote {
                op: "mkdir",
                path: path.to_string(),
                message: e.to_string(),
            }),
        }
    }

    async fn sftp_upload(
        sftp: &SftpSession,
        src: &mut (dyn AsyncRead + Send + Unpin),
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError> {
        let rerr = |op: &'static str, e: &dyn std::fmt::Display| CommError::Remote {
            op,
            path: remote.to_string(),
            message: e.to_string(),
        };
        let mut f = sftp.create(remote).await.map_err(|e| rerr("create", &e))?;
        tokio::io::copy(src, &mut f)
            .await
            .map_err(|e| rerr("write", &e))?;
        f.shutdown().await.map_err(|e| rerr("close", &e))?;
        drop(f);
        if let Some(mode) = mode {
            let attrs = FileAttributes {
                permissions: Some(mode),
                ..Default::default()
            };
            sftp.set_metadata(remote, attrs)
                .await
                .map_err(|e| rerr("chmod", &e))?;
        }
        Ok(())
    }

    async fn sftp_download(
        sftp: &SftpSession,
        remote: &str,
        local: &Path,
    ) -> Result<(), CommError> {
        let mut f = sftp.open(remote).await.map_err(|e| CommError::Remote {
            op: "open",
            path: remote.to_string(),
            message: e.to_string(),
        })?;
        let mut out = tokio::fs::File::create(local)
            .await
            .map_err(|source| CommError::Local {
                op: "create",
                path: local.to_path_buf(),
                source,
            })?;
        tokio::io::copy(&mut f, &mut out)
            .await
            .map_err(|e| CommError::Remote {
                op: "read",
                path: remote.to_string(),
                message: e.to_string(),
            })?;
        out.flush().await.map_err(|source| CommError::Local {
            op: "write",
            path: local.to_path_buf(),
            source,
        })?;
        Ok(())
    }

    fn upload_dir_rec<'a>(
        sftp: &'a SftpSession,
        local: &'a Path,
        remote: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), CommError>> {
        Box::pin(async move {
            use std::os::unix::fs::PermissionsExt;
            Self::sftp_mkdir_p(sftp, remote).await?;
            let lerr = |op: &'static str, path: &Path, source| CommError::Local {
                op,
                path: path.to_path_buf(),
                source,
            };
            let mut entries: Vec<_> = std::fs::read_dir(local)
                .map_err(|e| lerr("read directory", local, e))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let target = join_remote(remote, &name);
                // follow symlinks, like Packer's scp upload
                let meta = std::fs::metadata(&path).map_err(|e| lerr("stat", &path, e))?;
                if meta.is_dir() {
                    Self::upload_dir_rec(sftp, &path, &target).await?;
                } else {
                    let mut f = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| lerr("open", &path, e))?;
                    let mode = meta.permissions().mode() & 0o7777;
                    Self::sftp_upload(sftp, &mut f, &target, Some(mode)).await?;
                }
            }
            Ok(())
        })
    }

    fn download_dir_rec<'a>(
        sftp: &'a SftpSession,
        remote: &'a str,
        local: &'a Path,
    ) -> futures::future::BoxFuture<'a, Result<(), CommError>> {
        Box::pin(async move {
            std::fs::create_dir_all(local).map_err(|source| CommError::Local {
                op: "create directory",
                path: local.to_path_buf(),
                source,
            })?;
            let entries = sftp.read_dir(remote).await.map_err(|e| CommError::Remote {
                op: "read directory",
                path: remote.to_string(),
                message: e.to_string(),
            })?;
            for e in entries {
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                let src = join_remote(remote, &name);
                let dst = local.join(&name);
                let mut meta = e.metadata();
                if meta.is_symlink() {
                    meta = match sftp.metadata(src.clone()).await {
                        Ok(m) => m,
                        Err(_) => continue, // dangling link
                    };
                }
                if meta.is_dir() {
                    Self::download_dir_rec(sftp, &src, &dst).await?;
                } else {
                    Self::sftp_download(sftp, &src, &dst).await?;
                    if let Some(p) = meta.permissions {
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::fs::set_permissions(
                            &dst,
                            std::fs::Permissions::from_mode(p & 0o7777),
                        );
                    }
                }
            }
            Ok(())
        })
    }
}

pub(crate) fn join_remote(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn sig_name(s: &Sig) -> String {
    match s {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(c) => return c.clone(),
    }
    .to_string()
}

/// Read a channel to its end, streaming output; returns the exit status.
async fn drain(
    mut ch: Channel<Msg>,
    stdout: LineSink<'_>,
    stderr: LineSink<'_>,
    cancel: &CancellationToken,
) -> Result<ExitStatus, CommError> {
    let mut out = LineBuffer::default();
    let mut err = LineBuffer::default();
    let mut status = None;
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => {
                let _ = ch.signal(Sig::TERM).await;
                let _ = ch.close().await;
                out.finish(stdout);
                err.finish(stderr);
                return Err(CommError::Cancelled);
            }
            m = ch.wait() => m,
        };
        match msg {
            Some(ChannelMsg::Data { data }) => out.push(&data, stdout),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => err.push(&data, stderr),
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                status = Some(ExitStatus::Code(exit_status))
            }
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            }) => {
                status = Some(ExitStatus::Signal {
                    name: sig_name(&signal_name),
                    core_dumped,
                })
            }
            Some(ChannelMsg::Failure) if status.is_none() => {
                let _ = ch.close().await;
                return Err(CommError::Channel(
                    "the server refused to run the command (exec request failed)".to_string(),
                ));
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    out.finish(stdout);
    err.finish(stderr);
    Ok(status.unwrap_or(ExitStatus::Disconnected))
}

#[async_trait]
impl Communicator for SshCommunicator {
    async fn exec(
        &self,
        cmd: &str,
        stdout: LineSink<'_>,
        stderr: LineSink<'_>,
        cancel: &CancellationToken,
    ) -> Result<ExitStatus, CommError> {
        let ch = self.channel(cancel).await?;
        if self.cfg.pty {
            ch.request_pty(false, "vt100", 80, 40, 0, 0, &[])
                .await
                .map_err(|e| CommError::Channel(format!("pty request failed: {e}")))?;
        }
        // the command line may carry environment_vars values: log its size, never its text
        debug!(bytes = cmd.len(), "exec");
        ch.exec(true, cmd)
            .await
            .map_err(|e| CommError::Channel(format!("exec failed: {e}")))?;
        drain(ch, stdout, stderr, cancel).await
    }

    async fn upload(
        &self,
        src: &mut (dyn AsyncRead + Send + Unpin),
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError> {
        if let Some(sftp) = self.sftp().await? {
            let r = Self::sftp_upload(&sftp, src, remote, mode).await;
            let _ = sftp.close().await;
            return r;
        }
        let q = shell_quote(remote);
        let mut cmd = format!("cat > {q}");
        if let Some(m) = mode {
            cmd.push_str(&format!(" && chmod {m:o} {q}"));
        }
        let (status, err) = self.exec_with_stdin(&cmd, src).await?;
        if !status.success() {
            return Err(CommError::Remote {
                op: "upload",
                path: remote.to_string(),
                message: format!("{status}: {}", err.trim()),
            });
        }
        Ok(())
    }

    async fn upload_dir(&self, local: &Path, remote: &str) -> Result<(), CommError> {
        let sftp = self.sftp_required("upload directory", remote).await?;
        let r = Self::upload_dir_rec(&sftp, local, remote).await;
        let _ = sftp.close().await;
        r
    }

    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        match self.sftp().await? {
            Some(sftp) => {
                let r = Self::sftp_download(&sftp, remote, local).await;
                let _ = sftp.close().await;
                r
            }
            None => self.download_via_cat(remote, local).await,
        }
    }

    async fn download_dir(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        let sftp = self.sftp_required("download directory", remote).await?;
        let r = Self::download_dir_rec(&sftp, remote, local).await;
        let _ = sftp.close().await;
        r
    }

    async fn is_dir(&self, remote: &str) -> Result<bool, CommError> {
        match self.sftp().await? {
            Some(sftp) => {
                let r = sftp
                    .metadata(remote)
                    .await
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                let _ = sftp.close().await;
                Ok(r)
            }
            None => {
                let out = self
                    .exec_capture(
                        &format!("test -d {}", shell_quote(remote)),
                        &CancellationToken::new(),
                    )
                    .await?;
                Ok(out.status.success())
            }
        }
    }

    async fn reconnect(
        &self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), CommError> {
        let mut guard = self.conn.lock().await;
        if let Some(old) = guard.take() {
            let _ = old
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        let c = self.connect_retrying(timeout, cancel).await?;
        *guard = Some(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins() {
        let fp = "SHA256:abcDEF123";
        assert!(pin_matches("SHA256:abcDEF123", fp, ""));
        assert!(pin_matches("abcDEF123=", fp, ""));
        assert!(!pin_matches("SHA256:other", fp, ""));
        let line = "ssh-ed25519 AAAAC3Nza host";
        assert!(pin_matches("ssh-ed25519 AAAAC3Nza other-comment", fp, line));
        assert!(!pin_matches("ssh-ed25519 AAAAC3Nzb", fp, line));
    }

    #[test]
    fn remote_join() {
        assert_eq!(join_remote("/tmp", "a"), "/tmp/a");
        assert_eq!(join_remote("/tmp/", "a"), "/tmp/a");
        assert_eq!(join_remote("", "a"), "a");
    }
}
