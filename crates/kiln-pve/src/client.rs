//! The client core: connection options, authentication (ticket with renewal
//! or API token), request sending with typed errors and the retry policy.

use crate::error::{ApiError, AuthContext, Error, Result};
use crate::secret::Secret;
use crate::tls::{self, Rejections, Tls};
use crate::types::Params;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Ticket login (`POST /access/ticket`) with `user@realm` and password.
    /// The ticket is renewed before its 2 h lifetime ends.
    Password {
        /// `user@realm` (e.g. `root@pam`).
        username: String,
        /// Password.
        password: Secret,
    },
    /// API token: `Authorization: PVEAPIToken=<token_id>=<secret>`.
    Token {
        /// `user@realm!tokenname`.
        token_id: String,
        /// Token secret (UUID).
        secret: Secret,
    },
}

impl Auth {
    fn context(&self) -> AuthContext {
        match self {
            Auth::Password { username, .. } => AuthContext::Password {
                username: username.clone(),
            },
            Auth::Token { token_id, .. } => AuthContext::Token {
                token_id: token_id.clone(),
            },
        }
    }
}

/// Retry policy for requests that are safe to repeat (see the crate docs for
/// which errors count as safe per endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    /// Sleep before the 2nd attempt; doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound for one sleep.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `https://host:8006`, `https://host:8006/api2/json`, with or without a
    /// trailing slash.
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// Certificate checking.
    pub tls: Tls,
    /// Timeout of one API request (not uploads). Default 60 s.
    pub timeout: Duration,
    /// TCP+TLS connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Timeout for a whole ISO upload (`None` = no limit). Default none.
    pub upload_timeout: Option<Duration>,
    /// Allow `http://` URLs (tests, local sandboxes). Default false.
    pub allow_http: bool,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Renew the ticket when it is older than this. Default 1 h 45 min
    /// (PVE tickets live 2 h).
    pub ticket_renew_after: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl ConnectOptions {
    /// Options with defaults: verified TLS, 60 s timeout, 4 attempts.
    pub fn new(url: impl Into<String>, auth: Auth) -> Self {
        ConnectOptions {
            url: url.into(),
            auth,
            tls: Tls::default(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            upload_timeout: None,
            allow_http: false,
            retry: RetryPolicy::default(),
            ticket_renew_after: Duration::from_secs(105 * 60),
            user_agent: format!("kiln/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Normalise a PVE URL to its API base `scheme://host:port/api2/json`
/// (no trailing slash). Accepts the bare host URL, `/api2/json`,
/// a trailing slash, or `/api2/json/`. A missing port stays as given
/// (PVE listens on 8006; we do not guess).
pub fn normalize_api_url(input: &str, allow_http: bool) -> Result<Url> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: input.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(bad("empty (set proxmox_url or PROXMOX_URL)"));
    }
    let mut url = Url::parse(trimmed).map_err(|e| Error::InvalidUrl {
        url: input.to_string(),
        reason: format!("{e} (expected e.g. https://pve.example.com:8006/api2/json)"),
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(bad(
                "plain http is not allowed; Proxmox VE serves https on port 8006",
            ))
        }
        _ => return Err(bad("scheme must be https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials do not belong in the URL; use username/password or token",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("query or fragment not allowed"));
    }
    let path = url.path().trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/api2/json".to_string()
    } else if path.ends_with("/api2/json") {
        path
    } else if path.ends_with("/api2") {
        format!("{path}/json")
    } else if path.contains("/api2/") {
        return Err(bad("only the json API format (/api2/json) is supported"));
    } else {
        // reverse proxy with a prefix
        format!("{path}/api2/json")
    };
    url.set_path(&path);
    Ok(url)
}

/// Which errors may be retried for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Reads (GET) and idempotent calls: retried on not-sent, on lost
    /// answers (timeouts, dropped connections) and on 502/503/504/595/596/599.
    Read,
    /// Writes that must not run twice: retried only when the request surely
    /// was not processed (not-sent errors and 595, where PVE's proxy could
    /// not reach the node).
    Write,
    /// `sendkey`: like `Write`, plus a 500 that PVE raises before touching
    /// the VM (`unable to connect to VM … socket`, `VM … not running` is NOT
    /// retried). A lost answer is not retried: the key may have been typed.
    SendKey,
}

impl RetryClass {
    /// Whether `err` may be retried for this class.
    pub fn should_retry(self, err: &Error) -> bool {
        if err.is_not_sent() {
            return !matches!(err, Error::Tls { .. });
        }
        match err {
            Error::MaybeProcessed { .. } => self == RetryClass::Read,
            Error::Api(a) => match self {
                RetryClass::Read => matches!(a.status, 502 | 503 | 504 | 595 | 596 | 599),
                RetryClass::Write => a.status == 595,
                RetryClass::SendKey => {
                    a.status == 595
                        || (a.status == 500 && a.message_contains("unable to connect to VM"))
                }
            },
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    ticket: Secret,
    csrf: Secret,
    obtained: Instant,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    base: Url,
    opts: ConnectOptions,
    auth_ctx: AuthContext,
    ticket: tokio::sync::Mutex<Option<Ticket>>,
    rejections: Arc<Rejections>,
}

/// A connected PVE API client. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// Request body.
pub(crate) enum Body<'a> {
    None,
    Form(&'a [(String, String)]),
}

const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b';')
    .add(b'&')
    .add(b'=')
    .add(b'+');

/// Percent-encode one path segment (keeps `:`, `@`, `!` readable, as PVE's
/// own clients do; encodes `/`, so a volume id is one segment).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

impl Client {
    /// Build the HTTP client and, for password auth, log in. Fails early with
    /// a clear error on bad URL, TLS, credentials.
    pub async fn connect(opts: ConnectOptions) -> Result<Client> {
        let client = Self::new_unauthenticated(opts)?;
        if matches!(client.inner.opts.auth, Auth::Password { .. }) {
            client.login().await?;
        }
        Ok(client)
    }

    /// Build the client without logging in (password auth logs in lazily on
    /// the first request).
    pub fn new_unauthenticated(opts: ConnectOptions) -> Result<Client> {
        let base = normalize_api_url(&opts.url, opts.allow_http)?;
        if let Auth::Token { token_id, .. } = &opts.auth {
            if !token_id.contains('!') || !token_id.contains('@') {
                return Err(Error::InvalidOption(format!(
                    "API token id {token_id:?} must look like user@realm!tokenname"
                )));
            }
        }
        if let Auth::Password { username, .. } = &opts.auth {
            if username.trim().is_empty() {
                return Err(Error::InvalidOption(
                    "username is empty (set proxmox_username or PROXMOX_USERNAME)".into(),
                ));
            }
        }
        let rejections = Arc::new(Rejections::default());
        let tls_cfg = tls::client_config(&opts.tls, rejections.clone())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_cfg)
            .connect_timeout(opts.connect_timeout)
            .user_agent(opts.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::InvalidOption(format!("HTTP client: {}", error_chain(&e))))?;
        let auth_ctx = opts.auth.context();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                opts,
                auth_ctx,
                ticket: tokio::sync::Mutex::new(None),
                rejections,
            }),
        })
    }

    /// The normalised API base URL (`https://host:8006/api2/json`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.opts
    }

    /// Log in (or renew) now with the configured password. No-op for tokens.
    pub async fn login(&self) -> Result<()> {
        let Auth::Password { username, password } = &self.inner.opts.auth else {
            return Ok(());
        };
        let mut guard = self.inner.ticket.lock().await;
        let params = vec![
            ("username".to_string(), username.clone()),
            ("password".to_string(), password.expose().to_string()),
        ];
        let mut attempt = 0;
        let v = loop {
            attempt += 1;
            let r = self
                .send_once(
                    Method::POST,
                    "/access/ticket",
                    &[],
                    &Body::Form(&params),
                    None,
                )
                .await;
            match r {
                Err(e)
                    if RetryClass::Read.should_retry(&e)
                        && attempt < self.inner.opts.retry.max_attempts =>
                {
                    tokio::time::sleep(self.inner.opts.retry.backoff(attempt)).await;
                }
                other => break other?,
            }
        };
        let data = v.get("data").cloned().unwrap_or_default();
        if data
            .get("NeedTFA")
            .is_some_and(|x| x.as_i64() == Some(1) || x == true)
        {
            return Err(Error::InvalidOption(format!(
                "user {username} has two-factor authentication enabled; kiln cannot answer TFA challenges: \
                 use an API token (token = \"{username}!name=…\") instead"
            )));
        }
        let ticket = data.get("ticket").and_then(|t| t.as_str());
        let csrf = data.get("CSRFPreventionToken").and_then(|t| t.as_str());
        match (ticket, csrf) {
            (Some(t), Some(c)) => {
                *guard = Some(Ticket {
                    ticket: Secret::new(t),
                    csrf: Secret::new(c),
                    obtained: Instant::now(),
                });
                tracing::debug!(user = %username, "logged in to Proxmox VE");
                Ok(())
            }
            _ => Err(Error::Decode {
                method: "POST".into(),
                url: self.url_for("/access/ticket").to_string(),
                reason: "login answer has no ticket/CSRFPreventionToken".into(),
            }),
        }
    }

    async fn current_ticket(&self) -> Result<Option<Ticket>> {
        if !matches!(self.inner.opts.auth, Auth::Password { .. }) {
            return Ok(None);
        }
        let stale = {
            let g = self.inner.ticket.lock().await;
            match &*g {
                None => true,
                Some(t) => t.obtained.elapsed() >= self.inner.opts.ticket_renew_after,
            }
        };
        if stale {
            self.login().await?;
        }
        Ok(self.inner.ticket.lock().await.clone())
    }

    pub(crate) fn url_for(&self, path: &str) -> Url {
        let mut u = self.inner.base.clone();
        let p = format!("{}{}", u.path(), path);
        u.set_path(&p);
        u
    }

    fn decorate(
        &self,
        mut rb: reqwest::RequestBuilder,
        method: &Method,
        ticket: Option<&Ticket>,
    ) -> reqwest::RequestBuilder {
        rb = rb.header(reqwest::header::ACCEPT, "application/json");
        match (&self.inner.opts.auth, ticket) {
            (Auth::Token { token_id, secret }, _) => {
                rb = rb.header(
                    reqwest::header::AUTHORIZATION,
                    format!("PVEAPIToken={token_id}={}", secret.expose()),
                );
            }
            (Auth::Password { .. }, Some(t)) => {
                let enc =
                    utf8_percent_encode(t.ticket.expose(), percent_encoding::NON_ALPHANUMERIC);
                rb = rb.header(reqwest::header::COOKIE, format!("PVEAuthCookie={enc}"));
                if *method != Method::GET {
                    rb = rb.header("CSRFPreventionToken", t.csrf.expose());
                }
            }
            _ => {}
        }
        rb
    }

    fn map_send_error(&self, method: &Method, url: &Url, e: reqwest::Error) -> Error {
        // reqwest's own text repeats the URL; the causes below it say what happened
        let reason = {
            let mut parts: Vec<String> = Vec::new();
            let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
            while let Some(s) = cur {
                let t = s.to_string();
                if !t.starts_with("client error (") && !parts.iter().any(|p| p.contains(&t)) {
                    parts.push(t);
                }
                cur = s.source();
            }
            if parts.is_empty() {
                error_chain(&e)
            } else {
                parts.join(": ")
            }
        };
        let lower_all = reason.to_ascii_lowercase();
        let reason = if e.is_timeout() {
            format!("timed out ({reason})")
        } else if lower_all.contains("connection refused") {
            format!("{reason} (is Proxmox VE running there, and is the port right? PVE listens on 8006)")
        } else if lower_all.contains("dns error") {
            format!("{reason} (check the host name in proxmox_url)")
        } else {
            reason
        };
        let url_s = url.to_string();
        if e.is_builder() {
            return Error::InvalidOption(format!("{method} {url_s}: {reason}"));
        }
        if e.is_connect() {
            if let Some((fp, why)) = self.inner.rejections.take() {
                return Error::Tls {
                    url: url_s,
                    fingerprint: Some(fp.to_string()),
                    reason: why,
                };
            }
            let lower = reason.to_ascii_lowercase();
            if lower.contains("invalidcontenttype")
                || lower.contains("corrupt message")
                || lower.contains("wrong version number")
            {
                return Error::NotSent {
                    method: method.to_string(),
                    url: url_s,
                    reason: format!(
                        "{reason} (the server did not answer with TLS: is this Proxmox VE's \
                         https port, usually 8006?)"
                    ),
                };
            }
            if lower.contains("certificate") {
                return Error::Tls {
                    url: url_s,
                    fingerprint: None,
                    reason,
                };
            }
            return Error::NotSent {
                method: method.to_string(),
                url: url_s,
                reason,
            };
        }
        Error::MaybeProcessed {
            method: method.to_string(),
            url: url_s,
            reason,
        }
    }

    /// One HTTP exchange; returns the whole JSON envelope on success.
    pub(crate) async fn send_once(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: &Body<'_>,
        ticket: Option<&Ticket>,
    ) -> Result<serde_json::Value> {
        let url = self.url_for(path);
        let mut rb = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(self.inner.opts.timeout);
        if !query.is_empty() {
            rb = rb.query(query);
        }
        if let Body::Form(f) = body {
            rb = rb.form(f);
        }
        rb = self.decorate(rb, &method, ticket);
        let keys: Vec<&str> = match body {
            Body::Form(f) => f.iter().map(|(k, _)| k.as_str()).collect(),
            Body::None => vec![],
        };
        tracing::debug!(%method, path, params = ?keys, "PVE request");
        let resp = rb
            .send()
            .await
            .map_err(|e| self.map_send_error(&method, &url, e))?;
        self.read_response(&method, path, &url, resp).await
    }

    pub(crate) async fn read_response(
        &self,
        method: &Method,
        path: &str,
        url: &Url,
        resp: reqwest::Response,
    ) -> Result<serde_json::Value> {
        let status = resp.status();
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).to_string())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let bytes = resp.bytes().await.map_err(|e| Error::MaybeProcessed {
            method: method.to_string(),
            url: url.to_string(),
            reason: format!("reading the answer: {}", error_chain(&e)),
        })?;
        tracing::debug!(%method, path, status = status.as_u16(), "PVE response");
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                method: method.to_string(),
                url: url.to_string(),
                reason: format!(
                    "{e}; body starts with {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            });
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = body
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or(reason);
        let mut errors = BTreeMap::new();
        if let Some(obj) = body.get("errors").and_then(|e| e.as_object()) {
            for (k, v) in obj {
                errors.insert(
                    k.clone(),
                    crate::de::value_to_string(v).trim_end().to_string(),
                );
            }
        }
        Err(ApiError::new(
            method.as_str(),
            path,
            status.as_u16(),
            &message,
            errors,
            Some(&self.inner.auth_ctx),
        )
        .into())
    }

    /// Send with auth, one re-login on 401, and retries per `class`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Body<'_>,
        class: RetryClass,
    ) -> Result<serde_json::Value> {
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let ticket = self.current_ticket().await?;
            let r = self
                .send_once(method.clone(), path, query, &body, ticket.as_ref())
                .await;
            match r {
                Err(Error::Api(a))
                    if a.status == 401
                        && !relogged
                        && matches!(self.inner.opts.auth, Auth::Password { .. }) =>
                {
                    // ticket expired early (server restart, clock skew) or CSRF refused:
                    // log in again once and repeat; PVE rejects 401s before acting.
                    tracing::debug!(path, "401 from PVE, logging in again");
                    relogged = true;
                    attempt -= 1;
                    self.login().await?;
                }
                Err(e)
                    if class.should_retry(&e) && attempt < self.inner.opts.retry.max_attempts =>
                {
                    let d = self.inner.opts.retry.backoff(attempt);
                    tracing::warn!(%method, path, attempt, error = %e, "retrying PVE request in {d:?}");
                    tokio::time::sleep(d).await;
                }
                other => return other,
            }
        }
    }

    /// GET and decode `data`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<T> {
        let v = self
            .call(Method::GET, path, query, Body::None, RetryClass::Read)
            .await?;
        self.decode_data(Method::GET, path, v)
    }

    /// Any method with a form body; decodes `data`. `class` decides retries.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        class: RetryClass,
    ) -> Result<T> {
        let (q, b): (&[(String, String)], Body<'_>) =
            if method == Method::GET || method == Method::DELETE {
                (params.as_slice(), Body::None)
            } else {
                (&[], Body::Form(params.as_slice()))
            };
        let v = self.call(method.clone(), path, q, b, class).await?;
        self.decode_data(method, path, v)
    }

    /// Raw JSON envelope (`{"data":…, "total":…}`) of a GET.
    pub async fn get_envelope(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<serde_json::Value> {
        self.call(Method::GET, path, query, Body::None, RetryClass::Read)
            .await
    }

    pub(crate) fn decode_data<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        mut v: serde_json::Value,
    ) -> Result<T> {
        let data = v
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default();
        serde_json::from_value(data).map_err(|e| Error::Decode {
            method: method.to_string(),
            url: self.url_for(path).to_string(),
            reason: e.to_string(),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) async fn ticket_for_upload(&self) -> Result<Option<TicketHandle>> {
        Ok(self.current_ticket().await?.map(TicketHandle))
    }

    pub(crate) fn decorate_upload(
        &self,
        rb: reqwest::RequestBuilder,
        t: Option<&TicketHandle>,
    ) -> reqwest::RequestBuilder {
        self.decorate(rb, &Method::POST, t.map(|t| &t.0))
    }

    pub(crate) fn map_error(&self, method: &Method, url: &Url, e: reqwest::Error) -> Error {
        self.map_send_error(method, url, e)
    }
}

/// Opaque ticket handle for the upload path.
pub(crate) struct TicketHandle(Ticket);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_normalisation() {
        for (i, want) in [
            ("https://pve:8006", "https://pve:8006/api2/json"),
            ("https://pve:8006/", "https://pve:8006/api2/json"),
            ("https://pve:8006/api2/json", "https://pve:8006/api2/json"),
            ("https://pve:8006/api2/json/", "https://pve:8006/api2/json"),
            (
                "  https://PVE.example.com:8006/api2/json// ",
                "https://pve.example.com:8006/api2/json",
            ),
            (
                "https://10.0.0.1:8006/api2",
                "https://10.0.0.1:8006/api2/json",
            ),
            (
                "https://proxy.example/pve/",
                "https://proxy.example/pve/api2/json",
            ),
            ("https://[::1]:8006", "https://[::1]:8006/api2/json"),
        ] {
            assert_eq!(normalize_api_url(i, false).unwrap().as_str(), want, "{i}");
        }
        assert_eq!(
            normalize_api_url("http://127.0.0.1:1234", true)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1234/api2/json"
        );
        for bad in [
            "",
            "pve:8006",
            "http://pve:8006",
            "ftp://pve",
            "https://root:pw@pve:8006",
            "https://pve:8006/api2/extjs",
            "https://pve:8006/api2/json?x=1",
        ] {
            assert!(normalize_api_url(bad, false).is_err(), "{bad}");
        }
        let e = normalize_api_url("http://pve:8006", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("8006"), "{e}");
    }

    #[test]
    fn segments() {
        assert_eq!(
            seg("UPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam!tok:"),
            "UPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam!tok:"
        );
        assert_eq!(seg("local:iso/a b.iso"), "local:iso%2Fa%20b.iso");
    }

    #[test]
    fn retry_classification() {
        let ns = Error::NotSent {
            method: "POST".into(),
            url: "u".into(),
            reason: "refused".into(),
        };
        let mp = Error::MaybeProcessed {
            method: "POST".into(),
            url: "u".into(),
            reason: "timeout".into(),
        };
        let api = |s: u16, m: &str| {
            Error::from(ApiError::new(
                "POST",
                "/nodes/pve/qemu",
                s,
                m,
                BTreeMap::new(),
                None,
            ))
        };
        let tls = Error::Tls {
            url: "u".into(),
            fingerprint: None,
            reason: "x".into(),
        };
        for c in [RetryClass::Read, RetryClass::Write, RetryClass::SendKey] {
            assert!(c.should_retry(&ns));
            assert!(!c.should_retry(&tls));
            assert!(c.should_retry(&api(595, "no route")));
            assert!(!c.should_retry(&api(500, "VM 100 already exists")));
            assert!(!c.should_retry(&api(401, "x")));
            assert!(!c.should_retry(&api(403, "x")));
            assert!(!c.should_retry(&api(400, "x")));
        }
        assert!(RetryClass::Read.should_retry(&mp));
        assert!(!RetryClass::Write.should_retry(&mp));
        assert!(!RetryClass::SendKey.should_retry(&mp));
        assert!(RetryClass::Read.should_retry(&api(596, "broken pipe")));
        assert!(!RetryClass::Write.should_retry(&api(596, "broken pipe")));
        assert!(
            RetryClass::SendKey.should_retry(&api(500, "unable to connect to VM 100 qmp socket"))
        );
        assert!(
            !RetryClass::Write.should_retry(&api(500, "unable to connect to VM 100 qmp socket"))
        );
        assert!(!RetryClass::SendKey.should_retry(&api(500, "VM 100 not running")));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(350));
        assert_eq!(p.backoff(40), Duration::from_millis(350));
    }
}
