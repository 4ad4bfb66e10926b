//! Wait for the guest (IP from the guest agent or `ssh_host`, then SSH), saying what happens and
//! diagnosing a VM that never fetched anything from the HTTP server; then run the provisioners.

use super::{BuildState, StepError};
use crate::pipeline::{Outcome, Step, StepContext};
use crate::provision::{self, ProvisionContext};
use async_trait::async_trait;
use kiln_guest::{SshAuth, SshConfig, WaitError, WaitEvent};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The "nothing fetched" diagnosis.
pub fn http_diagnosis(ip: &str, port: u16, waited: Duration) -> String {
    format!(
        "the VM has not fetched anything from kiln's HTTP server ({ip}:{port}) in {} since the boot command was typed. Likely causes:\n  \
         - a firewall on this host blocks port {port}: open it with `kiln port open {port}` (or allow http_port_min..http_port_max)\n  \
         - {{{{ .HTTPIP }}}} = {ip} is not reachable from the VM's network: set http_bind_address or http_interface\n  \
         - the boot command was not applied (typed too early or too fast): raise boot_wait or boot_key_interval, and watch the VM console",
        crate::ui::fmt_duration(waited)
    )
}

/// Authentication methods from the communicator settings.
pub fn ssh_auth(c: &kiln_config::model::Communicator, base: &std::path::Path) -> Vec<SshAuth> {
    let mut v = Vec::new();
    if c.ssh_agent_auth {
        v.push(SshAuth::Agent);
    }
    if let Some(k) = c.ssh_private_key_file.as_deref().filter(|k| !k.is_empty()) {
        let p = PathBuf::from(k);
        let p = if p.is_absolute() { p } else { base.join(p) };
        v.push(SshAuth::PrivateKeyFile {
            path: p,
            passphrase: None,
        });
    }
    if let Some(pw) = c.ssh_password.as_deref().filter(|p| !p.is_empty()) {
        v.push(SshAuth::Password(kiln_guest::Secret::new(pw)));
    }
    v
}

/// The jump host from `ssh_bastion_*`, when `ssh_bastion_host` is set (kiln-config has checked
/// that a user and a credential come with it).
pub fn bastion(
    c: &kiln_config::model::Communicator,
    base: &std::path::Path,
) -> Option<kiln_guest::BastionConfig> {
    let host = c.ssh_bastion_host.clone().filter(|h| !h.is_empty())?;
    let mut auth = Vec::new();
    if c.ssh_bastion_agent_auth {
        auth.push(SshAuth::Agent);
    }
    if let Some(k) = c
        .ssh_bastion_private_key_file
        .as_deref()
        .filter(|k| !k.is_empty())
    {
        let p = PathBuf::from(k);
        let p = if p.is_absolute() { p } else { base.join(p) };
        auth.push(SshAuth::PrivateKeyFile {
            path: p,
            passphrase: None,
        });
    }
    if let Some(pw) = c.ssh_bastion_password.as_deref().filter(|p| !p.is_empty()) {
        auth.push(SshAuth::Password(kiln_guest::Secret::new(pw)));
    }
    Some(kiln_guest::BastionConfig {
        host,
        port: c.ssh_bastion_port,
        username: c.ssh_bastion_username.clone().unwrap_or_default(),
        auth,
    })
}

/// Pause between two guest-agent polls for the VM's IP address (was 2 s): the agent's first
/// answer is seen within half a second, without flooding the API during a long install.
pub const AGENT_POLL: Duration = Duration::from_millis(500);

pub struct StepWaitGuest;

impl StepWaitGuest {
    fn fetched_anything(st: &BuildState) -> bool {
        st.http
            .as_ref()
            .is_none_or(|h| h.fetches().iter().any(|f| f.status < 400))
    }

    fn diag_after(st: &BuildState) -> Duration {
        st.flags.http_diag_after.unwrap_or_else(|| {
            (st.run.config.communicator.ssh_timeout / 3)
                .clamp(Duration::from_secs(30), Duration::from_secs(180))
        })
    }
}

#[async_trait]
impl Step<BuildState> for StepWaitGuest {
    fn name(&self) -> &str {
        "wait_guest"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let c = st.run.config.communicator.clone();
        if c.r#type == "none" {
            return Ok(());
        }
        if c.r#type != "ssh" {
            return Err(StepError::failed(format!(
                "communicator {:?} is not supported by kiln yet (use ssh)",
                c.r#type
            )));
        }
        for s in [&c.ssh_password, &c.ssh_bastion_password]
            .into_iter()
            .flatten()
        {
            cx.ui.ui().masker().add(s);
        }
        let client = st.client()?;
        let vmid = st.vmid()?;
        let started = Instant::now();
        let timeout = c.ssh_timeout;
        let deadline = started + timeout;
        let diag_after = Self::diag_after(st);
        let mut diag_said = false;
        let (hip, hport) = st.http_ip_port();
        let since_typed = |st: &BuildState| {
            st.typed_at
                .map(|t| t.elapsed())
                .unwrap_or_else(|| started.elapsed())
        };
        cx.ui.say("Waiting for the guest's IP address and SSH...");

        let ip: String = if let Some(h) = c.ssh_host.clone().filter(|h| !h.is_empty()) {
            h
        } else {
            if !st.run.config.qemu_agent {
                cx.ui.message("qemu_agent = false and no ssh_host: the IP can only come from the guest agent, so this will time out");
            }
            let mut last;
            let mut said_waiting = false;
            loop {
                match client.agent_network_interfaces(&st.node, vmid).await {
                    Ok(ifaces) => match kiln_pve::select_guest_ip(
                        &ifaces,
                        st.run.config.vm_interface.as_deref(),
                    ) {
                        Some(ip) => break ip.to_string(),
                        None => last = "the guest agent reports no usable IPv4 address yet".into(),
                    },
                    Err(e) => last = e.to_string(),
                }
                if !said_waiting {
                    // installing only after a boot command, the first time: a clone, a cache
                    // hit and the cache layer's restart boot an installed system
                    let what = if st.typed_at.is_some() && st.comm.is_none() {
                        "the VM is installing"
                    } else {
                        "the VM is booting"
                    };
                    cx.ui.message(&format!(
                        "Waiting for the guest agent to report an IP address ({what})"
                    ));
                    said_waiting = true;
                }
                if !diag_said
                    && hport > 0
                    && !Self::fetched_anything(st)
                    && since_typed(st) >= diag_after
                {
                    cx.ui.error(&http_diagnosis(&hip, hport, since_typed(st)));
                    diag_said = true;
                }
                if Instant::now() >= deadline {
                    let waited = crate::ui::fmt_duration(timeout);
                    let msg = if hport > 0 && !Self::fetched_anything(st) {
                        // the install never started: the agent's complaint is a consequence
                        let first = last.lines().next().unwrap_or_default();
                        format!(
                            "Timeout waiting for SSH: no IP address from the guest agent after {waited}, and {}\n  (last guest-agent answer: {first})",
                            http_diagnosis(&hip, hport, since_typed(st))
                        )
                    } else {
                        format!("Timeout waiting for SSH: no IP address from the guest agent after {waited} ({last})")
                    };
                    return Err(StepError::Failed(msg));
                }
                cx.sleep(AGENT_POLL).await?;
            }
        };
        cx.ui.say(&format!(
            "Using SSH communicator to connect: {ip} (agent answered after {})",
            crate::ui::fmt_duration(started.elapsed())
        ));
        st.guest_ip = Some(ip.clone());
        let user = c
            .ssh_username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| StepError::failed("ssh_username must be specified"))?;
        let mut auth = ssh_auth(&c, &st.template_dir);
        if let Some(k) = &st.temp_key {
            auth.push(SshAuth::TempKey(k.clone()));
        }
        if auth.is_empty() {
            return Err(StepError::failed(
                "no SSH credentials: set ssh_password, ssh_private_key_file or ssh_agent_auth",
            ));
        }
        let mut cfg = SshConfig::new(ip.clone(), user, auth);
        cfg.port = c.ssh_port;
        cfg.pty = c.ssh_pty;
        cfg.handshake_attempts = (c.ssh_handshake_attempts > 0).then_some(c.ssh_handshake_attempts);
        if !c.ssh_keep_alive_interval.is_zero() {
            cfg.keepalive = Some(c.ssh_keep_alive_interval);
        }
        if let Some(b) = bastion(&c, &st.template_dir) {
            cx.ui.say(&format!(
                "Connecting through the bastion {}@{}:{}",
                b.username, b.host, b.port
            ));
            cfg.bastion = Some(Box::new(b));
        }
        st.ssh = Some(cfg.clone());
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(30));
        cx.ui.say("Waiting for SSH to become available...");
        let ui = cx.ui.clone();
        let progress = move |e: &WaitEvent| match e {
            WaitEvent::Connected { .. }
            | WaitEvent::AuthFailed { .. }
            | WaitEvent::ConnectionDropped { .. } => ui.message(&e.to_string()),
            other => tracing::debug!("{other}"),
        };
        match kiln_guest::wait_for_ssh(cfg, Some(left), &cx.cancel, &progress).await {
            Ok(comm) => {
                cx.ui.say("Connected to SSH!");
                st.comm = Some(comm);
                if !c.pause_before_connecting.is_zero() {
                    cx.sleep(c.pause_before_connecting).await?;
                }
                Ok(())
            }
            Err(WaitError::Cancelled) => Err(StepError::Cancelled),
            Err(e) => {
                let mut msg = format!("Timeout waiting for SSH: {e}");
                if hport > 0 && !Self::fetched_anything(st) {
                    msg.push_str("\n  ");
                    msg.push_str(&http_diagnosis(&hip, hport, since_typed(st)));
                }
                Err(StepError::Failed(msg))
            }
        }
    }

    async fn cleanup(&mut self, _cx: &StepContext, st: &mut BuildState, _outcome: Outcome) {
        if let Some(c) = st.comm.take() {
            c.disconnect().await;
        }
    }
}

pub struct StepProvision;

#[async_trait]
impl Step<BuildState> for StepProvision {
    fn name(&self) -> &str {
        "provision"
    }

    async fn run(&mut self, cx: &StepContext, st: &mut BuildState) -> Result<(), StepError> {
        let provs = st.run.provisioners.clone();
        if !provs.is_empty() {
            self.provision(cx, st, &provs).await?;
        }
        remove_temp_key(cx, st).await
    }
}

/// Packer's `StepCleanupTempKeys` for the ephemeral key of a `proxmox-clone` build: after the
/// provisioners, its line goes from the SSH user's and root's `authorized_keys` (the template
/// must not trust a key nobody holds). Failures are reported, not fatal (as in Packer).
async fn remove_temp_key(cx: &StepContext, st: &BuildState) -> Result<(), StepError> {
    let (Some(k), Some(comm)) = (&st.temp_key, &st.comm) else {
        return Ok(());
    };
    let Some(comment) = super::clone::key_comment(k.public_key_openssh()) else {
        return Ok(());
    };
    cx.ui
        .say("Trying to remove ephemeral keys from authorized_keys files");
    for cmd in super::clone::remove_key_commands(comment) {
        use kiln_guest::Communicator as _;
        match comm.exec_capture(&cmd, &cx.cancel).await {
            Ok(o) if o.status.success() => {}
            Ok(o) => cx.ui.message(&format!(
                "Error cleaning up authorized_keys ({}): {}; please clean up keys manually",
                o.status,
                o.stderr.trim()
            )),
            Err(_) if cx.cancel.is_cancelled() => return Err(StepError::Cancelled),
            Err(e) => cx.ui.message(&format!(
                "Error cleaning up authorized_keys: {e}; please clean up keys manually"
            )),
        }
    }
    Ok(())
}

impl StepProvision {
    async fn provision(
        &self,
        cx: &StepContext,
        st: &BuildState,
        provs: &[kiln_config::model::Provisioner],
    ) -> Result<(), StepError> {
        let mut vars = BTreeMap::new();
        let (ip, port) = st.http_ip_port();
        if port > 0 {
            vars.insert("HTTPIP".to_string(), ip);
            vars.insert("HTTPPort".to_string(), port.to_string());
        }
        if let Some(id) = st.vmid {
            vars.insert("ID".to_string(), id.to_string());
        }
        if let Some(h) = &st.guest_ip {
            vars.insert("Host".to_string(), h.clone());
        }
        vars.insert("Name".to_string(), st.vm_name.clone());
        let interactive = {
            use std::io::IsTerminal;
            std::io::stdin().is_terminal()
        };
        // Packer resolves provisioner paths (`script`, `playbook_file`, …) against the working
        // directory; templates use `${path.root}/…` for files next to them.
        let cwd = std::env::current_dir().unwrap_or_else(|_| st.template_dir.clone());
        let comm: Option<&dyn kiln_guest::Communicator> =
            st.comm.as_ref().map(|c| c as &dyn kiln_guest::Communicator);
        let ctx = ProvisionContext {
            comm,
            ssh: st.ssh.as_ref(),
            build_name: &st.run.source_name,
            builder_type: &st.run.source_type,
            template_dir: &cwd,
            ui: &cx.ui,
            cancel: &cx.cancel,
            vars: &vars,
            interactive,
        };
        for (i, p) in provs.iter().enumerate() {
            let label = p.name.clone().unwrap_or_else(|| p.type_name().to_string());
            let t0 = Instant::now();
            cx.ui.say(&format!(
                "Provisioning with {label} ({}/{})",
                i + 1,
                provs.len()
            ));
            match provision::run(p, &ctx).await {
                Ok(()) => cx.ui.message(&format!(
                    "{label} done in {}",
                    crate::ui::fmt_duration(t0.elapsed())
                )),
                Err(e) if cx.cancel.is_cancelled() => {
                    tracing::debug!("provisioner cancelled: {e}");
                    return Err(StepError::Cancelled);
                }
                Err(e) => {
                    return Err(StepError::failed(format!(
                        "provisioner {label} (#{}) failed: {e}",
                        i + 1
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnosis_names_the_causes() {
        let d = http_diagnosis("10.0.0.1", 8888, Duration::from_secs(61));
        assert!(d.contains("kiln port open 8888"));
        assert!(d.contains("{{ .HTTPIP }} = 10.0.0.1"));
        assert!(d.contains("boot command was not applied"));
    }

    #[test]
    fn auth_order() {
        let c = kiln_config::model::Communicator {
            ssh_password: Some("pw".into()),
            ssh_private_key_file: Some("id".into()),
            ssh_agent_auth: true,
            ..Default::default()
        };
        let a = ssh_auth(&c, std::path::Path::new("/t"));
        let d: Vec<String> = a.iter().map(|x| x.describe()).collect();
        assert_eq!(d, vec!["ssh-agent", "private key /t/id", "password"]);
    }

    #[test]
    fn bastion_from_the_ssh_bastion_keys() {
        let mut c = kiln_config::model::Communicator::default();
        assert!(bastion(&c, std::path::Path::new("/t")).is_none());
        c.ssh_bastion_host = Some("jump.example".into());
        c.ssh_bastion_port = 2222;
        c.ssh_bastion_username = Some("hop".into());
        c.ssh_bastion_private_key_file = Some("keys/jump".into());
        c.ssh_bastion_password = Some("pw".into());
        c.ssh_bastion_agent_auth = true;
        let b = bastion(&c, std::path::Path::new("/t")).expect("bastion");
        assert_eq!(
            (b.host.as_str(), b.port, b.username.as_str()),
            ("jump.example", 2222, "hop")
        );
        let d: Vec<String> = b.auth.iter().map(|x| x.describe()).collect();
        assert_eq!(d, vec!["ssh-agent", "private key /t/keys/jump", "password"]);
    }
}
