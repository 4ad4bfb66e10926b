//! kiln-iso: resolve, download, cache and verify installer ISOs with Packer's `iso_urls` / `iso_checksum`
//! semantics.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kiln_iso::IsoError> {
//! use kiln_iso::{Fetcher, IsoSource};
//! let fetcher = Fetcher::new(Fetcher::default_cache_dir())?;
//! let src = IsoSource {
//!     urls: vec!["https://releases.ubuntu.com/24.04/ubuntu-24.04.3-live-server-amd64.iso".into()],
//!     checksum: "file:https://releases.ubuntu.com/24.04/SHA256SUMS".parse()?,
//! };
//! let got = fetcher.fetch(&src, &|p: &kiln_iso::Progress<'_>| eprintln!("{} {}/{:?}", p.url, p.done, p.total)).await?;
//! println!("{} ({:?})", got.path.display(), got.action);
//! # Ok(()) }
//! ```
//!
//! Behaviour:
//! - `iso_checksum` forms: `sha256:hex`, `md5:`, `sha1:`, `sha512:`, bare hex (type from its length), `file:URL`,
//!   `file:./local` (GNU or BSD checksum files, matched by the ISO's file name), `none` ([`ChecksumSpec`]).
//! - Remote ISOs are downloaded once into the cache dir (default `$XDG_CACHE_HOME/kiln/iso`, i.e.
//!   `~/.cache/kiln/iso`; `KILN_ISO_CACHE` overrides), as `<key>-<name>` where the key hashes the checksum spec and
//!   the URLs. Data is hashed while it streams to `<file>.part`; only a matching file is renamed to its final name,
//!   so a half-written file never carries the final name. An interrupted download is resumed with an HTTP `Range`
//!   request (within one call: up to [`Fetcher::attempts`] tries; across calls: a leftover `.part` file is resumed).
//! - A sidecar `<file>.kiln.json` records the spec and the resolved digest, so a second run makes **no request**
//!   (not even for a `file:` checksum URL). The cached file is re-hashed (by default) and fetched again when corrupt.
//! - Concurrent fetches of one ISO (two kiln processes) are serialised by an advisory lock on `<file>.lock`.
//! - URLs are tried in order; `file://` URLs and plain paths are verified in place, never copied.
//! - Memory stays flat: data is streamed in chunks, never buffered whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod checksum;

pub use checksum::{find_in_checksum_file, Algo, ChecksumSpec, Digest};

/// An ISO to obtain: Packer's `iso_urls` (or `[iso_url]`) plus `iso_checksum`, as the plan
/// carries it (parsed once, by kiln-config's loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoSource {
    pub urls: Vec<String>,
    pub checksum: ChecksumSpec,
}

/// Errors, each with what failed and what to try.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("invalid iso_checksum \"{spec}\": {msg}")]
    BadChecksum { spec: String, msg: String },
    #[error("no iso_url/iso_urls given")]
    NoUrls,
    #[error(
        "checksum mismatch for {url}: expected {expected}, got {got}; the download is corrupt or the checksum is \
         stale (check iso_checksum against the mirror's SHA256SUMS)"
    )]
    ChecksumMismatch {
        url: String,
        expected: Digest,
        got: String,
    },
    #[error("checksum file {checksum_url} has no entry for \"{file_name}\"; check that the ISO file name matches a line in it")]
    ChecksumNotFound {
        checksum_url: String,
        file_name: String,
    },
    #[error("GET {url} returned HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: String,
    },
    #[error("network error fetching {url}: {msg} (check the URL, your proxy settings and connectivity; rerun to resume)")]
    Network { url: String, msg: String },
    #[error("local ISO {path} does not exist (relative paths resolve against {base})")]
    LocalMissing { path: String, base: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("every URL failed:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    AllFailed(Vec<IsoError>),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IsoError {
    let path = path.to_path_buf();
    move |source| IsoError::Io { op, path, source }
}

/// What a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Hashing a file already on disk (cache check, local ISO, or the kept part of a resumed download).
    Verifying,
    /// Receiving bytes.
    Downloading,
}

/// A progress report: `done` of `total` bytes.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub url: &'a str,
    pub phase: Phase,
    pub done: u64,
    pub total: Option<u64>,
}

/// What [`Fetcher::fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The cached file was present and valid: nothing was requested.
    Cached,
    /// The file has `bytes` bytes; the last request resumed at `resumed_from` (0: a full download).
    Downloaded { bytes: u64, resumed_from: u64 },
    /// A local file (`file://` or a path), verified in place.
    Local,
}

/// The result of a fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// The URL the file came from.
    pub url: String,
    /// The verified digest (`None` for `iso_checksum = "none"`).
    pub digest: Option<Digest>,
    pub action: Action,
}

/// What a fetch would do (for `--offline`), without network access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// A cached file with a matching record exists (it will be re-verified).
    Cached { path: PathBuf },
    /// A local file.
    Local { path: PathBuf, exists: bool },
    /// Would download `url` into `path`; `partial` bytes are already there from an interrupted download.
    Download {
        url: String,
        path: PathBuf,
        partial: u64,
    },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    spec: String,
    digest: Option<Digest>,
    url: String,
    size: u64,
}

/// Downloads into and verifies a cache directory.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cache_dir: PathBuf,
    base_dir: PathBuf,
    client: reqwest::Client,
    attempts: u32,
    verify_cached: bool,
}

fn is_local(url: &str) -> bool {
    !(url.starts_with("http://") || url.starts_with("https://"))
}

impl Fetcher {
    /// `$KILN_ISO_CACHE`, else `$XDG_CACHE_HOME/kiln/iso`, else `~/.cache/kiln/iso`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("KILN_ISO_CACHE").filter(|v| !v.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(d).join("kiln").join("iso");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache").join("kiln").join("iso"),
            None => std::env::temp_dir().join("kiln-iso-cache"),
        }
    }

    /// A fetcher caching into `cache_dir`; relative paths resolve against the current directory.
    pub fn new(cache_dir: PathBuf) -> Result<Fetcher, IsoError> {
        // Needed once per process with reqwest's `rustls-no-provider`; a second install is a harmless Err.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IsoError::Client(e.to_string()))?;
        Ok(Fetcher {
            cache_dir,
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            client,
            attempts: 3,
            verify_cached: true,
        })
    }

    /// Resolve relative ISO paths and `file:./…` checksum files against `dir` (Packer: the cwd).
    pub fn with_base_dir(mut self, dir: PathBuf) -> Self {
        self.base_dir = dir;
        self
    }

    /// How many times one URL is tried (resuming) before moving to the next URL. Default 3.
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// Re-hash cached files on every fetch (default true). With false, a cached file whose size matches its record
    /// is trusted.
    pub fn verify_cached(mut self, yes: bool) -> Self {
        self.verify_cached = yes;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn local_path(&self, url: &str) -> PathBuf {
        let raw = match url.strip_prefix("file://") {
            Some(p) => percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned(),
            None => url.to_string(),
        };
        let p = PathBuf::from(raw.trim_start_matches("./"));
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    /// The file name a URL points at (percent-decoded), used for checksum files and cache names.
    pub fn file_name(url: &str) -> String {
        let path = match url::Url::parse(url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" || u.scheme() == "file" => {
                u.path().to_string()
            }
            _ => url.to_string(),
        };
        let last = path
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("image.iso");
        percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The final cache path for a source.
    pub fn cache_path(&self, src: &IsoSource) -> PathBuf {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(src.checksum.to_string().as_bytes());
        for u in &src.urls {
            h.update([0u8]);
            h.update(u.as_bytes());
        }
        let key = hex::encode(&h.finalize()[..8]);
        let name: String = src
            .urls
            .first()
            .map(|u| Self::file_name(u))
            .unwrap_or_else(|| "image.iso".to_string())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.cache_dir.join(format!("{key}-{name}"))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(".kiln.json");
        PathBuf::from(s)
    }

    fn part_path(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    }

    /// What [`fetch`](Self::fetch) would do, without any network access.
    pub fn plan(&self, src: &IsoSource) -> Result<Planned, IsoError> {
        let first = src.urls.first().ok_or(IsoError::NoUrls)?;
        if is_local(first) {
            let path = self.local_path(first);
            let exists = path.is_file();
            return Ok(Planned::Local { path, exists });
        }
        let path = self.cache_path(src);
        if path.is_file()
            && self
                .read_meta(&path)
                .is_some_and(|m| m.spec == src.checksum.to_string())
        {
            return Ok(Planned::Cached { path });
        }
        let partial = std::fs::metadata(Self::part_path(&path))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Planned::Download {
            url: first.clone(),
            path,
            partial,
        })
    }

    fn read_meta(&self, path: &Path) -> Option<Meta> {
        let text = std::fs::read_to_string(Self::meta_path(path)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_meta(&self, path: &Path, meta: &Meta) -> Result<(), IsoError> {
        let mp = Self::meta_path(path);
        let tmp = Self::part_path(&mp);
        let text = serde_json::to_string_pretty(meta).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &mp).map_err(io_err("rename", &mp))
    }

    /// Obtain the ISO: cached, local, or downloaded; always verified against the checksum.
    pub async fn fetch(
        &self,
        src: &IsoSource,
        progress: &(dyn Fn(&Progress<'_>) + Sync),
    ) -> Result<Fetched, IsoError> {
        let spec = &src.checksum;
        if src.urls.is_empty() {
            return Err(IsoError::NoUrls);
        }
        if *spec == ChecksumSpec::None {
            tracing::warn!("iso_checksum = \"none\": the ISO is not verified");
        }
        let mut errors = Vec::new();
        for url in &src.urls {
            match self.fetch_one(src, spec, url, progress).await {
                Ok(f) => return Ok(f),
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "ISO source failed");
                    errors.push(e);
                }
            }
        }
        if errors.len() == 1 {
            Err(errors.remove(0))
        } else {
            Err(IsoError::AllFailed(errors))
        }
    }

    async fn fetch_one(
        &self,
        src: &IsoSource,
        spec: &ChecksumSpec,
        url: &str,
        progress: &(dyn Fn(&Progress<'_>) + Sync),
    ) -> Result<Fetched, IsoError> {
        if is_local(url) {
            let path = self.local_path(url);
            if !path.is_file() {
                return Err(IsoError::LocalMissing {
                    path: url.to_string(),
                    base: self.base_dir.display().to_string(),
                });
            }
            let digest = self.resolve_digest(spec, url).await?;
            if let Some(d) = &digest {
                let got = hash_file(&path, d.algo, url, progress).await?;
                if got != d.hex {
                    return Err(IsoError::ChecksumMismatch {
                        url: url.to_string(),
                        expected: d.clone(),
                        got,
                    });
                }
            }
            return Ok(Fetched {
                path,
                url: url.to_string(),
                digest,
                action: Action::Local,
            });
        }

        let path = self.cache_path(src);
        std::fs::create_dir_all(&self.cache_dir).map_err(io_err("create", &self.cache_dir))?;
        // One writer per cache entry: a second kiln fetching the same ISO waits, then finds it cached.
        let _lock = lock_entry(&path).await?;
        let spec_text = src.checksum.to_string();
        // The digest recorded for this spec by an earlier run: a re-download needs no checksum-file request.
        let mut known: Option<Option<Digest>> = None;
        if path.is_file() {
            match self.read_meta(&path) {
                Some(meta) if meta.spec == spec_text => {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let valid = match &meta.digest {
                        None => true,
                        Some(d) if self.verify_cached => {
                            hash_file(&path, d.algo, url, progress).await? == d.hex
                        }
                        Some(_) => size == meta.size,
                    };
                    if valid {
                        return Ok(Fetched {
                            path,
                            url: meta.url,
                            digest: meta.digest,
                            action: Action::Cached,
                        });
                    }
                    tracing::warn!(path = %path.display(), "cached ISO is corrupt; fetching it again");
                    known = Some(meta.digest);
                }
                _ => {}
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(Self::meta_path(&path));
        }

        let digest = match known {
            Some(d) => d,
            None => self.resolve_digest(spec, url).await?,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(io_err("create", &self.cache_dir))?;
        let part = Self::part_path(&path);
        let algo = digest.as_ref().map(|d| d.algo);
        let (mut bytes, mut resumed_from, mut got) =
            self.download(url, &part, algo, progress).await?;
        if resumed_from > 0
            && digest
                .as_ref()
                .zip(got.as_ref())
                .is_some_and(|(d, g)| *g != d.hex)
        {
            // The kept part did not belong to this file (stale or corrupt): start over once, from scratch.
            tracing::warn!(
                url,
                resumed_from,
                "resumed download does not match the checksum; downloading it whole"
            );
            let _ = std::fs::remove_file(&part);
            (bytes, resumed_from, got) = self.download(url, &part, algo, progress).await?;
        }
        if let (Some(d), Some(got)) = (&digest, got) {
            if got != d.hex {
                let _ = std::fs::remove_file(&part);
                return Err(IsoError::ChecksumMismatch {
                    url: url.to_string(),
                    expected: d.clone(),
                    got,
                });
            }
        }
        std::fs::rename(&part, &path).map_err(io_err("rename", &part))?;
        self.write_meta(
            &path,
            &Meta {
                spec: spec_text,
                digest: digest.clone(),
                url: url.to_string(),
                size: bytes,
            },
        )?;
        Ok(Fetched {
            path,
            url: url.to_string(),
            digest,
            action: Action::Downloaded {
                bytes,
                resumed_from,
            },
        })
    }

    /// The expected digest for `iso_url`, fetching a `file:` checksum file if needed.
    pub async fn resolve_digest(
        &self,
        spec: &ChecksumSpec,
        iso_url: &str,
    ) -> Result<Option<Digest>, IsoError> {
        match spec {
            ChecksumSpec::None => Ok(None),
            ChecksumSpec::Digest(d) => Ok(Some(d.clone())),
            ChecksumSpec::File { url, algo } => {
                let text = if is_local(url) {
                    let p = self.local_path(url);
                    tokio::fs::read_to_string(&p)
                        .await
                        .map_err(io_err("read checksum file", &p))?
                } else {
                    let resp = self
                        .client
                        .get(url)
                        .send()
                        .await
                        .map_err(|e| net_err(url, &e))?;
                    let resp = check_status(url, resp)?;
                    resp.text().await.map_err(|e| net_err(url, &e))?
                };
                let name = Self::file_name(iso_url);
                find_in_checksum_file(&text, &name, *algo).map(Some).ok_or(
                    IsoError::ChecksumNotFound {
                        checksum_url: url.clone(),
                        file_name: name,
                    },
                )
            }
        }
    }

    /// Download `url` into `part`, resuming what is there. Returns (total bytes, bytes kept from before, hex digest).
    async fn download(
        &self,
        url: &str,
        part: &Path,
        algo: Option<Algo>,
        progress: &(dyn Fn(&Progress<'_>) + Sync),
    ) -> Result<(u64, u64, Option<String>), IsoError> {
        let mut last_err = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let have = tokio::fs::metadata(part)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            let mut req = self.client.get(url);
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last_err = Some(net_err(url, &e));
                    continue;
                }
            };
            let status = resp.status();
            let resuming = have > 0 && status == reqwest::StatusCode::PARTIAL_CONTENT;
            if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                // The part file is not a prefix of what the server has: start over.
                let _ = tokio::fs::remove_file(part).await;
                last_err = Some(IsoError::Http {
                    url: url.to_string(),
                    status: 416,
                    hint: String::new(),
                });
                continue;
            }
            let resp = check_status(url, resp)?;
            let total = resp
                .content_length()
                .map(|l| if resuming { l + have } else { l });
            let mut hasher = algo.map(checksum::hasher);
            let mut file = if resuming {
                if let Some(h) = hasher.as_mut() {
                    hash_into(part, h.as_mut(), url, progress).await?;
                }
                tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(part)
                    .await
                    .map_err(io_err("open", part))?
            } else {
                tokio::fs::File::create(part)
                    .await
                    .map_err(io_err("create", part))?
            };
            let kept = if resuming { have } else { 0 };
            let mut done = kept;
            progress(&Progress {
                url,
                phase: Phase::Downloading,
                done,
                total,
            });
            let mut stream = resp.bytes_stream();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => {
                        file.write_all(&bytes)
                            .await
                            .map_err(io_err("write", part))?;
                        if let Some(h) = hasher.as_mut() {
                            h.update(&bytes);
                        }
                        done += bytes.len() as u64;
                        progress(&Progress {
                            url,
                            phase: Phase::Downloading,
                            done,
                            total,
                        });
                    }
                    Err(e) => {
                        failed = Some(net_err(url, &e));
                        break;
                    }
                }
            }
            file.flush().await.map_err(io_err("write", part))?;
            file.sync_all().await.map_err(io_err("sync", part))?;
            drop(file);
            if failed.is_none() && total.is_some_and(|t| done < t) {
                failed = Some(IsoError::Network {
                    url: url.to_string(),
                    msg: format!(
                        "connection closed after {done} of {} bytes",
                        total.unwrap_or(0)
                    ),
                });
            }
            if let Some(e) = failed {
                tracing::warn!(url, done, error = %e, "download interrupted; will resume");
                last_err = Some(e);
                continue;
            }
            let hex = hasher.map(|h| hex::encode(h.finalize()));
            return Ok((done, kept, hex));
        }
        Err(last_err.unwrap_or_else(|| IsoError::Network {
            url: url.to_string(),
            msg: "no attempt made".to_string(),
        }))
    }
}

/// Take an exclusive advisory lock (`flock`) on `<path>.lock`, released when the guard drops.
async fn lock_entry(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, IsoError> {
    use nix::fcntl::{Flock, FlockArg};
    let mut lp = path.as_os_str().to_owned();
    lp.push(".lock");
    let lock_path = PathBuf::from(lp);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(l),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
        Err((_, e)) => {
            return Err(IsoError::Io {
                op: "lock",
                path: lock_path,
                source: std::io::Error::from(e),
            });
        }
    };
    tracing::info!(path = %path.display(), "another kiln is fetching this ISO; waiting for it");
    let lp2 = lock_path.clone();
    tokio::task::spawn_blocking(move || Flock::lock(file, FlockArg::LockExclusive))
        .await
        .map_err(|e| IsoError::Io {
            op: "lock",
            path: lp2,
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|(_, e)| IsoError::Io {
            op: "lock",
            path: lock_path,
            source: std::io::Error::from(e),
        })
}

fn net_err(url: &str, e: &reqwest::Error) -> IsoError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    IsoError::Network {
        url: url.to_string(),
        msg,
    }
}

fn check_status(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, IsoError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let hint = match status.as_u16() {
        404 => "; the file is not there: check iso_url (mirrors drop old point releases; use the current one)",
        401 | 403 => "; the server refused access: check the URL and any credentials it needs",
        500..=599 => "; server error: retry later or use another mirror in iso_urls",
        _ => "",
    };
    Err(IsoError::Http {
        url: url.to_string(),
        status: status.as_u16(),
        hint: hint.to_string(),
    })
}

async fn hash_into(
    path: &Path,
    h: &mut (dyn sha2::digest::DynDigest + Send),
    url: &str,
    progress: &(dyn Fn(&Progress<'_>) + Sync),
) -> Result<u64, IsoError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(io_err("open", path))?;
    let total = f.metadata().await.map(|m| m.len()).ok();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).await.map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(&Progress {
            url,
            phase: Phase::Verifying,
            done,
            total,
        });
    }
    Ok(done)
}

/// Hash a file on disk (streamed), reporting progress as [`Phase::Verifying`].
pub async fn hash_file(
    path: &Path,
    algo: Algo,
    url: &str,
    progress: &(dyn Fn(&Progress<'_>) + Sync),
) -> Result<String, IsoError> {
    let mut h = checksum::hasher(algo);
    hash_into(path, h.as_mut(), url, progress).await?;
    Ok(hex::encode(h.finalize()))
}
