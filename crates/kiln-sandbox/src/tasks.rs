//! Worker tasks with UPIDs in PVE's format, their status and logs.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// `^UPID:node:pid(8 hex):pstart(8-9 hex):starttime(8 hex):type:id:user:$`
pub fn parse_upid(upid: &str) -> Option<UpidParts> {
    let re = crate::validate::perl_regex(
        r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):",
    )?;
    let c = re.captures(upid)?;
    Some(UpidParts {
        node: c[1].to_string(),
        pid: u32::from_str_radix(&c[3], 16).ok()?,
        pstart: u64::from_str_radix(&c[4], 16).ok()?,
        starttime: i64::from_str_radix(&c[5], 16).ok()?,
        ty: c[6].to_string(),
        id: c[7].to_string(),
        user: c[8].to_string(),
    })
}

#[derive(Debug, Clone)]
pub struct UpidParts {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub ty: String,
    pub id: String,
    pub user: String,
}

#[derive(Debug)]
pub struct Task {
    pub upid: String,
    pub parts: UpidParts,
    pub log: Vec<String>,
    /// None while running; Some(exitstatus) when stopped
    pub exitstatus: Option<String>,
    pub endtime: Option<i64>,
}

/// Handle a worker uses to log.
#[derive(Clone)]
pub struct TaskLog {
    task: Arc<Mutex<Task>>,
}

impl TaskLog {
    pub fn log(&self, line: impl Into<String>) {
        let mut t = self.task.lock().unwrap_or_else(|e| e.into_inner());
        for l in line.into().lines() {
            t.log.push(l.to_string());
        }
    }
    pub fn upid(&self) -> String {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upid
            .clone()
    }
}

pub struct Tasks {
    node: String,
    list: Mutex<VecDeque<Arc<Mutex<Task>>>>,
    counter: AtomicU32,
    pstart_base: u64,
}

fn own_pstart() -> u64 {
    // field 22 of /proc/self/stat: start time in clock ticks since boot
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(19)?.parse().ok()
        })
        .unwrap_or(1000)
}

impl Tasks {
    pub fn new(node: &str) -> Self {
        Tasks {
            node: node.to_string(),
            list: Mutex::new(VecDeque::new()),
            counter: AtomicU32::new(0),
            pstart_base: own_pstart(),
        }
    }

    fn new_task(&self, ty: &str, id: &str, user: &str) -> Arc<Mutex<Task>> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id().wrapping_add(n + 1);
        let pstart = self.pstart_base + u64::from(n) + 1;
        let starttime = crate::auth::now();
        // the UPID id field cannot hold ':' '/' or whitespace
        let id: String = id
            .chars()
            .map(|c| {
                if c == ':' || c == '/' || c.is_whitespace() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let id = id.as_str();
        let upid = format!(
            "UPID:{}:{pid:08X}:{pstart:08X}:{starttime:08X}:{ty}:{id}:{user}:",
            self.node
        );
        let parts = UpidParts {
            node: self.node.clone(),
            pid,
            pstart,
            starttime,
            ty: ty.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        };
        let t = Arc::new(Mutex::new(Task {
            upid,
            parts,
            log: Vec::new(),
            exitstatus: None,
            endtime: None,
        }));
        let mut l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.push_front(t.clone());
        l.truncate(1000);
        t
    }

    /// Start a worker; returns its UPID. `injected` makes the task fail with that message at its end
    /// (fault injection) even if the work succeeded.
    pub fn spawn<F, Fut>(
        &self,
        ty: &str,
        id: &str,
        user: &str,
        injected: Option<String>,
        work: F,
    ) -> String
    where
        F: FnOnce(TaskLog) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let task = self.new_task(ty, id, user);
        let upid = task.lock().unwrap_or_else(|e| e.into_inner()).upid.clone();
        let log = TaskLog { task: task.clone() };
        tokio::spawn(async move {
            let res = match injected {
                Some(msg) => Err(msg),
                None => work(log.clone()).await,
            };
            let mut t = task.lock().unwrap_or_else(|e| e.into_inner());
            match res {
                Ok(()) => {
                    t.log.push("TASK OK".to_string());
                    t.exitstatus = Some("OK".to_string());
                }
                Err(e) => {
                    let e = e.trim_end().to_string();
                    t.log.push(format!("TASK ERROR: {e}"));
                    t.exitstatus = Some(e);
                }
            }
            t.endtime = Some(crate::auth::now());
        });
        upid
    }

    pub fn find(&self, upid: &str) -> Option<Arc<Mutex<Task>>> {
        let l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .find(|t| t.lock().map(|t| t.upid == upid).unwrap_or(false))
            .cloned()
    }

    /// Wait until a task has stopped; returns its exit status.
    pub async fn wait(&self, upid: &str, timeout: std::time::Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self
                .find(upid)
                .and_then(|t| t.lock().ok().and_then(|t| t.exitstatus.clone()));
            if st.is_some() || tokio::time::Instant::now() >= deadline {
                return st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn status_json(t: &Task) -> Value {
        let (user, tokenid) = match t.parts.user.split_once('!') {
            Some((u, tok)) => (u.to_string(), Some(tok.to_string())),
            None => (t.parts.user.clone(), None),
        };
        let mut v = json!({
            "upid": t.upid,
            "node": t.parts.node,
            "pid": t.parts.pid,
            "pstart": t.parts.pstart,
            "starttime": t.parts.starttime,
            "type": t.parts.ty,
            "id": t.parts.id,
            "user": user,
            "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
        });
        if let Some(tok) = tokenid {
            v["tokenid"] = json!(tok);
        }
        if let Some(e) = &t.exitstatus {
            v["exitstatus"] = json!(e);
        }
        v
    }

    pub fn list_json(
        &self,
        vmid: Option<&str>,
        typefilter: Option<&str>,
        errors_only: bool,
    ) -> Vec<Value> {
        let l = self.list.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .filter_map(|t| {
                let t = t.lock().ok()?;
                if vmid.is_some_and(|v| v != t.parts.id) || typefilter.is_some_and(|f| f != t.parts.ty) {
                    return None;
                }
                if errors_only && matches!(t.exitstatus.as_deref(), Some("OK") | None) {
                    return None;
                }
                let mut v = json!({
                    "upid": t.upid, "node": t.parts.node, "pid": t.parts.pid, "pstart": t.parts.pstart,
                    "starttime": t.parts.starttime, "type": t.parts.ty, "id": t.parts.id, "user": t.parts.user,
                });
                if let Some(e) = &t.exitstatus {
                    v["status"] = json!(e);
                }
                if let Some(e) = t.endtime {
                    v["endtime"] = json!(e);
                }
                Some(v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_format() {
        let p = parse_upid("UPID:pve1:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:").unwrap();
        assert_eq!(p.ty, "vzdump");
        assert_eq!(p.id, "100");
        assert!(parse_upid("UPID:pve:1:2:3:x:1:root@pam:").is_none());
        assert!(parse_upid("UPID:pve:00010D94:001CA6EA:6124E1B9:imgcopy::root@pam!tok:").is_some());
    }

    #[tokio::test]
    async fn task_lifecycle() {
        let tasks = Tasks::new("pve");
        let upid = tasks.spawn("qmstart", "100", "root@pam", None, |log| async move {
            log.log("hello");
            Ok(())
        });
        assert!(parse_upid(&upid).is_some(), "{upid}");
        assert!(upid.ends_with(":qmstart:100:root@pam:"));
        assert_eq!(
            tasks
                .wait(&upid, std::time::Duration::from_secs(5))
                .await
                .as_deref(),
            Some("OK")
        );
        let t = tasks.find(&upid).unwrap();
        let t = t.lock().unwrap();
        assert_eq!(t.log, vec!["hello", "TASK OK"]);
        let s = Tasks::status_json(&t);
        assert_eq!(s["status"], "stopped");
        assert_eq!(s["exitstatus"], "OK");
    }
}
