//! `iso_checksum` forms (parsed by kiln-config, the one parser validate and the build share) and
//! checksum files.

use sha2::digest::DynDigest;

use crate::IsoError;

use kiln_config::model::checksum::parse_hex;
pub use kiln_config::model::checksum::{Algo, ChecksumError, ChecksumSpec, Digest};

impl From<ChecksumError> for IsoError {
    fn from(e: ChecksumError) -> IsoError {
        IsoError::BadChecksum {
            spec: e.spec,
            msg: e.msg,
        }
    }
}

/// A streaming hasher for `algo`.
pub(crate) fn hasher(algo: Algo) -> Box<dyn DynDigest + Send> {
    match algo {
        Algo::Md5 => Box::new(md5::Md5::default()),
        Algo::Sha1 => Box::new(sha1::Sha1::default()),
        Algo::Sha256 => Box::new(sha2::Sha256::default()),
        Algo::Sha512 => Box::new(sha2::Sha512::default()),
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
    fn parse_errors_are_iso_errors() {
        let e: IsoError = ChecksumSpec::parse("crc32:1234")
            .map_err(IsoError::from)
            .expect_err("unknown type");
        assert!(matches!(e, IsoError::BadChecksum { .. }), "{e}");
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
