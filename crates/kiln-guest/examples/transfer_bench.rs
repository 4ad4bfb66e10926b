//! Rough speed figures against a local OpenSSH sshd (needs root and openssh-server):
//! `cargo run --release -p kiln-guest --example transfer_bench`.

use std::time::{Duration, Instant};

use kiln_guest::testsupport::{TestSshd, TEST_PASSWORD, TEST_USER};
use kiln_guest::{
    wait_for_ssh, CancellationToken, Communicator, SshAuth, SshCommunicator, SshConfig,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let s = TestSshd::start()?;
    let mut cfg = SshConfig::new(
        "127.0.0.1",
        TEST_USER,
        vec![SshAuth::Password(TEST_PASSWORD.into())],
    );
    cfg.port = s.port();
    let t = Instant::now();
    let c = wait_for_ssh(
        cfg.clone(),
        Some(Duration::from_secs(10)),
        &CancellationToken::new(),
        &|_| {},
    )
    .await?;
    println!("wait_for_ssh (connect + auth + check): {:?}", t.elapsed());
    let t = Instant::now();
    let _ = SshCommunicator::connect(cfg).await?;
    println!("connect + auth: {:?}", t.elapsed());
    let n = 50;
    let t = Instant::now();
    for _ in 0..n {
        c.exec_capture("true", &CancellationToken::new()).await?;
    }
    println!("exec `true`: {:?} each", t.elapsed() / n);
    let mib = 64usize;
    let data: Vec<u8> = (0..mib * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    c.upload_bytes(&data, "bench.bin", None).await?;
    let up = t.elapsed();
    println!(
        "upload {mib} MiB: {up:?} ({:.1} MiB/s)",
        mib as f64 / up.as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    c.download("bench.bin", &dir.path().join("b")).await?;
    let down = t.elapsed();
    println!(
        "download {mib} MiB: {down:?} ({:.1} MiB/s)",
        mib as f64 / down.as_secs_f64()
    );
    assert_eq!(std::fs::read(dir.path().join("b"))?, data);
    Ok(())
}
