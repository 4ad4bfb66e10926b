//! Secrets scan over e2e artefacts: build output, `-machine-readable` output, the sandbox's
//! events.jsonl, manifests and logs must not contain the sandbox password, API tokens, the SSH
//! private key or sensitive variable values — not even URL-encoded or base64-encoded.
//!
//! ```no_run
//! use kiln_testguest::secrets::{Secret, scan};
//! let secrets = [Secret::new("sandbox password", "s3cret-pass")];
//! let report = scan(&[std::path::PathBuf::from("/tmp/e2e")], &secrets, &["id_ed25519"]);
//! assert!(report.hits.is_empty(), "{report}");
//! ```
//!
//! A hit names the secret by its label and the file:line, never the secret itself.

use std::fmt;
use std::path::{Path, PathBuf};

/// Files larger than this are not scanned (VM disks, ISOs).
const MAX_FILE: u64 = 64 << 20;

/// One secret: a label for reports and the value.
#[derive(Clone)]
pub struct Secret {
    pub label: String,
    pub value: String,
}

impl Secret {
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Secret {
        Secret {
            label: label.into(),
            value: value.into(),
        }
    }

    /// The forms the value may take in an artefact: as is, URL-encoded (form bodies, query
    /// strings), base64 (HTTP basic auth, cloud-init), JSON-escaped.
    fn forms(&self) -> Vec<(String, &'static str)> {
        let v = &self.value;
        let mut out = vec![(v.clone(), "plain")];
        let url = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        if url != *v {
            out.push((url, "url-encoded"));
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
        // base64 of a short value is short and may match by chance: only long ones
        if b64.len() >= 12 {
            out.push((b64.trim_end_matches('=').to_string(), "base64"));
        }
        let json = serde_json::to_string(v).unwrap_or_default();
        let json = json.trim_matches('"').to_string();
        if json != *v {
            out.push((json, "json-escaped"));
        }
        out
    }
}

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub file: PathBuf,
    pub line: usize,
    pub label: String,
    pub form: &'static str,
}

/// What a scan looked at and found.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub bytes: u64,
    pub skipped: Vec<PathBuf>,
    pub hits: Vec<Hit>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "secrets scan: {} files, {} bytes, {} hit(s)",
            self.files,
            self.bytes,
            self.hits.len()
        )?;
        for h in &self.hits {
            writeln!(
                f,
                "  {}:{}: {} ({})",
                h.file.display(),
                h.line,
                h.label,
                h.form
            )?;
        }
        Ok(())
    }
}

/// Guest media: disk images and CD images hold the guest's own data by design (its `/etc/shadow`,
/// the cloud-init seed with the password hash the template asked for). They are the guest's, not
/// kiln's output, so the scan leaves them out (and lists them as skipped).
pub const GUEST_MEDIA: &[&str] = &[".qcow2", ".raw", ".img", ".iso", ".vmdk", ".fd"];

/// Scan files and directories (recursively) for `secrets`. Files whose name is in `exclude`
/// (e.g. the private key file itself), guest media ([`GUEST_MEDIA`]) and files over 64 MiB are
/// skipped; other binary files are scanned as bytes.
pub fn scan(paths: &[PathBuf], secrets: &[Secret], exclude: &[&str]) -> Report {
    let forms: Vec<(String, &'static str, String)> = secrets
        .iter()
        .filter(|s| !s.value.is_empty())
        .flat_map(|s| {
            s.forms()
                .into_iter()
                .map(move |(v, form)| (v, form, s.label.clone()))
        })
        .collect();
    let mut report = Report::default();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                entries.sort();
                stack.extend(entries.into_iter().rev());
            }
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let media = GUEST_MEDIA.iter().any(|ext| name.ends_with(ext));
        if exclude.contains(&name.as_str()) || media || meta.len() > MAX_FILE {
            report.skipped.push(p);
            continue;
        }
        let Ok(data) = std::fs::read(&p) else {
            report.skipped.push(p);
            continue;
        };
        report.files += 1;
        report.bytes += data.len() as u64;
        scan_bytes(&p, &data, &forms, &mut report.hits);
    }
    report
}

fn scan_bytes(
    file: &Path,
    data: &[u8],
    forms: &[(String, &'static str, String)],
    hits: &mut Vec<Hit>,
) {
    for (value, form, label) in forms {
        let needle = value.as_bytes();
        if needle.is_empty() || needle.len() > data.len() {
            continue;
        }
        for (i, w) in data.windows(needle.len()).enumerate() {
            if w == needle {
                let line = data[..i].iter().filter(|b| **b == b'\n').count() + 1;
                hits.push(Hit {
                    file: file.to_path_buf(),
                    line,
                    label: label.clone(),
                    form,
                });
            }
        }
    }
}

/// The secret lines of an OpenSSH/PEM private key file (its base64 body).
pub fn private_key_secrets(label: &str, key_file: &Path) -> Vec<Secret> {
    std::fs::read_to_string(key_file)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(|l| Secret::new(label, l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_form_and_names_file_and_line_not_the_secret() {
        let d = tempfile::tempdir().expect("tempdir");
        let secret = "p@ss word/42!";
        std::fs::write(d.path().join("a.log"), format!("ok\nleak {secret}\n")).expect("w");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::fs::write(
            d.path().join("sub/events.jsonl"),
            "{\"body\":\"password=p%40ss%20word%2F42%21\"}\n",
        )
        .expect("w");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        std::fs::write(d.path().join("sub/m.json"), format!("x\ny\n{b64}\n")).expect("w");
        std::fs::write(d.path().join("id_ed25519"), secret).expect("w");
        std::fs::write(d.path().join("clean.txt"), "nothing here\n").expect("w");
        let r = scan(
            &[d.path().to_path_buf()],
            &[Secret::new("sandbox password", secret)],
            &["id_ed25519"],
        );
        assert_eq!(r.files, 4, "{r}");
        let got: Vec<(String, usize, &str)> = r
            .hits
            .iter()
            .map(|h| {
                (
                    h.file
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    h.line,
                    h.form,
                )
            })
            .collect();
        assert!(got.contains(&("a.log".into(), 2, "plain")), "{got:?}");
        assert!(
            got.contains(&("events.jsonl".into(), 1, "url-encoded")),
            "{got:?}"
        );
        assert!(got.contains(&("m.json".into(), 3, "base64")), "{got:?}");
        assert_eq!(r.hits.len(), 3, "{r}");
        assert!(!r.to_string().contains(secret));
    }

    #[test]
    fn a_clean_tree_has_no_hits() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("build.log"), "==> done\n").expect("w");
        let r = scan(
            &[d.path().to_path_buf()],
            &[Secret::new("token", "0123456789abcdef")],
            &[],
        );
        assert_eq!((r.files, r.hits.len()), (1, 0));
    }

    #[test]
    fn guest_media_are_skipped_but_logs_beside_them_are_not() {
        let d = tempfile::tempdir().expect("tempdir");
        let hash = "$6$salt$0123456789abcdef";
        // a guest disk and a cloud-init CD hold the hash by design
        std::fs::write(d.path().join("vm-9100-disk-0.qcow2"), hash).expect("w");
        std::fs::write(d.path().join("vm-9000-cloudinit.iso"), hash).expect("w");
        // kiln's own log must not
        std::fs::write(d.path().join("build.log"), format!("user-data: {hash}\n")).expect("w");
        let r = scan(
            &[d.path().to_path_buf()],
            &[Secret::new("password_hash", hash)],
            &[],
        );
        assert_eq!(r.files, 1);
        assert_eq!(r.skipped.len(), 2);
        assert_eq!(r.hits.len(), 1);
        assert!(r.hits[0].file.ends_with("build.log"));
    }
}
