//! `qemu-img` helpers for the sandbox's storages.

use std::path::{Path, PathBuf};

/// Errors of disk-image operations.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("invalid size '{0}' (expected e.g. 8G, 512M, 1024K, 32 or 1.5G)")]
    InvalidSize(String),
    #[error("qemu-img {args}: {msg}")]
    QemuImg { args: String, msg: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Qcow2,
    Raw,
    Vmdk,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
            ImageFormat::Vmdk => "vmdk",
        }
    }
}

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: String,
    /// Guest-visible size in bytes.
    pub virtual_size: u64,
    /// Bytes used on the host.
    pub actual_size: u64,
}

/// Parse a PVE size string into bytes: `8G`, `512M`, `1024K`, `1T`, plain number = bytes (as in
/// PVE's `size=` disk option, `pve-size` format: `\d+(\.\d+)?[KMGT]?`).
pub fn parse_size(s: &str) -> Result<u64, DiskError> {
    todo!("{s}")
}

/// Format bytes the way PVE writes `size=` in a disk config (`32G`, `512M`, `4M`, `528K`).
pub fn format_size(bytes: u64) -> String {
    todo!("{bytes}")
}

/// Create an empty image of `bytes`.
pub async fn create(path: &Path, format: ImageFormat, bytes: u64) -> Result<(), DiskError> {
    todo!("{path:?}{format:?}{bytes}")
}

/// Full copy (`qemu-img convert`), e.g. for a full clone; `dst` must not exist.
pub async fn convert(src: &Path, dst: &Path, dst_format: ImageFormat) -> Result<(), DiskError> {
    todo!("{src:?}{dst:?}{dst_format:?}")
}

/// Grow an image to `bytes` (`qemu-img resize`).
pub async fn resize(path: &Path, bytes: u64) -> Result<(), DiskError> {
    todo!("{path:?}{bytes}")
}

/// Rename an image file (e.g. `vm-100-disk-0` → `base-100-disk-0` on `template`).
pub async fn rename(from: &Path, to: &Path) -> Result<(), DiskError> {
    todo!("{from:?}{to:?}")
}

/// `qemu-img info --output=json`.
pub async fn info(path: &Path) -> Result<ImageInfo, DiskError> {
    todo!("{path:?}")
}
