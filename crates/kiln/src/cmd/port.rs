//! `kiln port open|close|status`: the HTTP server's port in the host firewall.

use crate::exit::{CmdResult, Code};
use kiln_firewall::{
    backend::NIXOS_RESET_NOTE, Backend, Choice, CloseOutcome, Detection, Firewall, FirewallError,
    OpenOutcome, Owner, Proto, Rule,
};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Let the port in (idempotent: opening twice adds one rule)
    Open(PortArgs),
    /// Remove the rule kiln added (and nothing else)
    Close {
        #[command(flatten)]
        port: PortArgs,
        /// Close the rules of builds that are no longer running (crashed or killed)
        #[arg(long, conflicts_with = "port")]
        stale: bool,
    },
    /// Show which firewall filters, and whether the port is open
    Status(PortArgs),
}

#[derive(clap::Args, Debug)]
struct PortArgs {
    /// The port (default: the template's `http_port_min` when DIR is given)
    #[arg(long)]
    port: Option<u16>,
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// auto, iptables, nftables, ufw or nixos
    #[arg(long, default_value = "auto", env = "KILN_FIREWALL_BACKEND")]
    backend: String,
    /// The comment that marks kiln's rule
    #[arg(long, default_value = Rule::DEFAULT_COMMENT)]
    comment: String,
    /// A template directory or file: its `http_port_min` is the default port
    dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> CmdResult {
    // firewall tools are quick, blocking programs: run them off the async workers
    let joined = tokio::task::spawn_blocking(move || run_blocking(args)).await;
    match joined {
        Ok(r) => r,
        Err(e) => Err(miette::miette!("kiln port panicked: {e}")),
    }
}

fn run_blocking(args: Args) -> CmdResult {
    let fw = Firewall::system();
    match args.action {
        Action::Close { stale: true, .. } => close_stale(&fw),
        Action::Open(p) => with_rule(&p, |rule, choice| open(&fw, choice, &rule)),
        Action::Close { port, .. } => with_rule(&port, |rule, choice| close(&fw, choice, &rule)),
        Action::Status(p) => with_rule(&p, |rule, choice| status(&fw, choice, &rule)),
    }
}

fn with_rule(p: &PortArgs, f: impl FnOnce(Rule, Choice) -> CmdResult) -> CmdResult {
    let port = match (p.port, &p.dir) {
        (Some(port), _) => port,
        (None, Some(dir)) => crate::cmd::template_http_port(dir)?,
        (None, None) => {
            eprintln!("error: which port? pass --port N, or a template directory whose http_port_min kiln uses");
            return Ok(Code::Usage);
        }
    };
    let parsed = p
        .proto
        .parse::<Proto>()
        .and_then(|proto| Ok((proto, p.backend.parse::<Choice>()?)));
    let (proto, choice) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Code::Usage);
        }
    };
    let rule = Rule::new(port, proto).with_comment(p.comment.clone());
    if let Err(e) = rule.validate() {
        eprintln!("error: {e}");
        return Ok(Code::Usage);
    }
    f(rule, choice)
}

fn say_detection(d: &Option<Detection>, backend: Option<Backend>) {
    if let Some(d) = d {
        let chosen = backend
            .map(|b| format!("using {b}"))
            .unwrap_or_else(|| "no firewall filters incoming connections".into());
        println!("firewall: {} → {chosen}", d.findings.join("; "));
    }
}

fn fail(e: FirewallError) -> CmdResult {
    eprintln!("error: {e}");
    Ok(Code::Failed)
}

fn open(fw: &Firewall, choice: Choice, rule: &Rule) -> CmdResult {
    let report = match fw.open(choice, rule, Owner::Manual) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    say_detection(&report.detection, report.backend);
    match report.outcome {
        OpenOutcome::Opened { commands } => {
            for c in &commands {
                println!("ran: {c}");
            }
            println!(
                "opened {rule} in {}",
                report.backend.map(|b| b.name()).unwrap_or("?")
            );
            Ok(Code::Ok)
        }
        OpenOutcome::AlreadyOpen => {
            println!("already open: kiln's rule for {rule} is in place; nothing changed");
            Ok(Code::Ok)
        }
        OpenOutcome::NotFiltered { detail } => {
            println!("nothing to open: the firewall does not filter incoming connections ({detail}); nothing changed");
            Ok(Code::Ok)
        }
        OpenOutcome::AllowedByOther { detail } => {
            eprintln!(
                "error: port {}/{} is already allowed by a rule kiln did not add ({detail}); nothing changed\n  \
                 hint: the port is reachable already; kiln will not add or remove a rule it does not own",
                rule.port, rule.proto
            );
            Ok(Code::Failed)
        }
    }
}

fn close(fw: &Firewall, choice: Choice, rule: &Rule) -> CmdResult {
    if matches!(choice, Choice::Backend(Backend::Nixos)) {
        println!("note: {NIXOS_RESET_NOTE}");
    }
    let report = match fw.close(choice, rule) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    say_detection(&report.detection, report.backend);
    match report.outcome {
        CloseOutcome::Closed { commands, notes } => {
            for n in notes
                .iter()
                .filter(|_| !matches!(choice, Choice::Backend(Backend::Nixos)))
            {
                println!("note: {n}");
            }
            for c in &commands {
                println!("ran: {c}");
            }
            println!("closed {rule}");
        }
        CloseOutcome::NotOpen => println!("not open: kiln has no rule for {rule}; nothing changed"),
    }
    Ok(Code::Ok)
}

fn close_stale(fw: &Firewall) -> CmdResult {
    match fw.close_stale() {
        Ok(done) if done.is_empty() => {
            println!(
                "no stale rules (state file {})",
                fw.state().path().display()
            );
            Ok(Code::Ok)
        }
        Ok(done) => {
            for (e, outcome) in done {
                let what = match outcome {
                    CloseOutcome::Closed { .. } => "closed",
                    CloseOutcome::NotOpen => "already gone",
                };
                println!(
                    "{what}: {} in {} (left by a build that is no longer running)",
                    e.rule, e.backend
                );
            }
            Ok(Code::Ok)
        }
        Err(e) => fail(e),
    }
}

fn status(fw: &Firewall, choice: Choice, rule: &Rule) -> CmdResult {
    let report = match fw.status(choice, rule) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    say_detection(&report.detection, report.backend);
    if let (Some(b), Some(st)) = (report.backend, report.status) {
        println!("backend: {b}");
        println!(
            "filters incoming: {}",
            st.filtering.as_deref().unwrap_or("no")
        );
        println!(
            "kiln's rule for {rule}: {}",
            if st.kiln_rule { "present" } else { "absent" }
        );
        for o in &st.other_rules {
            println!("other rule for the port: {o}");
        }
    }
    for e in &report.recorded {
        let owner = match &e.owner {
            Owner::Manual => "kiln port open".to_string(),
            Owner::Build { pid, .. } if e.owner.is_gone() => {
                format!("build pid {pid} (gone: stale)")
            }
            Owner::Build { pid, .. } => format!("build pid {pid}"),
        };
        println!("recorded: {} in {} by {owner}", e.rule, e.backend);
    }
    Ok(Code::Ok)
}
