//! Storage endpoints: the storage list and status, content listing and volume info, disk
//! allocation, volume deletion, ISO/template upload and download-url. (The storage backend itself is
//! `crate::storage`.)

use super::{spawn, task_reply};
use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::schema::Endpoint;
use crate::server::{Ctx, State};
use crate::storage::{self, Storage, LVM};
use crate::vms;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn storage_or_err(st: &State, p: &Params) -> Result<String, ApiError> {
    let s = p.string("storage");
    if !st.storage.exists(&s) {
        return Err(ApiError::e500(format!("storage '{s}' does not exist")));
    }
    Ok(s)
}

/// `GET /nodes/{node}/storage`: the storages the caller may audit or allocate on.
pub(super) fn storage_list(st: &State, ctx: &Ctx, p: &Params) -> ApiResult {
    let mut out = Vec::new();
    for s in [storage::LOCAL, LVM] {
        if p.str("storage").is_some_and(|x| x != s) {
            continue;
        }
        // PVE lists only the storages the user may audit or allocate on
        let audit = crate::access::Check {
            path: format!("/storage/{s}"),
            privs: vec!["Datastore.Audit", "Datastore.AllocateSpace"],
            any: true,
        };
        if st.cfg.privileges.check(&ctx.ident, &[audit]).is_err() {
            continue;
        }
        if let Some(c) = p.str("content") {
            let kinds = storage::contents(s).unwrap_or(&[]);
            if !c.split(',').all(|x| kinds.contains(&x)) {
                continue;
            }
        }
        out.push(st.storage.status_json(s));
    }
    Ok(Reply::data(json!(out)))
}

/// `GET /nodes/{node}/storage/{storage}/status`.
pub(super) fn storage_status(st: &State, p: &Params) -> ApiResult {
    let s = storage_or_err(st, p)?;
    Ok(Reply::data(st.storage.status_json(&s)))
}

/// `GET /nodes/{node}/storage/{storage}/content`.
pub(super) async fn content_list(st: &State, p: &Params) -> ApiResult {
    let s = storage_or_err(st, p)?;
    let vmid = p.int("vmid").map(|v| v as u32);
    Ok(Reply::data(json!(
        st.storage.list(&s, p.str("content"), vmid).await
    )))
}

/// `GET /nodes/{node}/storage/{storage}/content/{volume}`: path, size and format of a volume.
pub(super) async fn volume_info(st: &State, p: &Params) -> ApiResult {
    let s = storage_or_err(st, p)?;
    let volid = Storage::full_volid(&s, &p.string("volume"));
    let path = st
        .storage
        .resolve(&volid)
        .ok_or_else(|| ApiError::e500(format!("volume '{volid}' does not exist")))?;
    let meta = std::fs::metadata(&path).map_err(|e| ApiError::e500(e.to_string()))?;
    let size = if s == LVM {
        storage::virtual_size(&path).await.unwrap_or(meta.len())
    } else {
        meta.len()
    };
    Ok(Reply::data(json!({
        "path": path.to_string_lossy(), "size": size, "used": meta.len(),
        "format": if s == LVM { "raw" } else { "iso" },
    })))
}

pub(super) async fn alloc_disk(st: &Arc<State>, p: &Params) -> ApiResult {
    let s = storage_or_err(st, p)?;
    let vmid = p.vmid();
    let name = p.string("filename");
    let re = crate::validate::perl_regex(&format!(r"(vm|base)-{vmid}-\S+"))
        .ok_or_else(|| ApiError::e500("regex"))?;
    if !re.is_match(&name) {
        return Err(ApiError::e500(format!(
            "illegal name '{name}' - should be 'vm-{vmid}-*'"
        )));
    }
    let size = p.string("size");
    let kib = if let Some(n) = size.strip_suffix('G') {
        n.parse::<u64>().ok().map(|n| n * 1024 * 1024)
    } else if let Some(n) = size.strip_suffix('M') {
        n.parse::<u64>().ok().map(|n| n * 1024)
    } else {
        size.parse::<u64>().ok()
    }
    .ok_or_else(|| ApiError::param("size", "unable to parse size"))?;
    let name = name
        .strip_suffix(".qcow2")
        .or_else(|| name.strip_suffix(".raw"))
        .unwrap_or(&name)
        .to_string();
    let volid = st
        .storage
        .alloc(&s, vmid, Some(&name), kib * 1024)
        .await
        .map_err(ApiError::e500)?;
    Ok(Reply::data(json!(volid)))
}

pub(super) async fn delete_volume(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let s = storage_or_err(st, &p)?;
    let volid = Storage::full_volid(&s, &p.string("volume"));
    if st.storage.resolve(&volid).is_none() {
        return Err(ApiError::e500(format!("volume '{volid}' does not exist")));
    }
    // PVE refuses to delete a disk that is still referenced by a VM config
    if let Some((_, name)) = storage::split_volid(&volid) {
        if let Some(owner) = storage::volume_owner(name) {
            if let Some(c) = st.vms.get(owner) {
                if c.values()
                    .any(|v| vms::drive_file(v) == volid || *v == volid)
                {
                    return Err(ApiError::e500(format!(
                        "unable to delete volume '{volid}' - volume is still in use (referenced by VM {owner})"
                    )));
                }
            }
        }
    }
    let st2 = st.clone();
    let v2 = volid.clone();
    let upid = spawn(st, ctx, "imgdel", &volid, move |log| async move {
        log.log(format!("removing volume '{v2}'"));
        st2.storage.delete(&v2)
    });
    if let Some(delay) = p.int("delay") {
        match st
            .tasks
            .wait(&upid, Duration::from_secs(delay.max(0) as u64))
            .await
            .as_deref()
        {
            Some("OK") => return Ok(Reply::null()),
            Some(e) => return Err(ApiError::e500(e.to_string())),
            None => {}
        }
    }
    task_reply(upid)
}

/// Checksum state for upload/download verification.
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: &str) -> Option<Self> {
        use sha2::Digest;
        Some(match alg {
            "md5" => Hasher::Md5(md5::Md5::new()),
            "sha1" => Hasher::Sha1(sha1::Sha1::new()),
            "sha224" => Hasher::Sha224(sha2::Sha224::new()),
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => return None,
        })
    }
    pub fn update(&mut self, d: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => h.update(d),
            Hasher::Sha1(h) => h.update(d),
            Hasher::Sha224(h) => h.update(d),
            Hasher::Sha256(h) => h.update(d),
            Hasher::Sha384(h) => h.update(d),
            Hasher::Sha512(h) => h.update(d),
        }
    }
    pub fn hex(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha224(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

fn sanitize_filename(f: &str) -> String {
    let base = f.rsplit(['/', '\\']).next().unwrap_or(f);
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Upload (`multipart/form-data`, streamed to a temp file, renamed on completion).
pub async fn upload(
    st: &Arc<State>,
    ep: &Endpoint,
    ctx: &Ctx,
    req: hyper::Request<hyper::body::Incoming>,
    path_params: indexmap::IndexMap<String, String>,
    query: &str,
) -> (ApiResult, Option<indexmap::IndexMap<String, Value>>) {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if req.headers().get("content-length").is_none() {
        return (
            Err(ApiError::Status(
                501,
                "upload without content-length is not supported".into(),
            )),
            None,
        );
    }
    let Ok(boundary) = multer::parse_boundary(&ct) else {
        return (
            Err(ApiError::Status(
                506,
                format!("upload 'Content-Type '{ct}' not implemented"),
            )),
            None,
        );
    };
    let mut params: indexmap::IndexMap<String, Value> = indexmap::IndexMap::new();
    crate::api::decode_urlencoded(query, &mut params);
    for (k, v) in &path_params {
        params.insert(k.clone(), json!(v));
    }
    let tmpdir = st.cfg.state_dir.join("tmp");
    let _ = std::fs::create_dir_all(&tmpdir);
    let tmpname = tmpdir.join(format!(
        "pveupload-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let stream = req.into_body().into_data_stream();
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut hasher: Option<Hasher> = None;
    let mut size: u64 = 0;
    let mut got_file = false;
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = std::fs::remove_file(&tmpname);
                return (
                    Err(ApiError::param(
                        "filename",
                        format!("multipart parse error: {e}"),
                    )),
                    Some(params),
                );
            }
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "filename" && field.file_name().is_some() {
            let fname = field.file_name().unwrap_or("").to_string();
            params.insert("filename".into(), json!(fname));
            if let Some(alg) = params.get("checksum-algorithm").and_then(Value::as_str) {
                hasher = Hasher::new(alg);
            }
            let mut file = match tokio::fs::File::create(&tmpname).await {
                Ok(f) => f,
                Err(e) => return (Err(ApiError::e500(format!("temp file: {e}"))), Some(params)),
            };
            let mut field = field;
            loop {
                match field.next().await {
                    Some(Ok(chunk)) => {
                        size += chunk.len() as u64;
                        if let Some(h) = hasher.as_mut() {
                            h.update(&chunk);
                        }
                        if let Err(e) = file.write_all(&chunk).await {
                            let _ = std::fs::remove_file(&tmpname);
                            return (
                                Err(ApiError::e500(format!("writing upload failed: {e}"))),
                                Some(params),
                            );
                        }
                    }
                    Some(Err(e)) => {
                        let _ = std::fs::remove_file(&tmpname);
                        return (
                            Err(ApiError::e500(format!("upload aborted: {e}"))),
                            Some(params),
                        );
                    }
                    None => break,
                }
            }
            if let Err(e) = file.flush().await {
                return (
                    Err(ApiError::e500(format!("writing upload failed: {e}"))),
                    Some(params),
                );
            }
            got_file = true;
        } else {
            let text = field.text().await.unwrap_or_default();
            params.insert(name, json!(text));
        }
    }
    let cleanup = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
    };
    if !got_file {
        cleanup(&tmpname);
        return (
            Err(ApiError::param(
                "filename",
                "property is missing and it is not optional",
            )),
            Some(params),
        );
    }
    if let Err(errs) = crate::validate::validate(ep, &mut params) {
        cleanup(&tmpname);
        return (Err(ApiError::Params(errs)), Some(params));
    }
    let p = Params(params.clone());
    let storage = p.string("storage");
    let content = p.string("content");
    if !st.storage.exists(&storage) {
        cleanup(&tmpname);
        return (
            Err(ApiError::e500(format!(
                "storage '{storage}' does not exist"
            ))),
            Some(params),
        );
    }
    if !storage::contents(&storage)
        .unwrap_or(&[])
        .contains(&content.as_str())
        || content == "snippets"
    {
        cleanup(&tmpname);
        return (
            Err(ApiError::e500(format!(
                "storage '{storage}' does not support '{content}' content"
            ))),
            Some(params),
        );
    }
    let filename = sanitize_filename(&p.string("filename"));
    if !storage::extension_ok(&content, &filename) {
        cleanup(&tmpname);
        return (
            Err(ApiError::param("filename", "wrong file extension")),
            Some(params),
        );
    }
    let dest = st
        .storage
        .content_dir(&storage, &content)
        .unwrap_or_default()
        .join(&filename);
    let expected = p.str("checksum").map(|c| c.to_ascii_lowercase());
    let digest = hasher.map(Hasher::hex);
    let st2 = st.clone();
    let tmp2 = tmpname.clone();
    let upid = spawn(st, ctx, "imgcopy", "", move |log| async move {
        log.log(format!("starting file import from: {}", tmp2.display()));
        if let (Some(exp), Some(got)) = (&expected, &digest) {
            log.log("calculating checksum...");
            if exp != got {
                let _ = std::fs::remove_file(&tmp2);
                return Err(format!("checksum mismatch: got '{got}' != expect '{exp}'"));
            }
            log.log("checksum verified");
        }
        log.log(format!("target node: {}", st2.cfg.node));
        log.log(format!("target file: {}", dest.display()));
        log.log(format!("file size is: {size}"));
        std::fs::rename(&tmp2, &dest)
            .map_err(|e| format!("moving file to destination failed: {e}"))?;
        log.log("finished file import successfully");
        Ok(())
    });
    (task_reply(upid), Some(params))
}

pub(super) async fn download_url(st: &Arc<State>, ctx: &Ctx, p: Params) -> ApiResult {
    let storage = storage_or_err(st, &p)?;
    let content = p.string("content");
    if !storage::contents(&storage)
        .unwrap_or(&[])
        .contains(&content.as_str())
    {
        return Err(ApiError::e500(format!(
            "storage '{storage}' does not support '{content}' content"
        )));
    }
    let filename = sanitize_filename(&p.string("filename"));
    if !storage::extension_ok(&content, &filename) {
        return Err(ApiError::param("filename", "wrong file extension"));
    }
    let url_s = p.string("url");
    let url =
        url::Url::parse(&url_s).map_err(|e| ApiError::param("url", format!("invalid URL: {e}")))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    // PVE's schema pattern `https?://.*` (checked before this handler) already refuses file://
    // and every other scheme with "value does not match the regex pattern"; refuse them here
    // too, with the same answer, so no path can read a local file
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::param(
            "url",
            "value does not match the regex pattern",
        ));
    }
    if !loopback {
        return Err(ApiError::e500(format!(
            "download-url: the kiln sandbox only downloads from loopback http(s) URLs, not '{url_s}'"
        )));
    }
    let alg = p.str("checksum-algorithm").map(str::to_string);
    let expected = p.str("checksum").map(|c| c.to_ascii_lowercase());
    if expected.is_some() && alg.is_none() {
        return Err(ApiError::param(
            "checksum-algorithm",
            "missing property required by 'checksum'",
        ));
    }
    let verify = p.str("verify-certificates") != Some("0");
    let dest = st
        .storage
        .content_dir(&storage, &content)
        .unwrap_or_default()
        .join(&filename);
    let tmp = st.cfg.state_dir.join("tmp").join(format!(
        "download-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let _ = std::fs::create_dir_all(st.cfg.state_dir.join("tmp"));
    let upid = spawn(st, ctx, "download", &filename, move |log| async move {
        use tokio::io::AsyncWriteExt;
        log.log(format!("downloading {url_s} to {}", dest.display()));
        let mut hasher = alg.as_deref().and_then(Hasher::new);
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("temp file: {e}"))?;
        let mut total = 0u64;
        {
            use futures::StreamExt;
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(!verify)
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| format!("download failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("download failed: HTTP {}", resp.status()));
            }
            let mut s = resp.bytes_stream();
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|e| format!("download failed: {e}"))?;
                total += chunk.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        }
        out.flush().await.map_err(|e| e.to_string())?;
        log.log(format!("downloaded {total} bytes"));
        if let (Some(exp), Some(h)) = (expected, hasher) {
            let got = h.hex();
            if got != exp {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("checksum mismatch: got '{got}' != expect '{exp}'"));
            }
            log.log("checksum verified");
        }
        std::fs::rename(&tmp, &dest)
            .map_err(|e| format!("moving file to destination failed: {e}"))?;
        log.log("download of '".to_string() + &url_s + "' finished");
        Ok(())
    });
    task_reply(upid)
}
