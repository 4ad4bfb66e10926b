//! `--backend auto`: which firewall is active, and does it filter incoming connections at all?

use crate::backend::{iptables_filters, nft_filtering_chains};
use crate::runner::Runner;
use crate::{Backend, FirewallError};

/// The outcome of detection: the backend to use (None: nothing filters incoming traffic) and what was
/// looked at, in words, so the CLI can say what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub backend: Option<Backend>,
    pub findings: Vec<String>,
}

/// Looks at, in order: NixOS (its firewall tool must be used there), ufw (active?), iptables (INPUT
/// policy and rules), nftables (input base chains with a drop policy or drop/reject rules, ignoring the
/// tables iptables-nft manages). The first that filters wins.
pub fn detect(r: &dyn Runner) -> Result<Detection, FirewallError> {
    let mut findings = Vec::new();

    if r.file_exists("/etc/NIXOS") && r.has("nixos-firewall-tool") {
        findings.push("NixOS with nixos-firewall-tool".to_string());
        return Ok(Detection {
            backend: Some(Backend::Nixos),
            findings,
        });
    }

    if r.has("ufw") {
        let out = r.run("ufw", &["status"])?;
        if out.success() && out.stdout.lines().any(|l| l.trim() == "Status: active") {
            findings.push("ufw is active".to_string());
            return Ok(Detection {
                backend: Some(Backend::Ufw),
                findings,
            });
        }
        findings.push("ufw is installed but inactive".to_string());
    } else {
        findings.push("ufw is not installed".to_string());
    }

    if r.has("iptables") {
        match iptables_filters(r, "iptables")? {
            Some(why) => {
                findings.push(format!("iptables: {why}"));
                return Ok(Detection {
                    backend: Some(Backend::Iptables),
                    findings,
                });
            }
            None => findings.push("iptables: INPUT accepts everything".to_string()),
        }
    } else {
        findings.push("iptables is not installed".to_string());
    }

    if r.has("nft") {
        let chains = nft_filtering_chains(r)?;
        if chains.is_empty() {
            findings.push("nftables: no input chain drops or rejects".to_string());
        } else {
            let names: Vec<String> = chains.iter().map(|c| c.to_string()).collect();
            findings.push(format!(
                "nftables: filtering input chain(s) {}",
                names.join(", ")
            ));
            return Ok(Detection {
                backend: Some(Backend::Nftables),
                findings,
            });
        }
    } else {
        findings.push("nft is not installed".to_string());
    }

    Ok(Detection {
        backend: None,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRunner;

    #[test]
    fn ufw_active_wins() {
        let r = FakeRunner::default().answer("ufw status", 0, "Status: active\n");
        let d = detect(&r).unwrap();
        assert_eq!(d.backend, Some(Backend::Ufw));
    }

    #[test]
    fn iptables_drop_policy() {
        let r = FakeRunner::default()
            .answer("ufw status", 0, "Status: inactive\n")
            .answer("iptables -S INPUT", 0, "-P INPUT DROP\n");
        let d = detect(&r).unwrap();
        assert_eq!(d.backend, Some(Backend::Iptables));
        assert!(
            d.findings.iter().any(|f| f.contains("policy DROP")),
            "{:?}",
            d.findings
        );
    }

    #[test]
    fn nothing_filters() {
        let r = FakeRunner::default()
            .answer("ufw status", 0, "Status: inactive\n")
            .answer("iptables -S INPUT", 0, "-P INPUT ACCEPT\n")
            .answer(
                "nft -j -a list ruleset",
                0,
                r#"{"nftables":[{"metainfo":{}}]}"#,
            );
        let d = detect(&r).unwrap();
        assert_eq!(d.backend, None);
        assert_eq!(d.findings.len(), 3);
    }

    #[test]
    fn nftables_drop_chain() {
        let ruleset = r#"{"nftables":[{"table":{"family":"inet","name":"filter","handle":1}},
          {"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}}]}"#;
        let r = FakeRunner {
            missing: vec!["ufw".into()],
            ..Default::default()
        }
        .answer("iptables -S INPUT", 0, "-P INPUT ACCEPT\n")
        .answer("nft -j -a list ruleset", 0, ruleset);
        assert_eq!(detect(&r).unwrap().backend, Some(Backend::Nftables));
    }

    #[test]
    fn nixos_first() {
        let r = FakeRunner {
            files: vec!["/etc/NIXOS".into()],
            ..Default::default()
        };
        assert_eq!(detect(&r).unwrap().backend, Some(Backend::Nixos));
    }
}
