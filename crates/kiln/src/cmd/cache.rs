//! `kiln cache ls` and `kiln cache prune [--all | --older-than DURATION | --keep N]`: the install
//! cache's base templates (`kiln build --cache-install`) on the Proxmox VE given by the
//! `PROXMOX_URL`, `PROXMOX_USERNAME`, `PROXMOX_PASSWORD`/`PROXMOX_TOKEN` and `PROXMOX_FINGERPRINT`
//! environment variables (as for `kiln build`).

use crate::exit::{CmdResult, Code};
use kiln_build::cache::{self, Base, Prune};
use kiln_config::model::ProxmoxIsoConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
    /// Do not verify the PVE certificate (prefer PROXMOX_FINGERPRINT)
    #[arg(long = "insecure-skip-tls-verify", global = true)]
    pub insecure: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List the base templates: key, VM id, name, node, created, disk size, build and template dir
    Ls,
    /// Remove base templates (and VMs left by an interrupted layer)
    #[command(group(clap::ArgGroup::new("rule").required(true).args(["all", "older_than", "keep"])))]
    Prune {
        /// Remove every base
        #[arg(long)]
        all: bool,
        /// Remove the bases created longer ago than this (`90s`, `30m`, `12h`, `7d`, `2w`, `1d12h`)
        #[arg(long = "older-than", value_name = "DURATION")]
        older_than: Option<String>,
        /// Keep the newest N bases of each build (template dir and build name), remove the others
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Only say what would be removed
        #[arg(long = "dry-run")]
        dry_run: bool,
    },
}

/// `7d`, `12h`, `30m`, `90s`, `2w` and sums like `1d12h` → seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => {
                return Err(format!(
                    "{s:?}: unknown unit {c:?} (use s, m, h, d or w, e.g. 7d or 1d12h)"
                ))
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c:?} (e.g. 7d)"))?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or("duration too large")?)
            .ok_or("duration too large")?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: the number {num} has no unit (e.g. {num}d)"));
    }
    Ok(total)
}

fn env_config(insecure: bool) -> ProxmoxIsoConfig {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    ProxmoxIsoConfig {
        proxmox_url: env("PROXMOX_URL"),
        username: env("PROXMOX_USERNAME"),
        password: env("PROXMOX_PASSWORD"),
        token: env("PROXMOX_TOKEN"),
        proxmox_fingerprint: env("PROXMOX_FINGERPRINT"),
        insecure_skip_tls_verify: insecure,
        ..ProxmoxIsoConfig::default()
    }
}

fn fmt_time(t: Option<u64>) -> String {
    let Some(t) = t else {
        return "?".into();
    };
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn fmt_size(b: u64) -> String {
    if b == 0 {
        "?".into()
    } else if b % (1 << 30) == 0 {
        format!("{}G", b >> 30)
    } else {
        format!("{}M", b >> 20)
    }
}

/// The table of `kiln cache ls` (also printed by prune).
pub fn table(bases: &[Base]) -> String {
    let mut rows = vec![[
        "KEY".to_string(),
        "VMID".into(),
        "NAME".into(),
        "NODE".into(),
        "CREATED".into(),
        "DISK".into(),
        "BUILD".into(),
        "TEMPLATE DIR".into(),
    ]];
    for b in bases {
        rows.push([
            b.info
                .key
                .as_deref()
                .map(|k| format!("sha256:{}", &k[..k.len().min(16)]))
                .unwrap_or_else(|| "?".into()),
            b.vmid.to_string(),
            if b.template {
                b.name.clone()
            } else {
                format!("{} (incomplete)", b.name)
            },
            b.node.clone(),
            fmt_time(b.info.created),
            fmt_size(b.disk_bytes),
            b.info.build.clone().unwrap_or_else(|| "?".into()),
            b.info.template.clone().unwrap_or_else(|| "?".into()),
        ]);
    }
    let mut w = [0usize; 8];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(args: Args) -> CmdResult {
    let cfg = env_config(args.insecure);
    let opts = match kiln_build::steps::connect_options(&cfg, &|k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: kiln cache: {e}");
            return Ok(Code::Usage);
        }
    };
    let client = match kiln_pve::Client::connect(opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: kiln cache: cannot connect to Proxmox VE: {e}");
            return Ok(Code::Failed);
        }
    };
    let bases = match cache::list_bases(&client).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: kiln cache: listing the base templates: {e}");
            return Ok(Code::Failed);
        }
    };
    match args.command {
        Sub::Ls => {
            if bases.is_empty() {
                println!(
                    "No install-cache base templates (kiln build --cache-install makes them)."
                );
            } else {
                print!("{}", table(&bases));
            }
            Ok(Code::Ok)
        }
        Sub::Prune {
            all,
            older_than,
            keep,
            dry_run,
        } => {
            let rule = if all {
                Prune::All
            } else if let Some(d) = older_than {
                match parse_duration(&d) {
                    Ok(s) => Prune::OlderThan(s),
                    Err(e) => {
                        eprintln!("error: --older-than: {e}");
                        return Ok(Code::Usage);
                    }
                }
            } else {
                Prune::Keep(keep.unwrap_or(0))
            };
            let gone = cache::select_prune(&bases, rule, cache::now_unix());
            if gone.is_empty() {
                println!("Nothing to prune ({} base template(s) kept).", bases.len());
                return Ok(Code::Ok);
            }
            print!("{}", table(&gone));
            if dry_run {
                println!("Would remove {} base template(s) (--dry-run).", gone.len());
                return Ok(Code::Ok);
            }
            let mut failed = 0;
            for b in &gone {
                match remove(&client, b).await {
                    Ok(()) => println!("Removed {} ({}) on {}", b.vmid, b.name, b.node),
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "error: removing {} ({}) on {}: {e}\n  remove it by hand: {}",
                            b.vmid,
                            b.name,
                            b.node,
                            kiln_build::steps::vm_manual_commands(&b.node, b.vmid)
                        );
                    }
                }
            }
            println!(
                "Removed {} of {} selected base template(s); {} kept.",
                gone.len() - failed,
                gone.len(),
                bases.len() - gone.len()
            );
            Ok(if failed == 0 { Code::Ok } else { Code::Failed })
        }
    }
}

async fn remove(client: &kiln_pve::Client, b: &Base) -> Result<(), String> {
    let wait = kiln_pve::WaitOptions {
        poll_interval: std::time::Duration::from_millis(500),
        timeout: std::time::Duration::from_secs(300),
        log_lines_on_failure: 10,
    };
    if let Ok(s) = client.qemu_status(&b.node, b.vmid).await {
        if s.is_running() {
            let t = client
                .qemu_stop(&b.node, b.vmid)
                .await
                .map_err(|e| format!("stopping it: {e}"))?;
            client
                .wait_opt(t, &wait)
                .await
                .map_err(|e| format!("stopping it: {e}"))?;
        }
    }
    let t = client
        .qemu_delete(
            &b.node,
            b.vmid,
            &kiln_pve::DeleteVmOptions {
                purge: true,
                destroy_unreferenced_disks: true,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    client
        .wait_opt(t, &wait)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert!(parse_duration("7").unwrap_err().contains("has no unit"));
        assert!(parse_duration("7y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("d").is_err());
    }
}
