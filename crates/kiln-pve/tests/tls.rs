//! TLS: a local rustls server with rcgen certificates. Pinning by SHA-256
//! (right pin accepted, wrong pin rejected with the real fingerprint),
//! verification against a CA file, the default verifier's error message,
//! and insecure mode.

use kiln_pve::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki() -> Pki {
    let _ = crypto_provider();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Proxmox Virtual Environment (test CA)",
    );
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let leaf_der = leaf.der().to_vec();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key_der)
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_der,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    }
}

/// Serve `GET /api2/json/version` over TLS; returns the port.
async fn serve(acceptor: tokio_rustls::TlsAcceptor) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acc = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acc.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"data":{"version":"9.1.9","release":"9.1","repoid":"x"}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn opts(port: u16, host: &str, tls: Tls) -> ConnectOptions {
    let mut o = ConnectOptions::new(
        format!("https://{host}:{port}"),
        Auth::Token {
            token_id: "kiln@pve!t".into(),
            secret: Secret::new("x"),
        },
    );
    o.tls = tls;
    o.retry = RetryPolicy::none();
    o
}

#[tokio::test]
async fn pin_right_and_wrong_fingerprint() {
    let p = pki();
    let real = Fingerprint::of_der(&p.leaf_der);
    let port = serve(p.acceptor.clone()).await;

    // right pin, both formats, any case
    for pin in [
        real.to_string(),
        hex::encode(real.0),
        real.to_string().to_lowercase(),
    ] {
        let c = Client::connect(opts(
            port,
            "127.0.0.1",
            Tls::Pin {
                sha256_fingerprint: pin,
            },
        ))
        .await
        .unwrap();
        assert_eq!(c.version().await.unwrap().release, "9.1");
    }

    // wrong pin: rejected, message carries the real fingerprint and how to pin it
    let wrong = "AA:".repeat(31) + "AA";
    let c = Client::connect(opts(
        port,
        "127.0.0.1",
        Tls::Pin {
            sha256_fingerprint: wrong,
        },
    ))
    .await
    .unwrap();
    let e = c.version().await.unwrap_err();
    match &e {
        Error::Tls { fingerprint, .. } => {
            assert_eq!(fingerprint.as_deref(), Some(real.to_string().as_str()))
        }
        other => panic!("{other:?}"),
    }
    let s = e.to_string();
    assert!(
        s.contains(&format!("proxmox_fingerprint = \"{real}\"")),
        "{s}"
    );
    assert!(s.contains("PROXMOX_FINGERPRINT"), "{s}");
    assert!(s.contains("mismatch"), "{s}");

    // an unparsable pin is an option error at construction
    let e = Client::connect(opts(
        port,
        "127.0.0.1",
        Tls::Pin {
            sha256_fingerprint: "zz".into(),
        },
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::InvalidOption(_)), "{e:?}");
}

#[tokio::test]
async fn default_verification_rejects_unknown_ca_with_fingerprint() {
    let p = pki();
    let real = Fingerprint::of_der(&p.leaf_der);
    let port = serve(p.acceptor.clone()).await;
    let c = Client::connect(opts(port, "localhost", Tls::default()))
        .await
        .unwrap();
    let e = c.version().await.unwrap_err();
    assert!(matches!(e, Error::Tls { .. }), "{e:?}");
    let s = e.to_string();
    assert!(s.contains(&real.to_string()), "{s}");
    assert!(s.contains("insecure_skip_tls_verify"), "{s}");
    assert!(!e.is_maybe_processed());
}

#[tokio::test]
async fn ca_file_and_insecure() {
    let p = pki();
    let port = serve(p.acceptor.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("pve-root-ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let c = Client::connect(opts(
            port,
            host,
            Tls::Verify {
                ca_file: Some(ca.clone()),
            },
        ))
        .await
        .unwrap();
        assert_eq!(c.version().await.unwrap().version, "9.1.9", "{host}");
    }
    let c = Client::connect(opts(port, "127.0.0.1", Tls::Insecure))
        .await
        .unwrap();
    assert_eq!(c.version().await.unwrap().release, "9.1");

    // a bad CA file is reported with its path
    let bad = dir.path().join("nope.pem");
    std::fs::write(&bad, "not a cert").unwrap();
    let e = Client::connect(opts(port, "127.0.0.1", Tls::Verify { ca_file: Some(bad) }))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
}

#[tokio::test]
async fn https_to_plain_http_port_is_explained() {
    let _ = crypto_provider();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let c = Client::connect(opts(port, "127.0.0.1", Tls::default()))
        .await
        .unwrap();
    let e = c.version().await.unwrap_err();
    assert!(e.is_not_sent(), "{e:?}");
    assert!(e.to_string().contains("did not answer with TLS"), "{e}");
}
