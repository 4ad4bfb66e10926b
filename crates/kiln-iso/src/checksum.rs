//! `iso_checksum` forms and checksum files.

use sha2::digest::DynDigest;

use crate::IsoError;

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

    fn from_name(s: &str) -> Option<Algo> {
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

    pub(crate) fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            Algo::Md5 => Box::new(md5::Md5::default()),
            Algo::Sha1 => Box::new(sha1::Sha1::default()),
            Algo::Sha256 => Box::new(sha2::Sha256::default()),
            Algo::Sha512 => Box::new(sha2::Sha512::default()),
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

fn parse_hex(spec: &str, algo: Option<Algo>, hex: &str) -> Result<Digest, IsoError> {
    let hex = hex.trim().to_ascii_lowercase();
    let bad = |msg: String| IsoError::BadChecksum {
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

impl ChecksumSpec {
    /// Parse every `iso_checksum` form Packer accepts.
    pub fn parse(spec: &str) -> Result<ChecksumSpec, IsoError> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(IsoError::BadChecksum {
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
                return Err(IsoError::BadChecksum {
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

/// Find the digest for `file_name` in a checksum file (GNU `hex  name` / `hex *name`, BSD `SHA256 (name) = hex`).
/// A file holding a single bare digest applies to any name.
pub fn find_in_checksum_file(content: &str, file_name: &str, algo: Option<Algo>) -> Option<Digest> {
    let want = file_name.trim_start_matches("./");
    let lines: Vec<&str> = content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for line in &lines {
        // BSD: ALGO (name) = hex
        if let Some(open) = line.find(" (") {
            if let (Some(close), Some(eq)) = (line.rfind(") = "), line.rfind('=')) {
                let ty = &line[..open];
                let name = &line[open + 2..close];
                let hex = line[eq + 1..].trim();
                if let Some(a) = Algo::from_name(ty) {
                    if algo.is_none_or(|x| x == a) && name.trim_start_matches("./") == want {
                        if let Ok(d) = parse_hex(line, Some(a), hex) {
                            return Some(d);
                        }
                    }
                    continue;
                }
            }
        }
        // GNU: hex  name | hex *name
        let mut parts = line.splitn(2, char::is_whitespace);
        let (Some(hex), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name
            .trim_start()
            .trim_start_matches('*')
            .trim_start_matches("./");
        if name == want {
            if let Ok(d) = parse_hex(line, algo, hex) {
                return Some(d);
            }
        }
    }
    if lines.len() == 1 && !lines[0].contains(char::is_whitespace) {
        return parse_hex(lines[0], algo, lines[0]).ok();
    }
    None
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
                matches!(ChecksumSpec::parse(bad), Err(IsoError::BadChecksum { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn checksum_files() {
        let gnu = format!(
            "{}  other.iso\n{H256} *ubuntu-24.04-live-server-amd64.iso\n",
            "0".repeat(64)
        );
        assert_eq!(
            find_in_checksum_file(&gnu, "ubuntu-24.04-live-server-amd64.iso", None).map(|d| d.hex),
            Some(H256.to_string())
        );
        assert_eq!(
            find_in_checksum_file(&gnu, "other.iso", None).map(|d| d.hex),
            Some("0".repeat(64))
        );
        assert_eq!(find_in_checksum_file(&gnu, "missing.iso", None), None);
        let bsd = format!(
            "SHA256 (./guest.iso) = {H256}\nMD5 (guest.iso) = 5eb63bbbe01eeed093cb22bb8f5acdc3\n"
        );
        assert_eq!(
            find_in_checksum_file(&bsd, "guest.iso", None).map(|d| d.algo),
            Some(Algo::Sha256)
        );
        assert_eq!(
            find_in_checksum_file(&bsd, "guest.iso", Some(Algo::Md5)).map(|d| d.algo),
            Some(Algo::Md5)
        );
        assert_eq!(
            find_in_checksum_file(&format!("{H256}\n"), "any.iso", None).map(|d| d.hex),
            Some(H256.into())
        );
        assert_eq!(find_in_checksum_file("# comment\n", "any.iso", None), None);
    }
}
