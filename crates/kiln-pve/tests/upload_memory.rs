//! The upload streams: uploading a 512 MiB (sparse) file keeps the process's
//! peak RSS growth far below the file size. Own test binary so no other test
//! shares the process while measuring.

use kiln_pve::*;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A server that reads the request body into a small buffer, discards it,
/// checks the byte count against Content-Length and answers with a UPID.
async fn discard_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut len = 0u64;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0u64;
                while got < len {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n as u64,
                    }
                }
                let body = if got == len {
                    r#"{"data":"UPID:pve:000A1B2D:0032F1A0:6745A1C0:imgcopy::root@pam:"}"#
                } else {
                    r#"{"data":null}"#
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = w.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_memory_is_flat() {
    let _ = crypto_provider();
    let port = discard_server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.iso");
    let size: u64 = 512 * 1024 * 1024;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let mut o = ConnectOptions::new(
        format!("http://127.0.0.1:{port}"),
        Auth::Token {
            token_id: "root@pam!t".into(),
            secret: Secret::new("x"),
        },
    );
    o.allow_http = true;
    o.timeout = Duration::from_secs(600);
    let c = Client::connect(o).await.unwrap();
    let before = vm_hwm_kib();
    let req = UploadRequest {
        path: path.clone(),
        filename: "big.iso".into(),
        content: UploadContent::Iso,
        checksum: None,
    };
    let upid = c.upload("pve", "local", &req, None).await.unwrap();
    assert_eq!(upid.task_type, "imgcopy");
    let after = vm_hwm_kib();
    let grew_mib = after.saturating_sub(before) / 1024;
    println!(
        "upload of {} MiB: peak RSS {} MiB → {} MiB (+{grew_mib} MiB)",
        size >> 20,
        before / 1024,
        after / 1024
    );
    assert!(before > 0, "VmHWM not readable");
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB for a {} MiB upload",
        size >> 20
    );
}
