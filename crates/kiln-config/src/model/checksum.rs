//! `iso_checksum`: the one parser of its forms, used by `validate`, `kiln init` and the build's ISO
//! fetcher (kiln-iso re-exports these types).
//!
//! Packer's forms: `none`, `<type>:<hex>`, bare hex (type from the length), `file:<url or path>`
//! and `<type>:file:<url or path>` (a GNU or BSD checksum file, matched by the ISO's file name).

/// An `iso_checksum` kiln cannot use, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid iso_checksum \"{spec}\": {msg}")]
pub struct ChecksumError {
    /// The value as written.
    pub spec: String,
    /// What is wrong and what to write instead.
    pub msg: String,
}

/// A hash algorithm Packer accepts in `iso_checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// `md5`, `sha1`, `sha256`, `sha512` (any case).
    pub fn from_name(s: &str) -> Option<Algo> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Some(Algo::Md5),
            "sha1" => Some(Algo::Sha1),
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            _ => None,
        }
    }

    /// The algorithm whose hex digest has this length.
    pub fn from_hex_len(len: usize) -> Option<Algo> {
        match len {
            32 => Some(Algo::Md5),
            40 => Some(Algo::Sha1),
            64 => Some(Algo::Sha256),
            128 => Some(Algo::Sha512),
            _ => None,
        }
    }
}

/// A concrete expected digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    pub algo: Algo,
    /// Lower-case hex.
    pub hex: String,
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

/// A parsed `iso_checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumSpec {
    /// `none`: no verification (Packer warns; so does kiln).
    None,
    /// `sha256:…`, `md5:…`, or bare hex (type from the length).
    Digest(Digest),
    /// `file:URL` / `file:./path` (optionally `sha256:file:…`): a GNU or BSD checksum file, matched by file name.
    File { url: String, algo: Option<Algo> },
}

/// A digest in hex (`algo` given, or inferred from the length); `spec` is the whole value, for the message.
pub fn parse_hex(spec: &str, algo: Option<Algo>, hex: &str) -> Result<Digest, ChecksumError> {
    let hex = hex.trim().to_ascii_lowercase();
    let bad = |msg: String| ChecksumError {
        spec: spec.to_string(),
        msg,
    };
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the digest must be hexadecimal".to_string()));
    }
    let by_len = Algo::from_hex_len(hex.len());
    let algo = match (algo, by_len) {
        (Some(a), Some(b)) if a == b => a,
        (Some(a), _) => {
            return Err(bad(format!("a {} digest has {} hex digits, this one has {}", a.name(), expected_len(a), hex.len())))
        }
        (None, Some(b)) => b,
        (None, None) => {
            return Err(bad(format!(
                "cannot tell the hash type from a {}-digit digest; write it as sha256:<hex> (or md5:, sha1:, sha512:)",
                hex.len()
            )))
        }
    };
    Ok(Digest { algo, hex })
}

fn expected_len(a: Algo) -> usize {
    match a {
        Algo::Md5 => 32,
        Algo::Sha1 => 40,
        Algo::Sha256 => 64,
        Algo::Sha512 => 128,
    }
}

/// The canonical text of the value (`none`, `sha256:<lower-case hex>`, `file:<url>`,
/// `sha256:file:<url>`): what `inspect` shows and what the ISO cache records; it parses back
/// to the same value.
impl std::fmt::Display for ChecksumSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChecksumSpec::None => f.write_str("none"),
            ChecksumSpec::Digest(d) => write!(f, "{d}"),
            ChecksumSpec::File { url, algo: None } => write!(f, "file:{url}"),
            ChecksumSpec::File { url, algo: Some(a) } => write!(f, "{}:file:{url}", a.name()),
        }
    }
}

impl serde::Serialize for ChecksumSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::str::FromStr for ChecksumSpec {
    type Err = ChecksumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChecksumSpec::parse(s)
    }
}

impl ChecksumSpec {
    /// Parse every `iso_checksum` form Packer accepts.
    pub fn parse(spec: &str) -> Result<ChecksumSpec, ChecksumError> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(ChecksumError {
                spec: spec.to_string(),
                msg: "iso_checksum is empty; give sha256:<hex>, file:<url> or \"none\"".to_string(),
            });
        }
        if s.eq_ignore_ascii_case("none") {
            return Ok(ChecksumSpec::None);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return Ok(ChecksumSpec::File {
                url: rest.to_string(),
                algo: None,
            });
        }
        if let Some((ty, rest)) = s.split_once(':') {
            let Some(algo) = Algo::from_name(ty) else {
                return Err(ChecksumError {
                    spec: spec.to_string(),
                    msg: format!("unknown checksum type \"{ty}\" (use md5, sha1, sha256, sha512, file or none)"),
                });
            };
            if let Some(url) = rest.strip_prefix("file:") {
                return Ok(ChecksumSpec::File {
                    url: url.to_string(),
                    algo: Some(algo),
                });
            }
            return Ok(ChecksumSpec::Digest(parse_hex(spec, Some(algo), rest)?));
        }
        Ok(ChecksumSpec::Digest(parse_hex(spec, None, s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H256: &str = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    #[test]
    fn parse_forms() {
        assert_eq!(ChecksumSpec::parse("none").ok(), Some(ChecksumSpec::None));
        assert_eq!(
            ChecksumSpec::parse(&format!("sha256:{H256}")).ok(),
            Some(ChecksumSpec::Digest(Digest {
                algo: Algo::Sha256,
                hex: H256.into()
            }))
        );
        assert_eq!(
            ChecksumSpec::parse(&H256.to_uppercase()).ok(),
            Some(ChecksumSpec::Digest(Digest {
                algo: Algo::Sha256,
                hex: H256.into()
            }))
        );
        let md5 = "5eb63bbbe01eeed093cb22bb8f5acdc3";
        assert!(matches!(
            ChecksumSpec::parse(md5),
            Ok(ChecksumSpec::Digest(Digest {
                algo: Algo::Md5,
                ..
            }))
        ));
        assert!(matches!(
            ChecksumSpec::parse(&format!("md5:{md5}")),
            Ok(ChecksumSpec::Digest(Digest {
                algo: Algo::Md5,
                ..
            }))
        ));
        assert!(matches!(
            ChecksumSpec::parse(&format!("sha1:{}", "a".repeat(40))),
            Ok(ChecksumSpec::Digest(_))
        ));
        assert!(matches!(
            ChecksumSpec::parse(&format!("sha512:{}", "a".repeat(128))),
            Ok(ChecksumSpec::Digest(_))
        ));
        assert_eq!(
            ChecksumSpec::parse("file:https://releases.ubuntu.com/24.04/SHA256SUMS").ok(),
            Some(ChecksumSpec::File {
                url: "https://releases.ubuntu.com/24.04/SHA256SUMS".into(),
                algo: None
            })
        );
        assert_eq!(
            ChecksumSpec::parse("sha256:file:./SUMS").ok(),
            Some(ChecksumSpec::File {
                url: "./SUMS".into(),
                algo: Some(Algo::Sha256)
            })
        );
    }

    #[test]
    fn canonical_text_parses_back() {
        for v in [
            "none".to_string(),
            "NONE".to_string(),
            H256.to_uppercase(),
            format!("SHA256:{H256}"),
            format!("md5:{}", "a".repeat(32)),
            "file:https://releases.ubuntu.com/24.04/SHA256SUMS".to_string(),
            "sha512:file:./SUMS".to_string(),
        ] {
            let spec = ChecksumSpec::parse(&v).expect("valid");
            let text = spec.to_string();
            assert_eq!(ChecksumSpec::parse(&text).ok(), Some(spec), "{v} -> {text}");
        }
        assert_eq!(
            ChecksumSpec::parse(H256).map(|s| s.to_string()),
            Ok(format!("sha256:{H256}"))
        );
        assert_eq!(
            serde_json::to_value(ChecksumSpec::parse("sha256:file:./S").ok()).ok(),
            Some(serde_json::json!("sha256:file:./S"))
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "sha256:abc",
            "crc32:1234",
            "xyz",
            &format!("md5:{H256}"),
            "sha256:zz",
        ] {
            assert!(
                matches!(ChecksumSpec::parse(bad), Err(ChecksumError { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn case_and_spaces() {
        assert_eq!(ChecksumSpec::parse("NONE").ok(), Some(ChecksumSpec::None));
        assert_eq!(
            ChecksumSpec::parse(&format!("SHA256:{}", H256.to_uppercase())).ok(),
            Some(ChecksumSpec::Digest(Digest {
                algo: Algo::Sha256,
                hex: H256.into()
            }))
        );
        let e = ChecksumSpec::parse("sha256:abc").expect_err("short digest");
        assert!(e.msg.contains("64 hex digits"), "{e}");
    }
}
