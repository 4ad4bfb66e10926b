//! The four backends: what "open", "close" and "status" run for each. Stateless: the record of what kiln
//! opened lives in [`crate::state`].

use crate::runner::{render, Runner};
use crate::{Backend, FirewallError, Rule};
use std::fmt;

/// Result of [`open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Rules were added; the commands that ran.
    Opened { commands: Vec<String> },
    /// kiln's rule is already there: nothing changed.
    AlreadyOpen,
    /// Another rule (not kiln's) already allows the port: nothing changed, and kiln will not remove it.
    AllowedByOther { detail: String },
    /// The firewall does not filter incoming connections: nothing changed.
    NotFiltered { detail: String },
}

/// Result of [`close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// kiln's rules were removed; the commands that ran, and anything the user must know.
    Closed {
        commands: Vec<String>,
        notes: Vec<String>,
    },
    /// No rule of kiln's for this port: nothing changed.
    NotOpen,
}

/// Result of [`status`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortStatus {
    /// kiln's rule for this port is present.
    pub kiln_rule: bool,
    /// Other rules that mention the port (not kiln's).
    pub other_rules: Vec<String>,
    /// Why the firewall filters incoming traffic (None: it does not).
    pub filtering: Option<String>,
}

/// Fails with [`FirewallError::MissingTool`] when the backend's program is not installed.
pub fn preflight(r: &dyn Runner, backend: Backend) -> Result<(), FirewallError> {
    if !r.has(backend.program()) {
        return Err(FirewallError::MissingTool {
            backend,
            program: backend.program(),
            hint: backend.install_hint(),
        });
    }
    Ok(())
}

/// Lets `rule` in through `backend`. Idempotent; never touches a rule kiln did not add.
/// NixOS has no way to list temporary rules, so idempotence there comes from the state file.
pub fn open(r: &dyn Runner, backend: Backend, rule: &Rule) -> Result<OpenOutcome, FirewallError> {
    rule.validate()?;
    preflight(r, backend)?;
    match backend {
        Backend::Iptables => iptables_open(r, rule),
        Backend::Nftables => nft_open(r, rule),
        Backend::Ufw => ufw_open(r, rule),
        Backend::Nixos => {
            let args = ["open", rule.proto.name(), &rule.port.to_string()].map(String::from);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            r.run_ok("nixos-firewall-tool", &args)?;
            Ok(OpenOutcome::Opened {
                commands: vec![render("nixos-firewall-tool", &args)],
            })
        }
    }
}

/// Removes kiln's rule for `rule` from `backend`. Removes nothing else (NixOS: see the note returned).
pub fn close(r: &dyn Runner, backend: Backend, rule: &Rule) -> Result<CloseOutcome, FirewallError> {
    rule.validate()?;
    preflight(r, backend)?;
    match backend {
        Backend::Iptables => iptables_close(r, rule),
        Backend::Nftables => nft_close(r, rule),
        Backend::Ufw => ufw_close(r, rule),
        Backend::Nixos => {
            r.run_ok("nixos-firewall-tool", &["reset"])?;
            Ok(CloseOutcome::Closed {
                commands: vec!["nixos-firewall-tool reset".to_string()],
                notes: vec![NIXOS_RESET_NOTE.to_string()],
            })
        }
    }
}

/// Said before `nixos-firewall-tool reset` runs.
pub const NIXOS_RESET_NOTE: &str =
    "nixos-firewall-tool has no per-rule close: `reset` drops EVERY temporary rule \
     opened with nixos-firewall-tool (not only kiln's) and restores the configured firewall";

/// What the firewall currently says about the port.
pub fn status(r: &dyn Runner, backend: Backend, rule: &Rule) -> Result<PortStatus, FirewallError> {
    rule.validate()?;
    preflight(r, backend)?;
    match backend {
        Backend::Iptables => {
            let mut st = PortStatus::default();
            for prog in iptables_programs(r) {
                if iptables_has_kiln_rule(r, prog, rule)? {
                    st.kiln_rule = true;
                }
                st.other_rules.extend(iptables_other_rules(r, prog, rule)?);
                if st.filtering.is_none() {
                    st.filtering = iptables_filters(r, prog)?.map(|w| format!("{prog}: {w}"));
                }
            }
            Ok(st)
        }
        Backend::Nftables => {
            let rs = nft_ruleset(r)?;
            let chains = rs.filtering_chains();
            Ok(PortStatus {
                kiln_rule: !rs.kiln_rules(rule).is_empty(),
                other_rules: rs.other_rules(rule),
                filtering: (!chains.is_empty()).then(|| {
                    let names: Vec<String> = chains.iter().map(|c| c.to_string()).collect();
                    format!("input chain(s) {}", names.join(", "))
                }),
            })
        }
        Backend::Ufw => {
            let ufw = ufw_status(r)?;
            Ok(PortStatus {
                kiln_rule: ufw.kiln_rule(rule),
                other_rules: ufw.other_rules(rule),
                filtering: ufw.active.then(|| "ufw is active".to_string()),
            })
        }
        Backend::Nixos => Ok(PortStatus {
            kiln_rule: false,
            other_rules: Vec::new(),
            filtering: Some("NixOS firewall (temporary rules cannot be listed)".to_string()),
        }),
    }
}

// ---------------------------------------------------------------------------------------------- iptables

fn iptables_programs(r: &dyn Runner) -> Vec<&'static str> {
    let mut v = vec!["iptables"];
    if r.has("ip6tables") {
        v.push("ip6tables");
    }
    v
}

fn iptables_spec(rule: &Rule) -> Vec<String> {
    let p = rule.proto.name();
    vec![
        "-p".into(),
        p.into(),
        "-m".into(),
        p.into(),
        "--dport".into(),
        rule.port.to_string(),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        rule.comment.clone(),
        "-j".into(),
        "ACCEPT".into(),
    ]
}

fn with_spec<'a>(head: &[&'a str], spec: &'a [String]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(spec.iter().map(String::as_str))
        .collect()
}

fn iptables_has_kiln_rule(r: &dyn Runner, prog: &str, rule: &Rule) -> Result<bool, FirewallError> {
    let spec = iptables_spec(rule);
    let out = r.run(prog, &with_spec(&["-C", "INPUT"], &spec))?;
    // 0: present; 1: absent; anything else (2: bad arguments, 4: resource problem) is an error
    match out.code {
        0 => Ok(true),
        1 => Ok(false),
        code => Err(FirewallError::Command {
            command: render(prog, &with_spec(&["-C", "INPUT"], &spec)),
            code,
            stderr: out.stderr.trim().to_string(),
        }),
    }
}

fn iptables_rules(r: &dyn Runner, prog: &str) -> Result<Vec<String>, FirewallError> {
    let out = r.run_ok(prog, &["-S", "INPUT"])?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// Rules in INPUT that accept the port but are not kiln's.
fn iptables_other_rules(
    r: &dyn Runner,
    prog: &str,
    rule: &Rule,
) -> Result<Vec<String>, FirewallError> {
    let ours = format!("--comment {}", quote_iptables_comment(&rule.comment));
    Ok(iptables_rules(r, prog)?
        .into_iter()
        .filter(|l| l.starts_with("-A INPUT"))
        .filter(|l| l.contains(&format!("-p {}", rule.proto.name())))
        .filter(|l| word_after(l, "--dport") == Some(rule.port.to_string()))
        .filter(|l| l.ends_with("-j ACCEPT"))
        .filter(|l| !l.contains(&ours))
        .map(|l| format!("{prog}: {l}"))
        .collect())
}

fn word_after(line: &str, flag: &str) -> Option<String> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == flag {
            return it.next().map(str::to_string);
        }
    }
    None
}

/// `iptables -S` prints a comment with spaces in double quotes.
fn quote_iptables_comment(c: &str) -> String {
    if c.contains(' ') {
        format!("\"{c}\"")
    } else {
        c.to_string()
    }
}

/// Why `prog`'s INPUT chain filters incoming traffic, or None when it accepts everything.
pub(crate) fn iptables_filters(
    r: &dyn Runner,
    prog: &str,
) -> Result<Option<String>, FirewallError> {
    let rules = iptables_rules(r, prog)?;
    for l in &rules {
        if let Some(policy) = l.strip_prefix("-P INPUT ") {
            if policy.trim() != "ACCEPT" {
                return Ok(Some(format!("INPUT policy {}", policy.trim())));
            }
        }
    }
    for l in &rules {
        if !l.starts_with("-A INPUT") {
            continue;
        }
        match word_after(l, "-j").as_deref() {
            Some("DROP") | Some("REJECT") => return Ok(Some(format!("INPUT rule `{l}`"))),
            Some("ACCEPT") | Some("RETURN") | Some("LOG") | None => {}
            // a jump to another chain (ufw-…, a distribution's own chains): may filter
            Some(chain) => return Ok(Some(format!("INPUT jumps to chain {chain}"))),
        }
    }
    Ok(None)
}

fn iptables_open(r: &dyn Runner, rule: &Rule) -> Result<OpenOutcome, FirewallError> {
    let spec = iptables_spec(rule);
    let mut commands = Vec::new();
    let mut already = 0;
    let mut not_filtered = Vec::new();
    let programs = iptables_programs(r);
    // look first, change after: an "other owner" refusal must leave everything as it was
    let mut todo = Vec::new();
    for prog in &programs {
        if iptables_has_kiln_rule(r, prog, rule)? {
            already += 1;
            continue;
        }
        let others = iptables_other_rules(r, prog, rule)?;
        if !others.is_empty() {
            return Ok(OpenOutcome::AllowedByOther {
                detail: others.join("; "),
            });
        }
        match iptables_filters(r, prog)? {
            Some(_) => todo.push(*prog),
            None => not_filtered.push(format!("{prog}: INPUT accepts everything")),
        }
    }
    for prog in todo {
        let args = with_spec(&["-I", "INPUT", "1"], &spec);
        r.run_ok(prog, &args)?;
        commands.push(render(prog, &args));
    }
    if !commands.is_empty() {
        Ok(OpenOutcome::Opened { commands })
    } else if already > 0 {
        Ok(OpenOutcome::AlreadyOpen)
    } else {
        Ok(OpenOutcome::NotFiltered {
            detail: not_filtered.join("; "),
        })
    }
}

fn iptables_close(r: &dyn Runner, rule: &Rule) -> Result<CloseOutcome, FirewallError> {
    let spec = iptables_spec(rule);
    let mut commands = Vec::new();
    for prog in iptables_programs(r) {
        // a duplicate (two kiln runs racing) is removed too; bounded in case -D keeps "succeeding"
        for _ in 0..16 {
            if !iptables_has_kiln_rule(r, prog, rule)? {
                break;
            }
            let args = with_spec(&["-D", "INPUT"], &spec);
            r.run_ok(prog, &args)?;
            commands.push(render(prog, &args));
        }
    }
    Ok(if commands.is_empty() {
        CloseOutcome::NotOpen
    } else {
        CloseOutcome::Closed {
            commands,
            notes: Vec::new(),
        }
    })
}

// ---------------------------------------------------------------------------------------------- nftables

/// An nftables base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub name: String,
    hook: Option<String>,
    policy: Option<String>,
}

impl fmt::Display for NftChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.name)
    }
}

#[derive(Debug, Clone)]
struct NftRule {
    family: String,
    table: String,
    chain: String,
    handle: u64,
    comment: Option<String>,
    expr: serde_json::Value,
}

impl NftRule {
    fn is_in(&self, c: &NftChain) -> bool {
        self.family == c.family && self.table == c.table && self.chain == c.name
    }
    fn has_verdict(&self, verdicts: &[&str]) -> bool {
        self.expr.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| verdicts.iter().any(|v| e.get(v).is_some()))
        })
    }
    /// `<proto> dport N` as a match expression.
    fn matches_port(&self, rule: &Rule) -> bool {
        let Some(exprs) = self.expr.as_array() else {
            return false;
        };
        exprs.iter().any(|e| {
            let Some(m) = e.get("match") else {
                return false;
            };
            let payload = &m["left"]["payload"];
            payload["protocol"] == rule.proto.name()
                && payload["field"] == "dport"
                && m["right"].as_u64() == Some(u64::from(rule.port))
        })
    }
}

#[derive(Debug, Default)]
struct NftRuleset {
    chains: Vec<NftChain>,
    rules: Vec<NftRule>,
}

impl NftRuleset {
    fn parse(json: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let items = v["nftables"].as_array().ok_or("no \"nftables\" array")?;
        let s = |o: &serde_json::Value, k: &str| o[k].as_str().map(str::to_string);
        let mut rs = NftRuleset::default();
        for item in items {
            if let Some(c) = item.get("chain") {
                rs.chains.push(NftChain {
                    family: s(c, "family").ok_or("chain without family")?,
                    table: s(c, "table").ok_or("chain without table")?,
                    name: s(c, "name").ok_or("chain without name")?,
                    hook: s(c, "hook"),
                    policy: s(c, "policy"),
                });
            } else if let Some(rl) = item.get("rule") {
                rs.rules.push(NftRule {
                    family: s(rl, "family").ok_or("rule without family")?,
                    table: s(rl, "table").ok_or("rule without table")?,
                    chain: s(rl, "chain").ok_or("rule without chain")?,
                    handle: rl["handle"].as_u64().ok_or("rule without handle")?,
                    comment: s(rl, "comment"),
                    expr: rl["expr"].clone(),
                });
            }
        }
        Ok(rs)
    }

    /// Input base chains that drop (policy) or drop/reject (a rule). iptables-nft's own `INPUT` chains
    /// are left to the iptables backend.
    fn filtering_chains(&self) -> Vec<NftChain> {
        self.chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some("input"))
            .filter(|c| !((c.family == "ip" || c.family == "ip6") && c.name == "INPUT"))
            .filter(|c| {
                c.policy.as_deref() == Some("drop")
                    || self
                        .rules
                        .iter()
                        .any(|r| r.is_in(c) && r.has_verdict(&["drop", "reject"]))
            })
            .cloned()
            .collect()
    }

    fn kiln_rules(&self, rule: &Rule) -> Vec<&NftRule> {
        self.rules
            .iter()
            .filter(|r| r.comment.as_deref() == Some(rule.comment.as_str()) && r.matches_port(rule))
            .collect()
    }

    fn other_rules(&self, rule: &Rule) -> Vec<String> {
        let filtering = self.filtering_chains();
        self.rules
            .iter()
            .filter(|r| filtering.iter().any(|c| r.is_in(c)))
            .filter(|r| r.comment.as_deref() != Some(rule.comment.as_str()))
            .filter(|r| r.matches_port(rule) && r.has_verdict(&["accept"]))
            .map(|r| {
                format!(
                    "nftables: {} {} {} handle {}",
                    r.family, r.table, r.chain, r.handle
                )
            })
            .collect()
    }
}

fn nft_ruleset(r: &dyn Runner) -> Result<NftRuleset, FirewallError> {
    let args = ["-j", "-a", "list", "ruleset"];
    let out = r.run_ok("nft", &args)?;
    NftRuleset::parse(&out.stdout).map_err(|detail| FirewallError::Parse {
        command: render("nft", &args),
        detail,
    })
}

/// The chains that filter incoming traffic (detection uses it).
pub(crate) fn nft_filtering_chains(r: &dyn Runner) -> Result<Vec<NftChain>, FirewallError> {
    Ok(nft_ruleset(r)?.filtering_chains())
}

fn nft_open(r: &dyn Runner, rule: &Rule) -> Result<OpenOutcome, FirewallError> {
    let rs = nft_ruleset(r)?;
    let chains = rs.filtering_chains();
    if chains.is_empty() {
        return Ok(OpenOutcome::NotFiltered {
            detail: "no nftables input chain drops or rejects".into(),
        });
    }
    let others = rs.other_rules(rule);
    if !others.is_empty() {
        return Ok(OpenOutcome::AllowedByOther {
            detail: others.join("; "),
        });
    }
    let ours = rs.kiln_rules(rule);
    let port = rule.port.to_string();
    let comment = format!("\"{}\"", rule.comment);
    let mut commands = Vec::new();
    for c in chains.iter().filter(|c| !ours.iter().any(|r| r.is_in(c))) {
        let args = [
            "insert",
            "rule",
            &c.family,
            &c.table,
            &c.name,
            rule.proto.name(),
            "dport",
            &port,
            "accept",
            "comment",
            &comment,
        ];
        r.run_ok("nft", &args)?;
        commands.push(render("nft", &args));
    }
    Ok(if commands.is_empty() {
        OpenOutcome::AlreadyOpen
    } else {
        OpenOutcome::Opened { commands }
    })
}

fn nft_close(r: &dyn Runner, rule: &Rule) -> Result<CloseOutcome, FirewallError> {
    let rs = nft_ruleset(r)?;
    let mut commands = Vec::new();
    for kr in rs.kiln_rules(rule) {
        let handle = kr.handle.to_string();
        let args = [
            "delete", "rule", &kr.family, &kr.table, &kr.chain, "handle", &handle,
        ];
        r.run_ok("nft", &args)?;
        commands.push(render("nft", &args));
    }
    Ok(if commands.is_empty() {
        CloseOutcome::NotOpen
    } else {
        CloseOutcome::Closed {
            commands,
            notes: Vec::new(),
        }
    })
}

// ---------------------------------------------------------------------------------------------- ufw

struct UfwStatus {
    active: bool,
    /// (to, action, comment) of each rule line
    rules: Vec<(String, String, Option<String>)>,
}

impl UfwStatus {
    fn parse(out: &str) -> Self {
        let active = out.lines().any(|l| l.trim() == "Status: active");
        let rules = out
            .lines()
            .skip_while(|l| !l.starts_with("--"))
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let (body, comment) = match l.split_once(" # ") {
                    Some((b, c)) => (b, Some(c.trim().to_string())),
                    None => (l, None),
                };
                // columns are separated by runs of 2+ spaces ("Anywhere (v6)" has single spaces)
                let cols: Vec<&str> = body
                    .split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                (cols.len() >= 2).then(|| (cols[0].to_string(), cols[1].to_string(), comment))
            })
            .collect();
        UfwStatus { active, rules }
    }

    fn port_matches(to: &str, rule: &Rule) -> bool {
        let to = to.trim_end_matches(" (v6)");
        to == format!("{}/{}", rule.port, rule.proto) || to == rule.port.to_string()
    }

    fn kiln_rule(&self, rule: &Rule) -> bool {
        self.rules.iter().any(|(to, _, c)| {
            Self::port_matches(to, rule) && c.as_deref() == Some(rule.comment.as_str())
        })
    }

    fn other_rules(&self, rule: &Rule) -> Vec<String> {
        self.rules
            .iter()
            .filter(|(to, action, c)| {
                Self::port_matches(to, rule)
                    && action.starts_with("ALLOW")
                    && c.as_deref() != Some(rule.comment.as_str())
            })
            .map(|(to, action, c)| {
                format!(
                    "ufw: {to} {action}{}",
                    c.as_ref().map(|c| format!(" # {c}")).unwrap_or_default()
                )
            })
            .collect()
    }
}

fn ufw_status(r: &dyn Runner) -> Result<UfwStatus, FirewallError> {
    Ok(UfwStatus::parse(&r.run_ok("ufw", &["status"])?.stdout))
}

fn ufw_open(r: &dyn Runner, rule: &Rule) -> Result<OpenOutcome, FirewallError> {
    let st = ufw_status(r)?;
    if !st.active {
        return Ok(OpenOutcome::NotFiltered {
            detail: "ufw is inactive".into(),
        });
    }
    if st.kiln_rule(rule) {
        return Ok(OpenOutcome::AlreadyOpen);
    }
    let others = st.other_rules(rule);
    if !others.is_empty() {
        return Ok(OpenOutcome::AllowedByOther {
            detail: others.join("; "),
        });
    }
    let spec = format!("{}/{}", rule.port, rule.proto);
    let args = ["allow", &spec, "comment", &rule.comment];
    r.run_ok("ufw", &args)?;
    Ok(OpenOutcome::Opened {
        commands: vec![render("ufw", &args)],
    })
}

fn ufw_close(r: &dyn Runner, rule: &Rule) -> Result<CloseOutcome, FirewallError> {
    let st = ufw_status(r)?;
    if !st.kiln_rule(rule) {
        return Ok(CloseOutcome::NotOpen);
    }
    let spec = format!("{}/{}", rule.port, rule.proto);
    let args = ["delete", "allow", &spec];
    r.run_ok("ufw", &args)?;
    Ok(CloseOutcome::Closed {
        commands: vec![render("ufw", &args)],
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fake::FakeRunner;
    use crate::Proto;

    fn rule() -> Rule {
        Rule::new(8888, Proto::Tcp)
    }

    #[test]
    fn iptables_open_inserts_at_the_head_once_per_family() {
        let r = FakeRunner::default()
            .answer("iptables -C", 1, "")
            .answer("ip6tables -C", 1, "")
            .answer("iptables -S INPUT", 0, "-P INPUT DROP\n")
            .answer("ip6tables -S INPUT", 0, "-P INPUT DROP\n");
        let out = open(&r, Backend::Iptables, &rule()).unwrap();
        let want = "-I INPUT 1 -p tcp -m tcp --dport 8888 -m comment --comment kiln -j ACCEPT";
        assert_eq!(
            out,
            OpenOutcome::Opened {
                commands: vec![format!("iptables {want}"), format!("ip6tables {want}")]
            }
        );
    }

    #[test]
    fn iptables_open_twice_is_a_no_op() {
        let r = FakeRunner::default()
            .answer("iptables -C", 0, "")
            .answer("ip6tables -C", 0, "");
        assert_eq!(
            open(&r, Backend::Iptables, &rule()).unwrap(),
            OpenOutcome::AlreadyOpen
        );
        assert!(r.calls().iter().all(|c| !c.contains(" -I ")));
    }

    #[test]
    fn iptables_other_owner_changes_nothing() {
        let r = FakeRunner::default()
            .answer("iptables -C", 1, "")
            .answer("ip6tables -C", 1, "")
            .answer(
                "iptables -S INPUT",
                0,
                "-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 8888 -j ACCEPT\n",
            )
            .answer("ip6tables -S INPUT", 0, "-P INPUT DROP\n");
        match open(&r, Backend::Iptables, &rule()).unwrap() {
            OpenOutcome::AllowedByOther { detail } => assert!(detail.contains("--dport 8888")),
            other => panic!("{other:?}"),
        }
        assert!(
            r.calls().iter().all(|c| !c.contains(" -I ")),
            "{:?}",
            r.calls()
        );
    }

    #[test]
    fn iptables_port_prefix_is_not_the_same_port() {
        // --dport 88880 is not 8888: not another owner of our port
        let r = FakeRunner::default().answer(
            "iptables -S INPUT",
            0,
            "-P INPUT DROP\n-A INPUT -p tcp -m tcp --dport 88880 -j ACCEPT\n",
        );
        assert!(iptables_other_rules(&r, "iptables", &rule())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn iptables_accept_policy_is_not_filtered() {
        let r = FakeRunner {
            missing: vec!["ip6tables".into()],
            ..Default::default()
        }
        .answer("iptables -C", 1, "")
        .answer(
            "iptables -S INPUT",
            0,
            "-P INPUT ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n",
        );
        assert!(matches!(
            open(&r, Backend::Iptables, &rule()).unwrap(),
            OpenOutcome::NotFiltered { .. }
        ));
    }

    #[test]
    fn iptables_close_deletes_exactly_the_rule() {
        // present once (the first -C), then gone
        let r = FakeRunner {
            missing: vec!["ip6tables".into()],
            ..Default::default()
        }
        .answer("iptables -C", 1, "")
        .answer_times("iptables -C", 1, 0, "");
        let want =
            "iptables -D INPUT -p tcp -m tcp --dport 8888 -m comment --comment kiln -j ACCEPT";
        assert_eq!(
            close(&r, Backend::Iptables, &rule()).unwrap(),
            CloseOutcome::Closed {
                commands: vec![want.to_string()],
                notes: vec![]
            }
        );
        assert_eq!(
            close(&r, Backend::Iptables, &rule()).unwrap(),
            CloseOutcome::NotOpen
        );
    }

    #[test]
    fn missing_tool_is_reported() {
        let r = FakeRunner {
            missing: vec!["nft".into()],
            ..Default::default()
        };
        let e = open(&r, Backend::Nftables, &rule()).unwrap_err();
        assert!(e.to_string().contains("apt-get install nftables"), "{e}");
        assert!(r.calls().is_empty());
    }

    const NFT_DROP: &str = r#"{"nftables":[{"metainfo":{}},
      {"table":{"family":"inet","name":"filter","handle":1}},
      {"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
      {"chain":{"family":"ip","table":"filter","name":"INPUT","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
      {"rule":{"family":"inet","table":"filter","chain":"input","handle":2,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"accept":null}]}}]}"#;

    #[test]
    fn nft_open_inserts_into_filtering_chains_only() {
        let r = FakeRunner::default().answer("nft -j -a list ruleset", 0, NFT_DROP);
        let out = open(&r, Backend::Nftables, &rule()).unwrap();
        assert_eq!(
            out,
            OpenOutcome::Opened {
                commands: vec![
                    "nft insert rule inet filter input tcp dport 8888 accept comment '\"kiln\"'"
                        .to_string()
                ]
            }
        );
    }

    #[test]
    fn nft_close_deletes_by_handle() {
        let kiln_rule = r#"{"rule":{"family":"inet","table":"filter","chain":"input","handle":7,"comment":"kiln","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":8888}},{"accept":null}]}}"#;
        let head = NFT_DROP.trim_end().strip_suffix("]}").unwrap();
        let with_kiln = format!("{head},{kiln_rule}]}}");
        // the replacement above must have produced valid JSON with the kiln rule
        assert!(
            NftRuleset::parse(&with_kiln)
                .unwrap()
                .kiln_rules(&rule())
                .len()
                == 1
        );
        let r = FakeRunner::default().answer("nft -j -a list ruleset", 0, &with_kiln);
        assert_eq!(
            close(&r, Backend::Nftables, &rule()).unwrap(),
            CloseOutcome::Closed {
                commands: vec!["nft delete rule inet filter input handle 7".to_string()],
                notes: vec![]
            }
        );
        // and a second open is a no-op
        assert_eq!(
            open(&r, Backend::Nftables, &rule()).unwrap(),
            OpenOutcome::AlreadyOpen
        );
    }

    const UFW_ACTIVE: &str = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     ALLOW       Anywhere\n8888/tcp                   ALLOW       Anywhere                   # kiln\n8888/tcp (v6)              ALLOW       Anywhere (v6)              # kiln\n";

    #[test]
    fn ufw_parses_comments() {
        let st = UfwStatus::parse(UFW_ACTIVE);
        assert!(st.active);
        assert!(st.kiln_rule(&rule()));
        assert!(st.other_rules(&rule()).is_empty());
        assert!(!st.kiln_rule(&Rule::new(22, Proto::Tcp)));
    }

    #[test]
    fn ufw_open_and_close_commands() {
        let inactive_rules = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     ALLOW       Anywhere\n";
        let r = FakeRunner::default().answer("ufw status", 0, inactive_rules);
        assert_eq!(
            open(&r, Backend::Ufw, &rule()).unwrap(),
            OpenOutcome::Opened {
                commands: vec!["ufw allow 8888/tcp comment kiln".into()]
            }
        );
        let r = FakeRunner::default().answer("ufw status", 0, UFW_ACTIVE);
        assert_eq!(
            open(&r, Backend::Ufw, &rule()).unwrap(),
            OpenOutcome::AlreadyOpen
        );
        assert_eq!(
            close(&r, Backend::Ufw, &rule()).unwrap(),
            CloseOutcome::Closed {
                commands: vec!["ufw delete allow 8888/tcp".into()],
                notes: vec![]
            }
        );
    }

    #[test]
    fn ufw_other_owner_is_left_alone() {
        let other = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n8888/tcp                   ALLOW       Anywhere                   # web\n";
        let r = FakeRunner::default().answer("ufw status", 0, other);
        assert!(matches!(
            open(&r, Backend::Ufw, &rule()).unwrap(),
            OpenOutcome::AllowedByOther { .. }
        ));
        assert_eq!(
            close(&r, Backend::Ufw, &rule()).unwrap(),
            CloseOutcome::NotOpen
        );
        assert_eq!(r.calls(), vec!["ufw status", "ufw status"]);
    }

    #[test]
    fn nixos_commands() {
        let r = FakeRunner::default();
        assert_eq!(
            open(&r, Backend::Nixos, &rule()).unwrap(),
            OpenOutcome::Opened {
                commands: vec!["nixos-firewall-tool open tcp 8888".into()]
            }
        );
        match close(&r, Backend::Nixos, &rule()).unwrap() {
            CloseOutcome::Closed { commands, notes } => {
                assert_eq!(commands, vec!["nixos-firewall-tool reset"]);
                assert!(notes[0].contains("EVERY temporary rule"));
            }
            other => panic!("{other:?}"),
        }
    }
}
