#![allow(dead_code)]
//! Shared helpers: start an in-process sandbox on a free loopback port and talk to it over HTTPS.

use kiln_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;
use std::time::Duration;

pub const PASSWORD: &str = "test-password";
pub const TOKEN_ID: &str = "root@pam!kiln";
pub const TOKEN_SECRET: &str = "0b5d4e1c-1111-2222-3333-444455556666";

pub struct Env {
    pub sb: Sandbox,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

pub async fn start_with(f: impl FnOnce(&mut SandboxConfig)) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SandboxConfig::new(dir.path().join("state"));
    cfg.users = vec![("root@pam".into(), PASSWORD.into())];
    cfg.tokens = vec![(TOKEN_ID.into(), TOKEN_SECRET.into())];
    cfg.auth_failure_delay = Duration::ZERO;
    cfg.lock_timeout = Duration::from_secs(1);
    f(&mut cfg);
    let sb = Sandbox::start(cfg).await.expect("sandbox start");
    Env {
        sb,
        dir,
        http: client(),
    }
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub body: Value,
    pub raw: String,
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.sb.url, path)
    }

    pub fn token_header(&self) -> String {
        format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}")
    }

    /// Request with the API token; `form` is sent form-encoded (POST/PUT) or as the query (GET/DELETE).
    pub async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .http
            .request(m, self.url(path))
            .header("Authorization", self.token_header());
        if method == "GET" || method == "DELETE" {
            rb = rb.query(form);
        } else {
            rb = rb.form(form);
        }
        resp(rb.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self.call("GET", path, &[]).await;
        assert_eq!(r.status, 200, "GET {path}: {} {}", r.reason, r.raw);
        r.body["data"].clone()
    }

    /// Run a call that returns a UPID and wait for the task; returns the exit status.
    pub async fn task(&self, method: &str, path: &str, form: &[(&str, &str)]) -> String {
        let r = self.call(method, path, form).await;
        assert_eq!(r.status, 200, "{method} {path}: {} {}", r.reason, r.raw);
        let upid = r.body["data"]
            .as_str()
            .unwrap_or_else(|| panic!("no UPID: {}", r.raw))
            .to_string();
        self.wait_task(&upid).await
    }

    pub async fn wait_task(&self, upid: &str) -> String {
        let node = upid.split(':').nth(1).unwrap_or("pve").to_string();
        let enc = percent_encoding::utf8_percent_encode(upid, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        for _ in 0..3000 {
            let st = self.get(&format!("/nodes/{node}/tasks/{enc}/status")).await;
            if st["status"] == "stopped" {
                return st["exitstatus"].as_str().unwrap_or("").to_string();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("task {upid} did not finish");
    }

    pub fn events(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("state/events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub async fn resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    // reqwest does not expose the reason phrase; hyper keeps it in an extension
    let reason = r
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
        .unwrap_or_else(|| r.status().canonical_reason().unwrap_or("").to_string());
    let raw = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Resp {
        status,
        reason,
        body,
        raw,
    }
}
