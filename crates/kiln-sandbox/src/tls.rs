//! Self-signed certificate generated at start (as `pveproxy` serves `pve-ssl.pem`).

use sha2::{Digest, Sha256};
use std::sync::Arc;

pub struct TlsSetup {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 fingerprint of the certificate, PVE style: `AA:BB:…` (uppercase).
    pub fingerprint: String,
    pub cert_pem: String,
}

pub fn fingerprint(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    d.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn generate(node: &str) -> Result<TlsSetup, String> {
    let names = vec![
        node.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("certificate generation: {e}"))?;
    let cert_der = ck.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| format!("private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .map_err(|e| format!("TLS config: {e}"))?;
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        fingerprint: fingerprint(&cert_der),
        cert_pem: ck.cert.pem(),
    })
}
