//! The HTTP server step and the boot command step (`boot_wait`, then one `sendkey` per key,
//! `boot_key_interval` apart, transient failures retried).

use super::{BuildState, StepError};
use crate::http::{
    choose_http_ip, host_addresses, routed_source_ip, Fetch, HttpConfig, HttpServer,
};
use crate::pipeline::{mmss, Outcome, Step, StepContext};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct StepHttpServer;

#[async_trait]
impl Step<BuildState> for StepHttpServer {
    fn name(&self) -> &str {
        "http_server"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let cfg = &st.run.config;
        // relative: next to the template when it exists there, else the working directory (Packer)
        let directory = cfg
            .http_directory
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| {
                let p = std::path::Path::new(d);
                if p.is_absolute() || !st.template_dir.join(p).is_dir() {
                    p.to_path_buf()
                } else {
                    st.template_dir.join(p)
                }
            });
        let hc = HttpConfig {
            directory,
            content: cfg
                .http_content
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bind_address: cfg.http_bind_address.clone(),
            interface: cfg.http_interface.clone(),
            port_min: cfg.http_port_min,
            port_max: cfg.http_port_max,
        };
        if !hc.enabled() {
            return Ok(());
        }
        let pve_host = st.client.as_ref().and_then(|c| {
            c.base_url()
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_string())
        });
        let routed = pve_host.as_deref().and_then(routed_source_ip);
        let ip = choose_http_ip(
            hc.bind_address.as_deref(),
            hc.interface.as_deref(),
            &host_addresses(),
            routed,
        )
        .map_err(|e| StepError::failed(e.to_string()))?;
        let ui = cx.ui.clone();
        let started = cx.started;
        let log: Arc<dyn Fn(&Fetch) + Send + Sync> = Arc::new(move |f: &Fetch| {
            let verb = if f.status < 400 {
                "fetched"
            } else {
                "asked for"
            };
            ui.message(&format!(
                "VM {verb} {} at {} (HTTP {} from {})",
                f.path,
                mmss(started.elapsed()),
                f.status,
                f.client.ip()
            ));
        });
        let srv = HttpServer::start(hc, ip, log)
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        cx.ui.say(&format!(
            "Starting HTTP server on port {} ({{{{ .HTTPIP }}}} = {})",
            srv.port(),
            ip
        ));
        st.http = Some(srv);
        Ok(())
    }

    async fn cleanup(&mut self, cx: &StepContext, st: &mut BuildState, _outcome: Outcome) {
        // always, whatever the outcome (also with -on-error=abort)
        if let Some(srv) = st.http.take() {
            let port = srv.port();
            srv.stop().await;
            cx.ui
                .message(&format!("Stopped HTTP server on port {port}"));
        }
    }
}

pub struct StepBootCommand;

#[async_trait]
impl Step<BuildState> for StepBootCommand {
    fn name(&self) -> &str {
        "boot_command"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let cfg = st.run.config.clone();
        if cfg.boot_command.is_empty() {
            return Ok(());
        }
        let client = st.client()?;
        let vmid = st.vmid()?;
        let (ip, port) = st.http_ip_port();
        let data = kiln_bootcmd::gotmpl::Data::new()
            .with("HTTPIP", &ip)
            .with("HTTPPort", port)
            .with("Name", &st.vm_name);
        // resolved by kiln-config: boot_key_interval, else PACKER_KEY_INTERVAL (a Go duration),
        // else kiln_config::model::DEFAULT_BOOT_KEY_INTERVAL
        let interval = cfg.boot_key_interval;
        let plan = kiln_bootcmd::plan(&cfg.boot_command, &data, interval)
            .map_err(|e| StepError::failed(format!("Error preparing boot command: {e}")))?;
        if !cfg.boot_wait.is_zero() {
            cx.ui.say(&format!(
                "Waiting {} for boot",
                crate::ui::fmt_duration(cfg.boot_wait)
            ));
            cx.sleep(cfg.boot_wait).await?;
        }
        let actions: Vec<kiln_bootcmd::Action> = plan.steps.into_iter().map(|s| s.action).collect();
        let nkeys = actions
            .iter()
            .filter(|a| matches!(a, kiln_bootcmd::Action::Key(_)))
            .count();
        cx.ui.say(&format!(
            "Typing the boot command ({nkeys} keys, {} apart)",
            crate::ui::fmt_duration(interval)
        ));
        let t0 = Instant::now();
        for a in actions {
            match a {
                kiln_bootcmd::Action::Wait(d) => cx.sleep(d).await?,
                kiln_bootcmd::Action::Key(k) => {
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        match client.sendkey(&st.node, vmid, &k).await {
                            Ok(()) => break,
                            // a lost answer may have typed the key: never repeat those
                            Err(e) if attempt < 4 && e.is_not_sent() => {
                                tracing::debug!(key = %k, error = %e, "sendkey failed, retrying");
                                cx.sleep(Duration::from_millis(250 * attempt)).await?;
                            }
                            Err(e) => {
                                return Err(StepError::failed(format!(
                                    "Error running boot command: key {k:?}: {e}"
                                )))
                            }
                        }
                    }
                    cx.sleep(interval).await?;
                }
            }
        }
        cx.ui.message(&format!(
            "Boot command typed in {}",
            crate::ui::fmt_duration(t0.elapsed())
        ));
        st.typed_at = Some(Instant::now());
        Ok(())
    }
}
