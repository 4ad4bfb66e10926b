//! Fault injection: fail the Nth call of a route with a status, delay it, drop the connection, fail
//! the Nth task of a type with a message, disable the guest agent.
//!
//! File format (JSON, `--faults FILE`):
//! ```json
//! {"rules": [
//!   {"method": "POST", "path": "/nodes/{node}/qemu/{vmid}/status/start", "nth": 1, "status": 596, "message": "Broken pipe"},
//!   {"method": "PUT", "path": "/nodes/{node}/qemu/{vmid}/sendkey", "delay_ms": 500},
//!   {"path": "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", "nth": 2, "drop": true},
//!   {"task_type": "qmstart", "nth": 1, "task_error": "start failed: injected"}
//! ],
//! "agent_disabled": false}
//! ```
//! `path` is the schema template (or the concrete path); `method` is optional; `nth` counts calls
//! matching the rule from 1 (absent = every call); `times` (default 1 when `nth` given) how many calls
//! from the Nth on are affected.

use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FaultRule {
    pub method: Option<String>,
    pub path: Option<String>,
    pub nth: Option<u64>,
    pub times: Option<u64>,
    pub status: Option<u16>,
    pub message: Option<String>,
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub drop: bool,
    pub task_type: Option<String>,
    pub task_error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    #[serde(default)]
    pub agent_disabled: bool,
}

/// What to do to a request.
#[derive(Debug, Default, Clone)]
pub struct RequestFault {
    pub delay_ms: u64,
    pub fail: Option<(u16, String)>,
    pub drop: bool,
}

pub struct FaultState {
    rules: Vec<(FaultRule, AtomicU64)>,
    pub agent_disabled: AtomicBool,
}

impl Faults {
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("fault file: {e}"))
    }

    /// `METHOD:PATH:N:STATUS[:MESSAGE]`
    pub fn parse_fail(s: &str) -> Result<FaultRule, String> {
        let p: Vec<&str> = s.splitn(5, ':').collect();
        if p.len() < 4 {
            return Err(format!(
                "--fail '{s}': expected METHOD:PATH:N:STATUS[:MESSAGE]"
            ));
        }
        Ok(FaultRule {
            method: Some(p[0].to_uppercase()),
            path: Some(p[1].to_string()),
            nth: Some(
                p[2].parse()
                    .map_err(|_| format!("--fail '{s}': N must be a number"))?,
            ),
            status: Some(
                p[3].parse()
                    .map_err(|_| format!("--fail '{s}': STATUS must be a number"))?,
            ),
            message: p.get(4).map(|m| m.to_string()),
            ..Default::default()
        })
    }

    /// `METHOD:PATH:MS`
    pub fn parse_delay(s: &str) -> Result<FaultRule, String> {
        let p: Vec<&str> = s.splitn(3, ':').collect();
        if p.len() != 3 {
            return Err(format!("--delay '{s}': expected METHOD:PATH:MILLISECONDS"));
        }
        Ok(FaultRule {
            method: Some(p[0].to_uppercase()),
            path: Some(p[1].to_string()),
            delay_ms: Some(
                p[2].parse()
                    .map_err(|_| format!("--delay '{s}': bad milliseconds"))?,
            ),
            ..Default::default()
        })
    }

    /// `METHOD:PATH:N`
    pub fn parse_drop(s: &str) -> Result<FaultRule, String> {
        let p: Vec<&str> = s.splitn(3, ':').collect();
        if p.len() != 3 {
            return Err(format!("--drop '{s}': expected METHOD:PATH:N"));
        }
        Ok(FaultRule {
            method: Some(p[0].to_uppercase()),
            path: Some(p[1].to_string()),
            nth: Some(
                p[2].parse()
                    .map_err(|_| format!("--drop '{s}': N must be a number"))?,
            ),
            drop: true,
            ..Default::default()
        })
    }

    /// `TYPE:N:MESSAGE`
    pub fn parse_fail_task(s: &str) -> Result<FaultRule, String> {
        let p: Vec<&str> = s.splitn(3, ':').collect();
        if p.len() != 3 {
            return Err(format!("--fail-task '{s}': expected TYPE:N:MESSAGE"));
        }
        Ok(FaultRule {
            task_type: Some(p[0].to_string()),
            nth: Some(
                p[1].parse()
                    .map_err(|_| format!("--fail-task '{s}': N must be a number"))?,
            ),
            task_error: Some(p[2].to_string()),
            ..Default::default()
        })
    }
}

fn hits(rule: &FaultRule, count: u64) -> bool {
    match rule.nth {
        None => true,
        Some(n) => {
            let times = rule.times.unwrap_or(1);
            count >= n && count < n + times
        }
    }
}

impl FaultState {
    pub fn new(f: Faults) -> Self {
        FaultState {
            agent_disabled: AtomicBool::new(f.agent_disabled),
            rules: f
                .rules
                .into_iter()
                .map(|r| (r, AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Faults for a request to `template` (schema path) / `concrete` path.
    pub fn for_request(&self, method: &str, template: &str, concrete: &str) -> RequestFault {
        let mut out = RequestFault::default();
        for (r, counter) in &self.rules {
            if r.task_type.is_some() {
                continue;
            }
            if let Some(m) = &r.method {
                if !m.eq_ignore_ascii_case(method) {
                    continue;
                }
            }
            if let Some(p) = &r.path {
                let p = p.trim_end_matches('/');
                if p != template && p != concrete {
                    continue;
                }
            }
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if !hits(r, n) {
                continue;
            }
            if let Some(d) = r.delay_ms {
                out.delay_ms += d;
            }
            if r.drop {
                out.drop = true;
            }
            if let Some(s) = r.status {
                let msg = r.message.clone().unwrap_or_else(|| match s {
                    595 => {
                        "Errors during connection establishment, proxy handshake: No route to host"
                            .into()
                    }
                    596 => "Broken pipe".into(),
                    _ => "injected fault".into(),
                });
                out.fail = Some((s, msg));
            }
        }
        out
    }

    /// An injected error for the next task of `task_type`, if any.
    pub fn for_task(&self, task_type: &str) -> Option<String> {
        let mut out = None;
        for (r, counter) in &self.rules {
            if r.task_type.as_deref() != Some(task_type) {
                continue;
            }
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if hits(r, n) {
                out = r.task_error.clone();
            }
        }
        out
    }

    pub fn agent_disabled(&self) -> bool {
        self.agent_disabled.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_call_fails_once() {
        let f = Faults {
            rules: vec![Faults::parse_fail("POST:/x/{id}:2:596").unwrap()],
            agent_disabled: false,
        };
        let s = FaultState::new(f);
        assert!(s.for_request("POST", "/x/{id}", "/x/1").fail.is_none());
        assert_eq!(
            s.for_request("POST", "/x/{id}", "/x/1").fail.unwrap().0,
            596
        );
        assert!(s.for_request("POST", "/x/{id}", "/x/1").fail.is_none());
        assert!(s.for_request("GET", "/x/{id}", "/x/1").fail.is_none());
    }

    #[test]
    fn task_fault() {
        let s = FaultState::new(Faults {
            rules: vec![Faults::parse_fail_task("qmstart:1:boom").unwrap()],
            agent_disabled: false,
        });
        assert_eq!(s.for_task("qmstart").as_deref(), Some("boom"));
        assert_eq!(s.for_task("qmstart"), None);
    }
}
