//! End-to-end tests against a real OpenSSH sshd (KILN_E2E=1, root, openssh-server).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_guest::testsupport::{TestSshd, TEST_PASSWORD, TEST_USER};
use kiln_guest::{
    wait_for_ssh, CancellationToken, CommError, Communicator, ConnectError, ExitStatus, SshAuth,
    SshCommunicator, SshConfig, TempKeyPair, WaitError, WaitEvent,
};

fn cfg(sshd: &TestSshd, auth: Vec<SshAuth>) -> SshConfig {
    let mut c = SshConfig::new("127.0.0.1", TEST_USER, auth);
    c.port = sshd.port();
    c.connect_timeout = Duration::from_secs(10);
    c
}

fn pw() -> Vec<SshAuth> {
    vec![SshAuth::Password(TEST_PASSWORD.into())]
}

fn sshd() -> TestSshd {
    match TestSshd::start() {
        Ok(s) => s,
        Err(e) => panic!("cannot start the test sshd: {e}"),
    }
}

struct Collected {
    out: Mutex<Vec<String>>,
    err: Mutex<Vec<String>>,
}

impl Collected {
    fn new() -> Self {
        Collected {
            out: Mutex::new(Vec::new()),
            err: Mutex::new(Vec::new()),
        }
    }
    async fn run(&self, c: &dyn Communicator, cmd: &str) -> ExitStatus {
        c.exec(
            cmd,
            &|l| self.out.lock().expect("lock").push(l.to_string()),
            &|l| self.err.lock().expect("lock").push(l.to_string()),
            &CancellationToken::new(),
        )
        .await
        .expect("exec")
    }
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn password_auth_exec_codes_and_streams() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let c = SshCommunicator::connect(cfg(&s, pw()))
        .await
        .expect("connect");
    assert!(c
        .host_key_fingerprint()
        .is_some_and(|f| f.starts_with("SHA256:")));
    let col = Collected::new();
    let st = col
        .run(&c, "echo out1; echo err1 >&2; printf 'partial'; exit 7")
        .await;
    assert_eq!(st, ExitStatus::Code(7));
    assert_eq!(*col.out.lock().expect("lock"), vec!["out1", "partial"]);
    assert_eq!(*col.err.lock().expect("lock"), vec!["err1"]);
    let who = c
        .exec_capture("id -un; echo $HOME", &CancellationToken::new())
        .await
        .expect("exec");
    assert!(who.status.success());
    assert_eq!(who.stdout, format!("{TEST_USER}\n{}\n", s.home().display()));
    // many commands over one connection
    for i in 0..20u32 {
        let o = c
            .exec_capture(&format!("exit {i}"), &CancellationToken::new())
            .await
            .expect("exec");
        assert_eq!(o.status, ExitStatus::Code(i));
    }
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn pty_merges_streams() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let mut c = cfg(&s, pw());
    c.pty = true;
    let comm = SshCommunicator::connect(c).await.expect("connect");
    let col = Collected::new();
    let st = col.run(&comm, "tty; echo to-stderr >&2; exit 4").await;
    assert_eq!(st, ExitStatus::Code(4));
    let out = col.out.lock().expect("lock").clone();
    assert!(
        out.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{out:?}"
    );
    assert!(out.contains(&"to-stderr".to_string()), "{out:?}");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn signal_exit_and_cancel() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let c = SshCommunicator::connect(cfg(&s, pw()))
        .await
        .expect("connect");
    let o = c
        .exec_capture("kill -TERM $$", &CancellationToken::new())
        .await
        .expect("exec");
    assert!(
        matches!(&o.status, ExitStatus::Signal { name, .. } if name == "TERM"),
        "{:?}",
        o.status
    );
    assert!(!o.status.success());
    // cancel a long command
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    let start = Instant::now();
    let r = c
        .exec(
            "sleep 30",
            &kiln_guest::discard,
            &kiln_guest::discard,
            &cancel,
        )
        .await;
    assert!(matches!(r, Err(CommError::Cancelled)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // the connection is still usable
    let o = c
        .exec_capture("echo ok", &CancellationToken::new())
        .await
        .expect("exec");
    assert_eq!(o.stdout, "ok\n");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn key_auth_all_kinds() {
    kiln_testguest::require_e2e();
    let s = sshd();
    // generated temporary key
    let k = Arc::new(TempKeyPair::generate_ed25519("kiln-test").expect("key"));
    s.authorize_key(k.public_key_openssh()).expect("authorize");
    let c = SshCommunicator::connect(cfg(&s, vec![SshAuth::TempKey(k)]))
        .await
        .expect("temp key");
    assert!(c
        .exec_capture("true", &CancellationToken::new())
        .await
        .expect("exec")
        .status
        .success());
    // key files: OpenSSH ed25519, PEM rsa, ecdsa, encrypted ed25519
    for (kind, pem, pass) in [
        ("ed25519", false, ""),
        ("rsa", true, ""),
        ("ecdsa", false, ""),
        ("ed25519", false, "s3cret-phrase"),
    ] {
        let path = s.make_key(kind, pem, pass).expect("ssh-keygen");
        let auth = SshAuth::PrivateKeyFile {
            path: path.clone(),
            passphrase: (!pass.is_empty()).then(|| pass.into()),
        };
        let c = SshCommunicator::connect(cfg(&s, vec![auth]))
            .await
            .unwrap_or_else(|e| panic!("{kind} pem={pem}: {e}\n{}", s.log_text()));
        let o = c
            .exec_capture("echo hi", &CancellationToken::new())
            .await
            .expect("exec");
        assert_eq!(o.stdout, "hi\n", "{kind}");
        if !pass.is_empty() {
            // without the passphrase: a clear, fatal error
            let e = SshCommunicator::connect(cfg(
                &s,
                vec![SshAuth::PrivateKeyFile {
                    path,
                    passphrase: None,
                }],
            ))
            .await
            .expect_err("needs passphrase");
            assert!(e.is_fatal(), "{e}");
            assert!(e.to_string().contains("encrypted"), "{e}");
        }
    }
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn wrong_password_is_a_clear_error() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let e = SshCommunicator::connect(cfg(&s, vec![SshAuth::Password("wrong-password".into())]))
        .await
        .expect_err("must fail");
    assert!(matches!(e, ConnectError::AuthFailed { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("failed to authenticate") && msg.contains(TEST_USER),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "secret in message: {msg}");
    // wait_for_ssh gives up after ssh_handshake_attempts
    let mut c = cfg(&s, vec![SshAuth::Password("wrong-password".into())]);
    c.handshake_attempts = Some(2);
    let events = Mutex::new(Vec::new());
    let r = wait_for_ssh(
        c,
        Some(Duration::from_secs(60)),
        &CancellationToken::new(),
        &|e| events.lock().expect("lock").push(e.clone()),
    )
    .await;
    assert!(
        matches!(r, Err(WaitError::TooManyAuthFailures { attempts: 2, .. })),
        "{r:?}"
    );
    let ev = events.into_inner().expect("events");
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, WaitEvent::AuthFailed { .. }))
            .count(),
        2
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn upload_download_files_and_dirs() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let c = SshCommunicator::connect(cfg(&s, pw()))
        .await
        .expect("connect");
    let work = tempfile::tempdir().expect("tmp");
    // a 3 MiB file with varied bytes
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let local = work.path().join("big.bin");
    std::fs::write(&local, &data).expect("write");
    c.upload_file(&local, "big.bin", Some(0o640))
        .await
        .expect("upload");
    let remote = s.home().join("big.bin");
    assert_eq!(std::fs::read(&remote).expect("read remote"), data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&remote)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    c.upload_bytes(
        b"#!/bin/sh\necho script-ran\n",
        "/tmp/kiln-e2e-script.sh",
        Some(0o755),
    )
    .await
    .expect("upload bytes");
    let o = c
        .exec_capture(
            "/tmp/kiln-e2e-script.sh; rm -f /tmp/kiln-e2e-script.sh",
            &CancellationToken::new(),
        )
        .await
        .expect("run");
    assert_eq!(o.stdout, "script-ran\n");
    let back = work.path().join("back.bin");
    c.download("big.bin", &back).await.expect("download");
    assert_eq!(std::fs::read(&back).expect("read"), data);
    // directories
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).expect("mkdir");
    std::fs::write(tree.join("a.txt"), "A").expect("w");
    std::fs::write(tree.join("sub/b.txt"), "B").expect("w");
    std::fs::write(tree.join("sub/deeper/c.sh"), "#!/bin/sh\n").expect("w");
    std::fs::set_permissions(
        tree.join("sub/deeper/c.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    c.upload_dir(&tree, "up/tree").await.expect("upload dir");
    let rt = s.home().join("up/tree");
    assert_eq!(std::fs::read_to_string(rt.join("a.txt")).expect("a"), "A");
    assert_eq!(
        std::fs::read_to_string(rt.join("sub/b.txt")).expect("b"),
        "B"
    );
    assert_eq!(
        std::fs::metadata(rt.join("sub/deeper/c.sh"))
            .expect("c")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(c.is_dir("up/tree").await.expect("is_dir"));
    assert!(!c.is_dir("up/tree/a.txt").await.expect("is_dir"));
    assert!(!c.is_dir("nope").await.expect("is_dir"));
    let down = work.path().join("down");
    c.download_dir("up/tree", &down)
        .await
        .expect("download dir");
    assert_eq!(
        std::fs::read_to_string(down.join("sub/b.txt")).expect("b"),
        "B"
    );
    assert_eq!(
        std::fs::read_to_string(down.join("sub/deeper/c.sh")).expect("c"),
        "#!/bin/sh\n"
    );
    assert_eq!(
        std::fs::metadata(down.join("sub/deeper/c.sh"))
            .expect("c")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // errors name the path
    let e = c
        .download("does/not/exist", &work.path().join("x"))
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("does/not/exist"), "{e}");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn wait_for_ssh_port_opens_later_and_reconnect() {
    kiln_testguest::require_e2e();
    let mut s = TestSshd::prepare().expect("prepare");
    let port = s.port();
    let events = Arc::new(Mutex::new(Vec::<WaitEvent>::new()));
    let ev2 = events.clone();
    let mut c = SshConfig::new("127.0.0.1", TEST_USER, pw());
    c.port = port;
    c.reconnect_timeout = Duration::from_secs(20);
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let r = wait_for_ssh(
            c,
            Some(Duration::from_secs(60)),
            &CancellationToken::new(),
            &move |e| ev2.lock().expect("lock").push(e.clone()),
        )
        .await;
        (r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.launch().expect("launch sshd");
    let (r, took) = waiter.await.expect("join");
    let comm = r.expect("connected");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let ev = events.lock().expect("lock").clone();
    assert!(
        ev.iter().any(|e| matches!(e, WaitEvent::PortClosed { .. })),
        "{ev:?}"
    );
    assert!(
        matches!(ev.last(), Some(WaitEvent::Connected { .. })),
        "{ev:?}"
    );
    // sshd restarted (as cloud-init does): the next command reconnects by itself
    s.launch().expect("restart sshd");
    let o = comm
        .exec_capture("echo again", &CancellationToken::new())
        .await
        .expect("exec after restart");
    assert_eq!(o.stdout, "again\n");
    // sshd down for 2 s, then back: still fine within reconnect_timeout
    s.stop();
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(2));
        s.launch().map(|_| s)
    });
    let o = comm
        .exec_capture("echo third", &CancellationToken::new())
        .await
        .expect("exec while sshd restarts");
    assert_eq!(o.stdout, "third\n");
    let _s = restart.await.expect("join").expect("relaunch");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn wait_for_ssh_times_out_and_cancels() {
    kiln_testguest::require_e2e();
    let s = TestSshd::prepare().expect("prepare"); // never launched: port closed
    let mut c = SshConfig::new("127.0.0.1", TEST_USER, pw());
    c.port = s.port();
    let r = wait_for_ssh(
        c.clone(),
        Some(Duration::from_secs(3)),
        &CancellationToken::new(),
        &|_| {},
    )
    .await;
    match r {
        Err(WaitError::Timeout { last, .. }) => assert!(last.contains("cannot connect"), "{last}"),
        other => panic!("{other:?}"),
    }
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.cancel();
    });
    let start = Instant::now();
    let r = wait_for_ssh(c, None, &cancel, &|_| {}).await;
    assert!(matches!(r, Err(WaitError::Cancelled)), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn host_key_pinning() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let first = SshCommunicator::connect(cfg(&s, pw()))
        .await
        .expect("connect");
    let fp = first.host_key_fingerprint().expect("fingerprint");
    let mut pinned = cfg(&s, pw());
    pinned.host_key = kiln_guest::HostKeyPolicy::Pinned(vec![fp.clone()]);
    SshCommunicator::connect(pinned.clone())
        .await
        .expect("pinned key accepted");
    // the OpenSSH public key line works too
    let line = std::fs::read_to_string(s.scratch().join("host_ed25519.pub")).expect("host pub");
    pinned.host_key = kiln_guest::HostKeyPolicy::Pinned(vec![line.trim().to_string()]);
    SshCommunicator::connect(pinned.clone())
        .await
        .expect("pinned line accepted");
    pinned.host_key = kiln_guest::HostKeyPolicy::Pinned(vec![
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    ]);
    let e = SshCommunicator::connect(pinned)
        .await
        .expect_err("wrong pin");
    assert!(matches!(e, ConnectError::HostKeyRejected { .. }), "{e:?}");
    assert!(e.is_fatal());
    assert!(e.to_string().contains(&fp), "{e}");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn bastion_tunnel() {
    kiln_testguest::require_e2e();
    // the bastion is the same sshd; the target is reached through a direct-tcpip channel
    let s = sshd();
    let mut c = SshConfig::new("127.0.0.1", TEST_USER, pw());
    c.port = s.port();
    c.bastion = Some(Box::new(kiln_guest::BastionConfig {
        host: "127.0.0.1".into(),
        port: s.port(),
        username: TEST_USER.into(),
        auth: pw(),
    }));
    let comm = SshCommunicator::connect(c.clone())
        .await
        .expect("via bastion");
    let o = comm
        .exec_capture("echo tunnelled", &CancellationToken::new())
        .await
        .expect("exec");
    assert_eq!(o.stdout, "tunnelled\n");
    assert!(
        s.log_text().contains("direct-tcpip") || s.log_text().contains("Accepted"),
        "{}",
        s.log_text()
    );
    // a bastion with bad credentials names the bastion
    if let Some(b) = c.bastion.as_mut() {
        b.auth = vec![SshAuth::Password("nope".into())];
    }
    let e = SshCommunicator::connect(c).await.expect_err("bad bastion");
    assert!(matches!(e, ConnectError::Bastion { .. }), "{e:?}");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn agent_auth() {
    kiln_testguest::require_e2e();
    let s = sshd();
    let key = s.make_key("ed25519", false, "").expect("key");
    let sock = s.scratch().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let added = std::process::Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("ssh-add");
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // AgentClient::connect_env reads SSH_AUTH_SOCK; this test binary sets it only for itself
    #[allow(unsafe_code)]
    // SAFETY: no other test in this binary reads or writes SSH_AUTH_SOCK.
    unsafe {
        std::env::set_var("SSH_AUTH_SOCK", &sock);
    }
    let r = SshCommunicator::connect(cfg(&s, vec![SshAuth::Agent])).await;
    // an agent without the right key does not stop the password from being tried
    let other = cfg(
        &s,
        vec![SshAuth::Agent, SshAuth::Password(TEST_PASSWORD.into())],
    );
    let _ = std::process::Command::new("ssh-add")
        .arg("-D")
        .env("SSH_AUTH_SOCK", &sock)
        .output();
    let fallback = SshCommunicator::connect(other).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let c = r.expect("agent auth");
    fallback.expect("password after an empty agent");
    let o = c
        .exec_capture("echo via-agent", &CancellationToken::new())
        .await
        .expect("exec");
    assert_eq!(o.stdout, "via-agent\n");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn without_sftp_uploads_fall_back_to_the_shell() {
    kiln_testguest::require_e2e();
    let s = TestSshd::start_without_sftp().unwrap_or_else(|e| panic!("sshd: {e}"));
    let c = SshCommunicator::connect(cfg(&s, pw()))
        .await
        .expect("connect");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    c.upload_bytes(&data, "plain.bin", Some(0o700))
        .await
        .expect("upload via cat");
    let remote = s.home().join("plain.bin");
    assert_eq!(std::fs::read(&remote).expect("read"), data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&remote)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(c.is_dir(".ssh").await.expect("is_dir via test -d"));
    assert!(!c.is_dir("plain.bin").await.expect("is_dir via test -d"));
    let back = s.scratch().join("back.bin");
    c.download("plain.bin", &back)
        .await
        .expect("download via cat");
    assert_eq!(std::fs::read(&back).expect("read"), data);
    let e = c
        .download("missing.bin", &s.scratch().join("x"))
        .await
        .expect_err("missing");
    assert!(e.to_string().contains("missing.bin"), "{e}");
    let e = c
        .download_dir(".ssh", &s.scratch().join("d"))
        .await
        .expect_err("no sftp");
    assert!(e.to_string().contains("openssh-sftp-server"), "{e}");
}
