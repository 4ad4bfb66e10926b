//! TLS settings: verify (webpki roots + optional CA file), pin the leaf
//! certificate's SHA-256 fingerprint, or skip verification.

use crate::error::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// How the server certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Verify the chain against the webpki roots plus an optional CA file
    /// (PEM, e.g. PVE's `/etc/pve/pve-root-ca.pem`). The default.
    Verify {
        /// Extra trusted CA certificates (PEM file).
        ca_file: Option<PathBuf>,
    },
    /// Accept exactly the certificate whose SHA-256 fingerprint is given
    /// (`AA:BB:…` or plain hex, any case). Chain and host name are not checked.
    Pin {
        /// The fingerprint text as configured.
        sha256_fingerprint: String,
    },
    /// Accept any certificate (`insecure_skip_tls_verify`).
    Insecure,
}

impl Default for Tls {
    fn default() -> Self {
        Tls::Verify { ca_file: None }
    }
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// A fingerprint string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SHA-256 fingerprint {input:?}: {reason} (expected 32 bytes as 'AA:BB:…' or 64 hex digits, as shown by `pvenode cert info` or `openssl x509 -noout -fingerprint -sha256`)")]
pub struct FingerprintError {
    /// The text.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

impl Fingerprint {
    /// Fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| FingerprintError {
            input: s.to_string(),
            reason,
        };
        let mut t = s.trim();
        for p in ["sha256:", "SHA256:", "sha256=", "SHA256 Fingerprint="] {
            if let Some(r) = t.strip_prefix(p) {
                t = r.trim();
            }
        }
        let hexchars: String = if t.contains(':') {
            let parts: Vec<&str> = t.split(':').collect();
            if parts.iter().any(|p| p.len() != 2) {
                return Err(err("each ':'-separated group must be 2 hex digits".into()));
            }
            parts.concat()
        } else {
            t.chars().filter(|c| !c.is_whitespace()).collect()
        };
        if hexchars.len() != 64 {
            return Err(err(format!("{} hex digits, need 64", hexchars.len())));
        }
        let bytes = hex::decode(&hexchars).map_err(|e| err(e.to_string()))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    /// `AA:BB:…` upper case, as PVE and openssl show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Remembers the last certificate a verifier rejected, so the error can show
/// its fingerprint.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    last: Mutex<Option<(Fingerprint, String)>>,
}

impl Rejections {
    fn record(&self, fp: Fingerprint, reason: String) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some((fp, reason));
        }
    }
    /// Take the last rejection.
    pub(crate) fn take(&self) -> Option<(Fingerprint, String)> {
        self.last.lock().ok().and_then(|mut g| g.take())
    }
}

/// The ring crypto provider (installed process-wide if nothing else is).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    // Installing fails harmlessly if another provider was installed first;
    // reqwest needs *a* default provider even for plain-HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
enum Mode {
    Verify(Arc<dyn ServerCertVerifier>),
    Pin(Fingerprint),
    Insecure,
}

#[derive(Debug)]
struct KilnVerifier {
    mode: Mode,
    provider: Arc<CryptoProvider>,
    rejections: Arc<Rejections>,
}

impl ServerCertVerifier for KilnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of_der(end_entity.as_ref());
        match &self.mode {
            Mode::Insecure => Ok(ServerCertVerified::assertion()),
            Mode::Pin(pin) => {
                if *pin == fp {
                    Ok(ServerCertVerified::assertion())
                } else {
                    let reason = format!(
                        "certificate fingerprint mismatch: pinned {pin}, server presented {fp}"
                    );
                    self.rejections.record(fp, reason.clone());
                    Err(rustls::Error::General(reason))
                }
            }
            Mode::Verify(inner) => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .inspect_err(|e| self.rejections.record(fp, e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Build the rustls client config for `tls`.
pub(crate) fn client_config(
    tls: &Tls,
    rejections: Arc<Rejections>,
) -> Result<rustls::ClientConfig, Error> {
    let provider = crypto_provider();
    let mode = match tls {
        Tls::Insecure => Mode::Insecure,
        Tls::Pin { sha256_fingerprint } => Mode::Pin(
            sha256_fingerprint
                .parse()
                .map_err(|e: FingerprintError| Error::InvalidOption(e.to_string()))?,
        ),
        Tls::Verify { ca_file } => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = ca_file {
                use rustls::pki_types::pem::PemObject;
                let data = std::fs::read(path).map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                })?;
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(&data) {
                    let cert = cert.map_err(|e| {
                        Error::InvalidOption(format!(
                            "CA file {}: not a PEM certificate: {e}",
                            path.display()
                        ))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::InvalidOption(format!("CA file {}: {e}", path.display()))
                    })?;
                    n += 1;
                }
                if n == 0 {
                    return Err(Error::InvalidOption(format!(
                        "CA file {} holds no PEM certificate",
                        path.display()
                    )));
                }
            }
            let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::InvalidOption(format!("TLS verifier: {e}")))?;
            Mode::Verify(v)
        }
    };
    let verifier = Arc::new(KilnVerifier {
        mode,
        provider: provider.clone(),
        rejections,
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidOption(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4d73a1b2c3d4e5f60718293a4b5c6d7e8f9001122334455667788990aabbccdd";

    #[test]
    fn fingerprint_formats() {
        let a: Fingerprint = HEX.parse().unwrap();
        let colon = a.to_string();
        assert_eq!(colon.len(), 32 * 3 - 1);
        assert!(colon.starts_with("4D:73:A1"));
        let b: Fingerprint = colon.parse().unwrap();
        let c: Fingerprint = colon.to_lowercase().parse().unwrap();
        let d: Fingerprint = HEX.to_uppercase().parse().unwrap();
        let e: Fingerprint = format!("sha256:{HEX}").parse().unwrap();
        let f: Fingerprint = format!("  {colon}\n").parse().unwrap();
        assert!([b, c, d, e, f].iter().all(|x| *x == a));
    }

    #[test]
    fn fingerprint_rejects() {
        for bad in [
            "",
            "abc",
            &HEX[..62],
            &format!("{HEX}00"),
            "4D:73",
            &HEX.replace('4', "g"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
        let e = "4D:7:A1".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(e.contains("2 hex digits"), "{e}");
    }

    #[test]
    fn of_der_matches_sha256() {
        let fp = Fingerprint::of_der(b"abc");
        assert_eq!(
            hex::encode(fp.0),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
