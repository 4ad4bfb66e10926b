//! Issue 11: the sandbox must survive clients that never speak TLS, and refuse file:// downloads
//! as PVE does. In-process, loopback only, no QEMU.

mod common;

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Wait until the server closes `s` (EOF or reset); false if it is still open after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// TCP connections that never start TLS (or stop half-way) were kept forever and exhausted the
/// file descriptors. Now they are cut after the handshake timeout and real clients still work.
#[tokio::test]
async fn connections_that_never_finish_tls_are_cut_and_real_clients_still_work() {
    let env = common::start_with(|c| {
        c.handshake_timeout = Duration::from_millis(700);
    })
    .await;
    let mut held = Vec::new();
    for i in 0..40 {
        let mut s = tokio::net::TcpStream::connect(env.sb.addr)
            .await
            .expect("connect");
        if i % 2 == 0 {
            // the first bytes of a ClientHello, never finished
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.ok();
        }
        held.push(s);
    }
    // a real client is served while they hang
    let r = env
        .http
        .get(env.url("/version"))
        .header("Authorization", env.token_header())
        .send()
        .await
        .expect("request while half-open connections are held");
    assert_eq!(r.status().as_u16(), 200);
    let t0 = Instant::now();
    for mut s in held {
        assert!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            "a connection without TLS stayed open"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    env.sb.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let env = common::start_with(|c| {
        c.max_connections = 3;
        c.handshake_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            tokio::net::TcpStream::connect(env.sb.addr)
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(env.sb.addr)
        .await
        .expect("connect");
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)).await,
        "the connection over the cap was not closed"
    );
    drop(held);
    env.sb.shutdown().await;
}

/// PVE's `url` pattern is `https?://.*`: file:// (any case, any form) gets PVE's answer and no
/// file is read.
#[tokio::test]
async fn download_url_refuses_file_urls_like_pve() {
    let env = common::start().await;
    for url in [
        "file:///etc/hostname",
        "FILE:///etc/hostname",
        "file:/etc/hostname",
        " file:///etc/hostname",
    ] {
        let r = env
            .call(
                "POST",
                "/nodes/pve/storage/local/download-url",
                &[("content", "iso"), ("filename", "x.iso"), ("url", url)],
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.raw);
        assert_eq!(
            r.body["errors"]["url"], "value does not match the regex pattern",
            "{url}: {}",
            r.raw
        );
    }
    let iso_dir = env.dir.path().join("state");
    let found = walk(&iso_dir).into_iter().any(|p| p.ends_with("x.iso"));
    assert!(!found, "a file:// download left a file");
    env.sb.shutdown().await;
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}
