//! Typed endpoints. Path parameters are percent-encoded per segment.
//!
//! Methods returning `Option<Upid>` start a PVE task: `Some(upid)` must be
//! waited for ([`Client::wait_task`]); `None` means PVE answered
//! `{"data": null}` (finished synchronously).

use crate::client::{seg, Client, RetryClass};
use crate::error::{Error, Result};
use crate::types::*;
use crate::upid::Upid;
use futures::StreamExt;
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options for `POST …/status/shutdown`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownOptions {
    /// Seconds PVE waits for the guest (`timeout`).
    pub timeout: Option<u32>,
    /// Stop the VM hard if the shutdown times out (`forceStop=1`).
    pub force_stop: bool,
}

/// Options for `POST …/clone`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneOptions {
    /// New VM id.
    pub newid: u32,
    /// New VM name.
    pub name: Option<String>,
    /// Full clone (copy disks) instead of a linked clone.
    pub full: Option<bool>,
    /// Target storage for full clones.
    pub storage: Option<String>,
    /// Target node.
    pub target: Option<String>,
    /// Pool.
    pub pool: Option<String>,
    /// Description.
    pub description: Option<String>,
}

/// Options for `DELETE /nodes/{node}/qemu/{vmid}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteVmOptions {
    /// Remove from backup jobs, replication, HA, ACLs (`purge=1`).
    pub purge: bool,
    /// Also destroy disks not referenced in the config (`destroy-unreferenced-disks=1`).
    pub destroy_unreferenced_disks: bool,
}

/// An ISO/template upload from a local file.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// Local file (streamed, never loaded into memory).
    pub path: PathBuf,
    /// Name on the storage (`ubuntu.iso`); PVE checks the extension.
    pub filename: String,
    /// Content type.
    pub content: UploadContent,
    /// Optional checksum PVE verifies.
    pub checksum: Option<Checksum>,
}

/// `POST …/download-url` (PVE fetches the file itself).
#[derive(Debug, Clone)]
pub struct DownloadUrlRequest {
    /// Source URL (`http(s)://…`).
    pub url: String,
    /// Name on the storage.
    pub filename: String,
    /// Content type.
    pub content: UploadContent,
    /// Optional checksum.
    pub checksum: Option<Checksum>,
    /// Verify the source's TLS certificate (PVE default: yes).
    pub verify_certificates: Option<bool>,
}

/// Progress callback for uploads: `(bytes sent, total bytes)`.
pub type UploadProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The first pause between two task status polls; it doubles up to [`WaitOptions::poll_interval`].
pub const FIRST_POLL_PAUSE: Duration = Duration::from_millis(25);

/// The pause after `polls` unanswered status polls: 25 ms, 50 ms, 100 ms, … capped at `max`.
pub fn poll_pause(polls: u32, max: Duration) -> Duration {
    FIRST_POLL_PAUSE
        .saturating_mul(1u32 << polls.min(16))
        .min(max)
}

/// Options for [`Client::wait_task`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOptions {
    /// Longest pause between two status polls (Packer: 2 s). Polling starts at
    /// [`FIRST_POLL_PAUSE`] and doubles up to this, so a task that ends within a few hundred
    /// milliseconds (most config, start and template tasks) is seen without idle time.
    pub poll_interval: Duration,
    /// Give up after this long (the task keeps running on PVE).
    pub timeout: Duration,
    /// How many log lines to attach to a [`Error::TaskFailed`].
    pub log_lines_on_failure: u32,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(300),
            log_lines_on_failure: 10,
        }
    }
}

fn p(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn b01(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

fn qemu(node: &str, vmid: u32) -> String {
    format!("/nodes/{}/qemu/{vmid}", seg(node))
}

impl Client {
    // ---------------------------------------------------------------- misc

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version> {
        self.get("/version", &[]).await
    }

    /// `GET /cluster/nextid`: the next free VM id.
    pub async fn next_id(&self) -> Result<u32> {
        let v: serde_json::Value = self.get("/cluster/nextid", &[]).await?;
        crate::de::u32_lenient(v).map_err(|e| Error::Decode {
            method: "GET".into(),
            url: self.url_for("/cluster/nextid").to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET /cluster/nextid?vmid=N`: `true` if the id is free (PVE answers
    /// 400 `VM N already exists` otherwise).
    pub async fn is_vmid_free(&self, vmid: u32) -> Result<bool> {
        match self
            .get::<serde_json::Value>("/cluster/nextid", &[p("vmid", vmid)])
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api(a)) if a.status == 400 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /cluster/resources[?type=…]`.
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> Result<Vec<ClusterResource>> {
        let q: Vec<(String, String)> = kind.map(|k| p("type", k.as_str())).into_iter().collect();
        self.get("/cluster/resources", &q).await
    }

    /// Find a QEMU VM (or template) by name anywhere in the cluster. With
    /// several matches the lowest VM id wins.
    pub async fn find_vm_by_name(&self, name: &str) -> Result<Option<ClusterResource>> {
        let mut v: Vec<_> = self
            .cluster_resources(Some(ResourceType::Vm))
            .await?
            .into_iter()
            .filter(|r| r.kind == "qemu" && r.name.as_deref() == Some(name))
            .collect();
        v.sort_by_key(|r| r.vmid);
        Ok(v.into_iter().next())
    }

    /// Find a VM/container by id anywhere in the cluster.
    pub async fn find_vm_by_id(&self, vmid: u32) -> Result<Option<ClusterResource>> {
        Ok(self
            .cluster_resources(Some(ResourceType::Vm))
            .await?
            .into_iter()
            .find(|r| r.vmid == Some(vmid)))
    }

    /// `GET /access/permissions[?path=…]`: the effective privileges of the caller (user or
    /// token), as path → privilege → propagate flag.
    pub async fn permissions(
        &self,
        path: Option<&str>,
    ) -> Result<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, serde_json::Value>>,
    > {
        let q: Vec<(String, String)> = path.map(|x| p("path", x)).into_iter().collect();
        self.get("/access/permissions", &q).await
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/nodes", &[]).await
    }

    /// Check that `node` is a node of this cluster (and online), so a
    /// misspelt `node` fails early and clearly instead of as a 595/596 from
    /// PVE's node-to-node proxy.
    pub async fn check_node(&self, node: &str) -> Result<()> {
        let nodes = self.nodes().await?;
        match nodes.iter().find(|n| n.node == node) {
            Some(n) if n.status.is_empty() || n.status == "online" => Ok(()),
            Some(n) => Err(Error::InvalidOption(format!(
                "Proxmox node {node:?} is {} (the cluster reports it not online)",
                n.status
            ))),
            None => {
                let mut names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
                names.sort_unstable();
                let close = names.iter().find(|n| n.eq_ignore_ascii_case(node));
                Err(Error::InvalidOption(format!(
                    "Proxmox node {node:?} is not part of this cluster; nodes: {}{}",
                    names.join(", "),
                    close
                        .map(|c| format!(" (node names are case-sensitive: did you mean {c:?}?)"))
                        .unwrap_or_default()
                )))
            }
        }
    }

    /// `GET /nodes/{node}/network[?type=…]` (`bridge`, `any_bridge`, …).
    pub async fn node_network(&self, node: &str, kind: Option<&str>) -> Result<Vec<NetworkIface>> {
        let q: Vec<(String, String)> = kind.map(|k| p("type", k)).into_iter().collect();
        self.get(&format!("/nodes/{}/network", seg(node)), &q).await
    }

    // ---------------------------------------------------------------- qemu

    /// `GET /nodes/{node}/qemu`.
    pub async fn qemu_list(&self, node: &str) -> Result<Vec<QemuListEntry>> {
        self.get(&format!("/nodes/{}/qemu", seg(node)), &[]).await
    }

    /// `POST /nodes/{node}/qemu` with `vmid` plus `params` (sent in order).
    /// Not retried once it may have reached PVE.
    pub async fn qemu_create(
        &self,
        node: &str,
        vmid: u32,
        params: &Params,
    ) -> Result<Option<Upid>> {
        let mut all = vec![p("vmid", vmid)];
        all.extend(params.iter().filter(|(k, _)| k != "vmid").cloned());
        self.request(
            Method::POST,
            &format!("/nodes/{}/qemu", seg(node)),
            &all,
            RetryClass::Write,
        )
        .await
    }

    /// `GET …/config` (pending changes applied; `current=true` for the running config).
    pub async fn qemu_config(&self, node: &str, vmid: u32, current: bool) -> Result<VmConfig> {
        let q: Vec<(String, String)> = if current {
            vec![p("current", "1")]
        } else {
            vec![]
        };
        self.get(&format!("{}/config", qemu(node, vmid)), &q).await
    }

    /// `POST …/config` (asynchronous; use for disk allocation). Include
    /// `("delete", "ide2,unused0")` to remove keys.
    pub async fn qemu_config_update_async(
        &self,
        node: &str,
        vmid: u32,
        params: &Params,
    ) -> Result<Option<Upid>> {
        self.request(
            Method::POST,
            &format!("{}/config", qemu(node, vmid)),
            params,
            RetryClass::Write,
        )
        .await
    }

    /// `PUT …/config` (synchronous).
    pub async fn qemu_config_update_sync(
        &self,
        node: &str,
        vmid: u32,
        params: &Params,
    ) -> Result<()> {
        let _: serde_json::Value = self
            .request(
                Method::PUT,
                &format!("{}/config", qemu(node, vmid)),
                params,
                RetryClass::Write,
            )
            .await?;
        Ok(())
    }

    /// `GET …/status/current`.
    pub async fn qemu_status(&self, node: &str, vmid: u32) -> Result<VmStatus> {
        self.get(&format!("{}/status/current", qemu(node, vmid)), &[])
            .await
    }

    /// `POST …/status/start`.
    pub async fn qemu_start(&self, node: &str, vmid: u32) -> Result<Option<Upid>> {
        self.request(
            Method::POST,
            &format!("{}/status/start", qemu(node, vmid)),
            &vec![],
            RetryClass::Write,
        )
        .await
    }

    /// `POST …/status/stop` (hard stop).
    pub async fn qemu_stop(&self, node: &str, vmid: u32) -> Result<Option<Upid>> {
        self.request(
            Method::POST,
            &format!("{}/status/stop", qemu(node, vmid)),
            &vec![],
            RetryClass::Write,
        )
        .await
    }

    /// `POST …/status/shutdown` (ACPI).
    pub async fn qemu_shutdown(
        &self,
        node: &str,
        vmid: u32,
        opts: &ShutdownOptions,
    ) -> Result<Option<Upid>> {
        let mut params = vec![];
        if let Some(t) = opts.timeout {
            params.push(p("timeout", t));
        }
        if opts.force_stop {
            params.push(p("forceStop", "1"));
        }
        self.request(
            Method::POST,
            &format!("{}/status/shutdown", qemu(node, vmid)),
            &params,
            RetryClass::Write,
        )
        .await
    }

    /// `PUT …/sendkey key=<qcode chord>` (`ret`, `shift-a`, `ctrl-alt-delete`).
    /// Retried per [`RetryClass::SendKey`].
    pub async fn sendkey(&self, node: &str, vmid: u32, key: &str) -> Result<()> {
        let _: serde_json::Value = self
            .request(
                Method::PUT,
                &format!("{}/sendkey", qemu(node, vmid)),
                &vec![p("key", key)],
                RetryClass::SendKey,
            )
            .await?;
        Ok(())
    }

    /// `POST …/agent/ping` (errors with 500 `QEMU guest agent is not running`).
    pub async fn agent_ping(&self, node: &str, vmid: u32) -> Result<()> {
        let _: serde_json::Value = self
            .request(
                Method::POST,
                &format!("{}/agent/ping", qemu(node, vmid)),
                &vec![],
                RetryClass::Read,
            )
            .await?;
        Ok(())
    }

    /// `GET …/agent/network-get-interfaces`.
    pub async fn agent_network_interfaces(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<AgentInterface>> {
        #[derive(serde::Deserialize)]
        struct R {
            #[serde(default)]
            result: Vec<AgentInterface>,
        }
        let r: R = self
            .get(
                &format!("{}/agent/network-get-interfaces", qemu(node, vmid)),
                &[],
            )
            .await?;
        Ok(r.result)
    }

    /// `POST …/template` (VM must be stopped). `disk` converts only that disk.
    pub async fn qemu_template(
        &self,
        node: &str,
        vmid: u32,
        disk: Option<&str>,
    ) -> Result<Option<Upid>> {
        let params: Params = disk.map(|d| p("disk", d)).into_iter().collect();
        self.request(
            Method::POST,
            &format!("{}/template", qemu(node, vmid)),
            &params,
            RetryClass::Write,
        )
        .await
    }

    /// `POST …/clone`.
    pub async fn qemu_clone(
        &self,
        node: &str,
        vmid: u32,
        opts: &CloneOptions,
    ) -> Result<Option<Upid>> {
        let mut params = vec![p("newid", opts.newid)];
        if let Some(v) = &opts.name {
            params.push(p("name", v));
        }
        if let Some(v) = opts.full {
            params.push(p("full", b01(v)));
        }
        if let Some(v) = &opts.storage {
            params.push(p("storage", v));
        }
        if let Some(v) = &opts.target {
            params.push(p("target", v));
        }
        if let Some(v) = &opts.pool {
            params.push(p("pool", v));
        }
        if let Some(v) = &opts.description {
            params.push(p("description", v));
        }
        self.request(
            Method::POST,
            &format!("{}/clone", qemu(node, vmid)),
            &params,
            RetryClass::Write,
        )
        .await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}`.
    pub async fn qemu_delete(
        &self,
        node: &str,
        vmid: u32,
        opts: &DeleteVmOptions,
    ) -> Result<Option<Upid>> {
        let mut params = vec![];
        if opts.purge {
            params.push(p("purge", "1"));
        }
        if opts.destroy_unreferenced_disks {
            params.push(p("destroy-unreferenced-disks", "1"));
        }
        self.request(
            Method::DELETE,
            &qemu(node, vmid),
            &params,
            RetryClass::Write,
        )
        .await
    }

    // ------------------------------------------------------------- storage

    /// `GET /nodes/{node}/storage[?content=…]`.
    pub async fn storages(&self, node: &str, content: Option<&str>) -> Result<Vec<StorageInfo>> {
        let q: Vec<(String, String)> = content.map(|c| p("content", c)).into_iter().collect();
        self.get(&format!("/nodes/{}/storage", seg(node)), &q).await
    }

    /// `GET /nodes/{node}/storage/{storage}/content[?content=…]`.
    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageContent>> {
        let q: Vec<(String, String)> = content.map(|c| p("content", c)).into_iter().collect();
        self.get(
            &format!("/nodes/{}/storage/{}/content", seg(node), seg(storage)),
            &q,
        )
        .await
    }

    /// Find `filename` of `content` type on a storage (for "skip the upload
    /// when the same file is already there").
    pub async fn find_volume(
        &self,
        node: &str,
        storage: &str,
        content: UploadContent,
        filename: &str,
    ) -> Result<Option<StorageContent>> {
        Ok(self
            .storage_content(node, storage, Some(content.as_str()))
            .await?
            .into_iter()
            .find(|c| c.file_name() == filename))
    }

    /// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`.
    pub async fn delete_volume(
        &self,
        node: &str,
        storage: &str,
        volid: &str,
    ) -> Result<Option<Upid>> {
        self.request(
            Method::DELETE,
            &format!(
                "/nodes/{}/storage/{}/content/{}",
                seg(node),
                seg(storage),
                seg(volid)
            ),
            &vec![],
            RetryClass::Write,
        )
        .await
    }

    /// `POST …/download-url` → UPID of a `download` task.
    pub async fn download_url(
        &self,
        node: &str,
        storage: &str,
        req: &DownloadUrlRequest,
    ) -> Result<Option<Upid>> {
        let mut params = vec![
            p("content", req.content.as_str()),
            p("filename", &req.filename),
            p("url", &req.url),
        ];
        if let Some(c) = &req.checksum {
            params.push(p("checksum", &c.value));
            params.push(p("checksum-algorithm", &c.algorithm));
        }
        if let Some(v) = req.verify_certificates {
            params.push(p("verify-certificates", b01(v)));
        }
        self.request(
            Method::POST,
            &format!("/nodes/{}/storage/{}/download-url", seg(node), seg(storage)),
            &params,
            RetryClass::Write,
        )
        .await
    }

    /// `POST …/upload`: streams `req.path` as multipart (constant memory,
    /// exact `Content-Length`), calling `progress(sent, total)` as bytes go
    /// out. Returns the `imgcopy` task (wait for it: PVE moves the file
    /// into place afterwards). Retried only when nothing was sent.
    pub async fn upload(
        &self,
        node: &str,
        storage: &str,
        req: &UploadRequest,
        progress: Option<UploadProgress>,
    ) -> Result<Upid> {
        if storage.is_empty() {
            return Err(Error::InvalidOption("upload: storage name is empty".into()));
        }
        let path = format!("/nodes/{}/storage/{}/upload", seg(node), seg(storage));
        let url = self.url_for(&path);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self.upload_once(&path, &url, req, progress.clone()).await;
            match r {
                Err(e)
                    if RetryClass::Write.should_retry(&e)
                        && attempt < self.options().retry.max_attempts =>
                {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(Error::Api(a)) if a.status == 401 && attempt == 1 => {
                    self.login().await?;
                }
                Err(e) => return Err(e),
                Ok(v) => {
                    let up: Option<Upid> = self.decode_data(Method::POST, &path, v)?;
                    return up.ok_or_else(|| Error::Decode {
                        method: "POST".into(),
                        url: url.to_string(),
                        reason: "upload returned no task id".into(),
                    });
                }
            }
        }
    }

    async fn upload_once(
        &self,
        path: &str,
        url: &url::Url,
        req: &UploadRequest,
        progress: Option<UploadProgress>,
    ) -> Result<serde_json::Value> {
        let file_err = |source| Error::File {
            path: req.path.clone(),
            source,
        };
        let file = tokio::fs::File::open(&req.path).await.map_err(file_err)?;
        let total = file.metadata().await.map_err(file_err)?.len();
        let mut sent = 0u64;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                if let Ok(c) = &chunk {
                    sent += c.len() as u64;
                    if let Some(cb) = &progress {
                        cb(sent, total);
                    }
                }
                chunk
            });
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), total)
                .file_name(req.filename.clone())
                .mime_str("application/octet-stream")
                .map_err(|e| Error::InvalidOption(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new().text("content", req.content.as_str());
        if let Some(c) = &req.checksum {
            form = form
                .text("checksum-algorithm", c.algorithm.clone())
                .text("checksum", c.value.clone());
        }
        form = form.part("filename", part);
        let ticket = self.ticket_for_upload().await?;
        let mut rb = self.http().post(url.clone()).multipart(form);
        if let Some(t) = self.options().upload_timeout {
            rb = rb.timeout(t);
        }
        rb = self.decorate_upload(rb, ticket.as_ref());
        tracing::debug!(path, file = %req.path.display(), bytes = total, "PVE upload");
        let resp = rb
            .send()
            .await
            .map_err(|e| self.map_error(&Method::POST, url, e))?;
        self.read_response(&Method::POST, path, url, resp).await
    }

    // --------------------------------------------------------------- tasks

    fn task_path(upid: &Upid, tail: &str) -> String {
        format!(
            "/nodes/{}/tasks/{}/{tail}",
            seg(&upid.node),
            seg(upid.as_str())
        )
    }

    /// `GET /nodes/{node-from-upid}/tasks/{upid}/status`.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus> {
        self.get(&Self::task_path(upid, "status"), &[]).await
    }

    /// `GET …/tasks/{upid}/log?start=&limit=`.
    pub async fn task_log(&self, upid: &Upid, start: u64, limit: u64) -> Result<TaskLog> {
        let path = Self::task_path(upid, "log");
        let mut v = self
            .get_envelope(&path, &[p("start", start), p("limit", limit)])
            .await?;
        let total = v.get("total").and_then(|t| {
            t.as_u64()
                .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
        });
        let lines: Vec<TaskLogLine> = self.decode_data(Method::GET, &path, v.take())?;
        let total = total.unwrap_or(lines.len() as u64);
        Ok(TaskLog { lines, total })
    }

    /// The last `n` lines of a task log (best effort: empty on error).
    pub async fn task_log_tail(&self, upid: &Upid, n: u64) -> Vec<String> {
        let first = match self.task_log(upid, 0, 1).await {
            Ok(l) => l,
            Err(_) => return vec![],
        };
        let start = first.total.saturating_sub(n);
        match self.task_log(upid, start, n).await {
            Ok(l) => l.lines.into_iter().map(|l| l.t).collect(),
            Err(_) => vec![],
        }
    }

    /// Poll a task until it stops. `progress` gets every status seen.
    /// `OK` and `WARNINGS: n` are success; anything else is
    /// [`Error::TaskFailed`] with the last log lines; running past
    /// `opts.timeout` is [`Error::TaskTimeout`].
    pub async fn wait_task(
        &self,
        upid: &Upid,
        opts: &WaitOptions,
        mut progress: Option<&mut (dyn FnMut(&TaskStatus) + Send)>,
    ) -> Result<TaskStatus> {
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            let st = self.task_status(upid).await?;
            if let Some(cb) = progress.as_mut() {
                cb(&st);
            }
            if !st.is_running() {
                if st.is_ok() {
                    return Ok(st);
                }
                let mut log = self
                    .task_log_tail(upid, u64::from(opts.log_lines_on_failure))
                    .await;
                let exitstatus = st
                    .exitstatus
                    .clone()
                    .unwrap_or_else(|| "unknown exit status".into());
                // a log that only repeats the exit status adds nothing
                if log.len() == 1 && log[0].contains(&exitstatus) {
                    log.clear();
                }
                return Err(Error::TaskFailed {
                    upid: Box::new(upid.clone()),
                    exitstatus,
                    log,
                });
            }
            let elapsed = started.elapsed();
            if elapsed >= opts.timeout {
                return Err(Error::TaskTimeout {
                    upid: Box::new(upid.clone()),
                    waited: elapsed,
                });
            }
            tokio::time::sleep(poll_pause(polls, opts.poll_interval).min(opts.timeout - elapsed))
                .await;
            polls = polls.saturating_add(1);
        }
    }

    /// Wait for `task` if it is `Some` (convenience for the `Option<Upid>` returns).
    pub async fn wait_opt(
        &self,
        task: Option<Upid>,
        opts: &WaitOptions,
    ) -> Result<Option<TaskStatus>> {
        match task {
            None => Ok(None),
            Some(u) => self.wait_task(&u, opts, None).await.map(Some),
        }
    }
}

/// Helper to build [`Params`]: `params![("cores", 2), ("name", "x")]`-like
/// usage via [`ParamsExt`].
pub trait ParamsExt {
    /// Append `key=value`.
    fn add(&mut self, key: &str, value: impl ToString) -> &mut Self;
    /// Append `key=1|0`.
    fn add_bool(&mut self, key: &str, value: bool) -> &mut Self;
    /// Append when `Some` and non-empty (Packer omits empty values).
    fn add_opt(&mut self, key: &str, value: Option<impl ToString>) -> &mut Self;
}

impl ParamsExt for Params {
    fn add(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.push(p(key, value));
        self
    }
    fn add_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.push(p(key, b01(value)));
        self
    }
    fn add_opt(&mut self, key: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(v) = value {
            let s = v.to_string();
            if !s.is_empty() {
                self.push((key.to_string(), s));
            }
        }
        self
    }
}

/// `true` if `path` looks like a file PVE accepts for `content` (by extension).
pub fn extension_ok(content: UploadContent, filename: &str) -> bool {
    let lower = filename.to_ascii_lowercase();
    let ext = Path::new(&lower)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    match content {
        UploadContent::Iso => matches!(ext, "iso" | "img"),
        UploadContent::Vztmpl => {
            lower.ends_with(".tar.gz") || lower.ends_with(".tar.xz") || lower.ends_with(".tar.zst")
        }
        UploadContent::Import => matches!(ext, "qcow2" | "raw" | "vmdk" | "ova" | "img"),
    }
}

#[cfg(test)]
mod poll_tests {
    use super::*;

    #[test]
    fn task_polls_start_tight_and_back_off_to_the_interval() {
        let max = Duration::from_secs(1);
        let pauses: Vec<u128> = (0..8).map(|n| poll_pause(n, max).as_millis()).collect();
        assert_eq!(pauses, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        // a huge poll count neither overflows nor goes past the cap
        assert_eq!(poll_pause(u32::MAX, max), max);
        assert_eq!(
            poll_pause(0, Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }
}
