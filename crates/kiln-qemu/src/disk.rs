//! `qemu-img` helpers for the sandbox's storages.

use std::path::{Path, PathBuf};

use tokio::process::Command;

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

/// Parse a PVE size string into bytes: `8G`, `512M`, `1024K`, `1T`, `1.5G`; a plain number is
/// bytes (the `size=` disk option, PVE's `disk-size` format `\d+(\.\d+)?[KMGT]?`).
pub fn parse_size(s: &str) -> Result<u64, DiskError> {
    let bad = || DiskError::InvalidSize(s.to_string());
    let (num, mult) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('T') => (&s[..s.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (s, 1),
        _ => return Err(bad()),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (num.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let int: u64 = int.parse().map_err(|_| bad())?;
    let mut bytes = int.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        let digits = frac.len().min(9) as u32;
        let f: u64 = frac[..digits as usize].parse().map_err(|_| bad())?;
        bytes = bytes
            .checked_add(f * mult / 10u64.pow(digits))
            .ok_or_else(bad)?;
    }
    Ok(bytes)
}

/// Format bytes the way PVE writes `size=` in a disk config: the largest unit (T, G, M, K) that
/// divides the size exactly, else bytes (`32G`, `512M`, `4M`, `528K`).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

pub(crate) async fn qemu_img(args: &[&str]) -> Result<String, DiskError> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .map_err(|e| DiskError::QemuImg {
            args: args.join(" "),
            msg: format!("cannot run qemu-img ({e}); install the Debian package 'qemu-utils'"),
        })?;
    if !out.status.success() {
        return Err(DiskError::QemuImg {
            args: args.join(" "),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path_str(p: &Path) -> Result<&str, DiskError> {
    p.to_str().ok_or_else(|| DiskError::Io {
        what: "non-UTF-8 path".into(),
        path: p.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Create an empty image of `bytes`.
pub async fn create(path: &Path, format: ImageFormat, bytes: u64) -> Result<(), DiskError> {
    let size = bytes.to_string();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        format.as_str(),
        path_str(path)?,
        &size,
    ])
    .await
    .map(drop)
}

/// Full copy (`qemu-img convert`), e.g. for a full clone; `dst` must not exist.
pub async fn convert(src: &Path, dst: &Path, dst_format: ImageFormat) -> Result<(), DiskError> {
    if dst.exists() {
        return Err(DiskError::Io {
            what: "refusing to overwrite".into(),
            path: dst.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    qemu_img(&[
        "convert",
        "-p",
        "-O",
        dst_format.as_str(),
        path_str(src)?,
        path_str(dst)?,
    ])
    .await
    .map(drop)
}

/// Grow an image to `bytes` (`qemu-img resize`).
pub async fn resize(path: &Path, bytes: u64) -> Result<(), DiskError> {
    let size = bytes.to_string();
    qemu_img(&["resize", "-q", path_str(path)?, &size])
        .await
        .map(drop)
}

/// Rename an image file (e.g. `vm-100-disk-0` → `base-100-disk-0` on `template`).
pub async fn rename(from: &Path, to: &Path) -> Result<(), DiskError> {
    if to.exists() {
        return Err(DiskError::Io {
            what: "refusing to overwrite".into(),
            path: to.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    tokio::fs::rename(from, to)
        .await
        .map_err(|source| DiskError::Io {
            what: format!("renaming {} to", from.display()),
            path: to.to_path_buf(),
            source,
        })
}

/// `qemu-img info --output=json`.
pub async fn info(path: &Path) -> Result<ImageInfo, DiskError> {
    let p = path_str(path)?;
    let out = qemu_img(&["info", "--output=json", p]).await?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| DiskError::QemuImg {
        args: format!("info {p}"),
        msg: format!("unparsable output: {e}"),
    })?;
    Ok(ImageInfo {
        format: v["format"].as_str().unwrap_or("").to_string(),
        virtual_size: v["virtual-size"].as_u64().unwrap_or(0),
        actual_size: v["actual-size"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, b) in [
            ("8G", 8u64 << 30),
            ("512M", 512 << 20),
            ("1024K", 1 << 20),
            ("1T", 1 << 40),
            ("4096", 4096),
            ("1.5G", 3 << 29),
            ("0.5M", 1 << 19),
        ] {
            assert_eq!(parse_size(s).unwrap(), b, "{s}");
        }
        for s in [
            "",
            "G",
            "8g",
            "8GB",
            "-1G",
            "1.G",
            ".5G",
            "x",
            "99999999999999999999T",
        ] {
            assert!(parse_size(s).is_err(), "{s}");
        }
        assert_eq!(format_size(32 << 30), "32G");
        assert_eq!(format_size(528 << 10), "528K");
        assert_eq!(format_size(4 << 20), "4M");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(1000), "1000");
    }
}
