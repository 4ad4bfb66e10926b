//! Connect to the PVE API: TLS verify / pin / insecure, password (ticket) or token, with clear
//! messages for the usual failures. The `PROXMOX_*` environment fallbacks are resolved by the
//! loader (kiln-config): a loaded plan carries complete connection settings.

use super::{BuildState, StepError};
use crate::pipeline::{Step, StepContext};
use async_trait::async_trait;
use kiln_config::model::ProxmoxIsoConfig;
use kiln_pve::{Auth, Client, ConnectOptions, Secret, Tls};
use std::sync::Arc;

/// Build the client options from the loaded config (the loader has applied `PROXMOX_*`); `env` is
/// read only for [`ALLOW_PLAIN_HTTP_ENV`].
pub fn connect_options(
    cfg: &ProxmoxIsoConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnectOptions, String> {
    let pick = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    // the loader refuses a plan without these; kept as errors for a hand-made config
    let url = pick(&cfg.proxmox_url).ok_or("proxmox_url must be specified (or set PROXMOX_URL)")?;
    let username =
        pick(&cfg.username).ok_or("username must be specified (or set PROXMOX_USERNAME)")?;
    let token = pick(&cfg.token);
    let password = pick(&cfg.password);
    let auth = match (token, password) {
        (Some(t), _) => {
            if !username.contains('!') {
                return Err(format!(
                    "token is set but username {username:?} has no token id: use \"user@realm!tokenid\""
                ));
            }
            Auth::Token {
                token_id: username,
                secret: Secret::new(t),
            }
        }
        (None, Some(p)) => Auth::Password {
            username,
            password: Secret::new(p),
        },
        (None, None) => {
            return Err(
                "password or token must be specified (or set PROXMOX_PASSWORD / PROXMOX_TOKEN)"
                    .into(),
            )
        }
    };
    let fp = pick(&cfg.proxmox_fingerprint);
    let mut o = ConnectOptions::new(url.clone(), auth);
    o.tls = match fp {
        Some(f) => Tls::Pin {
            sha256_fingerprint: f,
        },
        None if cfg.insecure_skip_tls_verify => Tls::Insecure,
        None => Tls::default(),
    };
    if url.trim_start().to_ascii_lowercase().starts_with("http://") {
        // the password or token would travel in clear: only with an explicit opt-in
        if !plain_http_allowed(env(ALLOW_PLAIN_HTTP_ENV).as_deref()) {
            return Err(format!(
                "proxmox_url {url:?} is plain http://: the password or API token would be sent unencrypted\n  use https:// (PVE listens on https://HOST:8006), or set {ALLOW_PLAIN_HTTP_ENV}=1 if this really is a trusted link (for example a local test server)"
            ));
        }
        o.allow_http = true;
    }
    Ok(o)
}

/// The opt-in for a plain `http://` `proxmox_url` (also read by `kiln init`).
pub const ALLOW_PLAIN_HTTP_ENV: &str = "KILN_ALLOW_PLAIN_HTTP";

fn plain_http_allowed(v: Option<&str>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("1" | "true" | "yes")
    )
}

/// How the connection is protected, honestly (for the "Connecting to …" line).
pub fn transport_description(opts: &ConnectOptions) -> &'static str {
    if opts.allow_http
        && opts
            .url
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("http://")
    {
        return "plain HTTP, NOT encrypted: credentials travel in clear";
    }
    match &opts.tls {
        Tls::Pin { .. } => "certificate pinned by fingerprint",
        Tls::Insecure => "TLS verification disabled (insecure_skip_tls_verify)",
        Tls::Verify { .. } => "TLS verified",
    }
}

/// The secrets of the connection (to mask in output).
pub fn connection_secrets(cfg: &ProxmoxIsoConfig) -> Vec<String> {
    [&cfg.password, &cfg.token]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect()
}

pub struct StepConnect;

#[async_trait]
impl Step<BuildState> for StepConnect {
    fn name(&self) -> &str {
        "connect"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let env = |k: &str| std::env::var(k).ok();
        for s in connection_secrets(&st.run.config) {
            cx.ui.ui().masker().add(&s);
        }
        let opts = connect_options(&st.run.config, &env).map_err(StepError::Failed)?;
        let how = match (&opts.auth, &opts.tls) {
            (Auth::Token { token_id, .. }, _) => format!("API token {token_id}"),
            (Auth::Password { username, .. }, _) => format!("user {username}"),
        };
        let tls = transport_description(&opts);
        if opts.allow_http {
            cx.ui.error(&format!(
                "Warning: proxmox_url is plain http:// ({ALLOW_PLAIN_HTTP_ENV} is set): the credentials and everything else travel unencrypted"
            ));
        }
        cx.ui.say(&format!(
            "Connecting to Proxmox VE at {} as {how} ({tls})",
            opts.url
        ));
        let client = Client::connect(opts)
            .await
            .map_err(|e| StepError::failed(explain_connect(&e)))?;
        let client = Arc::new(client);
        if let Ok(v) = client.version().await {
            cx.ui.message(&format!("Proxmox VE {}", v.version));
        }
        st.client = Some(client);
        Ok(())
    }
}

/// The client's messages already say what/why/what to try; add the build-level framing.
fn explain_connect(e: &kiln_pve::Error) -> String {
    let text = e.to_string();
    let hinted = text.contains("hint:");
    match e.status() {
        Some(401) if hinted => format!("Proxmox VE rejected the login: {text}"),
        Some(401) => format!(
            "Proxmox VE rejected the login: {text}\n  check username (user@realm), password or token (PROXMOX_PASSWORD / PROXMOX_TOKEN)"
        ),
        Some(403) if hinted => format!("Proxmox VE denied access: {text}"),
        Some(403) => format!(
            "Proxmox VE denied access: {text}\n  an API token with privilege separation starts with no permissions: grant it ACLs or disable privsep"
        ),
        _ => format!("cannot connect to Proxmox VE: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_precedence_and_tls_and_no_second_env_lookup() {
        // PROXMOX_* is the loader's job: connect_options does not look at it again
        let env = |k: &str| match k {
            "PROXMOX_URL" => Some("https://pve:8006/api2/json".to_string()),
            "PROXMOX_USERNAME" => Some("root@pam!kiln".to_string()),
            "PROXMOX_PASSWORD" => Some("pw-123".to_string()),
            "PROXMOX_TOKEN" => Some("tok-456".to_string()),
            "PROXMOX_FINGERPRINT" => Some("AA:BB".to_string()),
            _ => None,
        };
        let empty = ProxmoxIsoConfig {
            node: "pve".into(),
            ..ProxmoxIsoConfig::default()
        };
        let e = connect_options(&empty, &env).err().unwrap_or_default();
        assert!(e.contains("proxmox_url must be specified"), "{e}");
        assert!(connection_secrets(&empty).is_empty());
        let cfg = ProxmoxIsoConfig {
            node: "pve".into(),
            proxmox_url: Some("https://pve:8006/api2/json".into()),
            username: Some("root@pam!kiln".into()),
            password: Some("pw-123".into()),
            token: Some("tok-456".into()),
            proxmox_fingerprint: Some("AA:BB".into()),
            ..ProxmoxIsoConfig::default()
        };
        let o = connect_options(&cfg, &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&o.auth, Auth::Token { token_id, .. } if token_id == "root@pam!kiln"));
        assert!(matches!(&o.tls, Tls::Pin { .. }));
        assert_eq!(
            connection_secrets(&cfg),
            vec!["pw-123".to_string(), "tok-456".to_string()]
        );
        let cfg2 = ProxmoxIsoConfig {
            proxmox_url: Some("http://10.0.0.1:8006".into()),
            username: Some("root@pam".into()),
            password: Some("x".into()),
            insecure_skip_tls_verify: true,
            ..ProxmoxIsoConfig::default()
        };
        let none = |_: &str| None;
        let allow = |k: &str| (k == ALLOW_PLAIN_HTTP_ENV).then(|| "1".to_string());
        let o = connect_options(&cfg2, &allow).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&o.auth, Auth::Password { .. }));
        assert!(matches!(&o.tls, Tls::Insecure));
        assert!(o.allow_http);
        let cfg3 = ProxmoxIsoConfig {
            proxmox_url: Some("https://x".into()),
            username: Some("u@pam".into()),
            ..ProxmoxIsoConfig::default()
        };
        assert!(connect_options(&cfg3, &none)
            .unwrap_err()
            .contains("password or token"));
    }

    #[test]
    fn plain_http_needs_the_opt_in_and_is_never_called_tls() {
        // issue 11: http:// was accepted silently and the output said "(TLS verified)"
        let cfg = ProxmoxIsoConfig {
            proxmox_url: Some("HTTP://127.0.0.1:8006/api2/json".into()),
            username: Some("root@pam".into()),
            password: Some("pw".into()),
            ..ProxmoxIsoConfig::default()
        };
        let none = |_: &str| None;
        let e = connect_options(&cfg, &none).err().unwrap_or_default();
        assert!(e.contains("plain http://"), "{e}");
        assert!(e.contains(ALLOW_PLAIN_HTTP_ENV), "{e}");
        let off = |k: &str| (k == ALLOW_PLAIN_HTTP_ENV).then(|| "0".to_string());
        assert!(connect_options(&cfg, &off).is_err());
        let on = |k: &str| (k == ALLOW_PLAIN_HTTP_ENV).then(|| "1".to_string());
        let o = connect_options(&cfg, &on).unwrap_or_else(|e| panic!("{e}"));
        assert!(o.allow_http);
        let t = transport_description(&o);
        assert!(
            t.contains("NOT encrypted") && !t.contains("TLS verified"),
            "{t}"
        );
        // https is unchanged
        let cfg_tls = ProxmoxIsoConfig {
            proxmox_url: Some("https://pve:8006".into()),
            ..cfg
        };
        let o = connect_options(&cfg_tls, &on).unwrap_or_else(|e| panic!("{e}"));
        assert!(!o.allow_http);
        assert_eq!(transport_description(&o), "TLS verified");
    }
}
