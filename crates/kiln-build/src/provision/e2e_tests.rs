//! End-to-end tests of the provisioners against a real OpenSSH sshd (KILN_E2E=1; root,
//! openssh-server, ansible).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use kiln_config::model::{Ansible, FileProvisioner, Provisioner, ProvisionerKind, Shell};
use kiln_guest::testsupport::{TestSshd, TEST_PASSWORD, TEST_USER};
use kiln_guest::{Communicator, SshAuth, SshCommunicator, SshConfig, TempKeyPair};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ui::{Masker, Ui, UiOptions};

struct Rig {
    sshd: TestSshd,
    cfg: SshConfig,
    comm: SshCommunicator,
    ui: crate::ui::BuildUi,
    out: Arc<Mutex<Vec<u8>>>,
    vars: BTreeMap<String, String>,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
}

impl Rig {
    async fn new(auth: Vec<SshAuth>) -> Rig {
        let sshd = TestSshd::start().unwrap_or_else(|e| panic!("cannot start the test sshd: {e}"));
        Self::with(sshd, auth).await
    }
    async fn with(sshd: TestSshd, auth: Vec<SshAuth>) -> Rig {
        let mut cfg = SshConfig::new("127.0.0.1", TEST_USER, auth);
        cfg.port = sshd.port();
        let comm = SshCommunicator::connect(cfg.clone())
            .await
            .expect("connect");
        let masker = Arc::new(Masker::new());
        masker.add(TEST_PASSWORD);
        let (ui, out) = Ui::capture(UiOptions::default(), masker);
        let mut vars = BTreeMap::new();
        vars.insert("HTTPIP".to_string(), "127.0.0.1".to_string());
        vars.insert("HTTPPort".to_string(), "8888".to_string());
        Rig {
            sshd,
            cfg,
            comm,
            ui: ui.for_build("proxmox-iso.e2e"),
            out,
            vars,
            cancel: CancellationToken::new(),
            dir: tempfile::tempdir().expect("tmp"),
        }
    }
    fn ctx(&self) -> ProvisionContext<'_> {
        ProvisionContext {
            comm: Some(&self.comm),
            ssh: Some(&self.cfg),
            build_name: "e2e",
            builder_type: "proxmox-iso",
            template_dir: self.dir.path(),
            ui: &self.ui,
            cancel: &self.cancel,
            vars: &self.vars,
            interactive: false,
        }
    }
    fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }
}

fn p(kind: ProvisionerKind) -> Provisioner {
    Provisioner {
        name: None,
        pause_before: Duration::ZERO,
        max_retries: 0,
        timeout: Some(Duration::from_secs(120)),
        kind,
        location: None,
    }
}

fn shell() -> Shell {
    Shell {
        inline: vec![],
        inline_shebang: "/bin/sh -e".into(),
        script: None,
        scripts: vec![],
        environment_vars: vec![],
        env: IndexMap::new(),
        env_var_format: None,
        use_env_var_file: false,
        execute_command: "chmod +x {{.Path}}; {{.Vars}} {{.Path}}".into(),
        expect_disconnect: false,
        valid_exit_codes: vec![0],
        remote_folder: "/tmp".into(),
        remote_file: None,
        remote_path: None,
        skip_clean: false,
        start_retry_timeout: Duration::from_secs(30),
        pause_after: Duration::ZERO,
        binary: false,
    }
}

fn pw() -> Vec<SshAuth> {
    vec![SshAuth::Password(TEST_PASSWORD.into())]
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn shell_provisioner_on_real_sshd() {
    kiln_testguest::require_e2e();
    let rig = Rig::new(pw()).await;
    std::fs::write(
        rig.dir.path().join("two.sh"),
        "#!/bin/sh\necho \"script two as $(id -un)\"\necho warn >&2\n",
    )
    .expect("w");
    let mut s = shell();
    s.inline = vec![
        "echo \"inline $GREETING $PACKER_BUILD_NAME $PACKER_HTTP_ADDR\"".into(),
        "echo \"$0\" > ~/inline-path".into(),
    ];
    s.scripts = vec!["two.sh".into()];
    s.environment_vars = vec!["GREETING=hello world".into()];
    run(&p(ProvisionerKind::Shell(s)), &rig.ctx())
        .await
        .expect("shell");
    let out = rig.output();
    assert!(
        out.contains("    proxmox-iso.e2e: inline hello world e2e 127.0.0.1:8888\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("    proxmox-iso.e2e: script two as {TEST_USER}\n")),
        "{out}"
    );
    assert!(out.contains("    proxmox-iso.e2e: warn\n"), "{out}");
    // the uploaded script was removed afterwards
    let used = std::fs::read_to_string(rig.sshd.home().join("inline-path")).expect("inline-path");
    assert!(used.trim().starts_with("/tmp/script_"), "{used}");
    assert!(
        !std::path::Path::new(used.trim()).exists(),
        "script not cleaned: {used}"
    );

    // a failing script: clear error with the code
    let mut bad = shell();
    bad.inline = vec![
        "echo before-failure".into(),
        "false".into(),
        "echo not-reached".into(),
    ];
    let e = run(&p(ProvisionerKind::Shell(bad)), &rig.ctx())
        .await
        .expect_err("fails");
    assert!(e.to_string().contains("exit code 1"), "{e}");
    assert!(!rig.output().contains("not-reached"));
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn shell_expect_disconnect_on_real_sshd() {
    kiln_testguest::require_e2e();
    let rig = Rig::new(pw()).await;
    // kill our own session's sshd: the connection drops without an exit status
    let mut s = shell();
    s.inline = vec![
        "echo going-down".into(),
        // walk up to this session's sshd process and kill it
        "p=$PPID; while [ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done; kill -9 $p"
            .into(),
        "sleep 5".into(),
    ];
    s.execute_command = "{{.Vars}} sh {{.Path}}".into();
    let e = run(&p(ProvisionerKind::Shell(s.clone())), &rig.ctx())
        .await
        .expect_err(&rig.output());
    assert!(
        matches!(e, ProvisionError::UnexpectedDisconnect),
        "{e}\n{}",
        rig.output()
    );
    s.expect_disconnect = true;
    s.remote_path = Some("/tmp/kiln-e2e-disc.sh".into());
    run(&p(ProvisionerKind::Shell(s)), &rig.ctx())
        .await
        .expect("expected disconnect");
    // reconnected and cleaned up
    assert!(!std::path::Path::new("/tmp/kiln-e2e-disc.sh").exists());
    let o = rig
        .comm
        .exec_capture("echo alive", &CancellationToken::new())
        .await
        .expect("exec");
    assert_eq!(o.stdout, "alive\n");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn file_provisioner_on_real_sshd() {
    kiln_testguest::require_e2e();
    let rig = Rig::new(pw()).await;
    let d = rig.dir.path();
    std::fs::create_dir_all(d.join("conf/sub")).expect("mkdir");
    std::fs::write(d.join("conf/a.conf"), "a=1\n").expect("w");
    std::fs::write(d.join("conf/sub/b.conf"), "b=2\n").expect("w");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("blob.bin"), &big).expect("w");
    let home = rig.sshd.home();
    let h = home.display().to_string();
    let up = |src: &str, dst: String| FileProvisioner {
        source: Some(src.into()),
        sources: vec![],
        content: None,
        destination: dst,
        direction: "upload".into(),
        generated: false,
    };
    let ctx = rig.ctx();
    run(
        &p(ProvisionerKind::File(up(
            "blob.bin",
            format!("{h}/blob.bin"),
        ))),
        &ctx,
    )
    .await
    .expect("file");
    run(
        &p(ProvisionerKind::File(up("conf", format!("{h}/etc/")))),
        &ctx,
    )
    .await
    .expect("dir itself");
    run(
        &p(ProvisionerKind::File(up("conf/", format!("{h}/flat")))),
        &ctx,
    )
    .await
    .expect("dir contents");
    assert_eq!(std::fs::read(home.join("blob.bin")).expect("blob"), big);
    assert_eq!(
        std::fs::read_to_string(home.join("etc/conf/sub/b.conf")).expect("b"),
        "b=2\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("flat/a.conf")).expect("a"),
        "a=1\n"
    );
    // download a file into a directory and a directory's contents
    let mut down = up(&format!("{h}/blob.bin"), "fetched/".into());
    down.direction = "download".into();
    run(&p(ProvisionerKind::File(down)), &ctx)
        .await
        .expect("download file");
    assert_eq!(
        std::fs::read(d.join("fetched/blob.bin")).expect("fetched"),
        big
    );
    let mut down = up(&format!("{h}/etc/conf/"), "fetched-dir".into());
    down.direction = "download".into();
    run(&p(ProvisionerKind::File(down)), &ctx)
        .await
        .expect("download dir");
    assert_eq!(
        std::fs::read_to_string(d.join("fetched-dir/sub/b.conf")).expect("b"),
        "b=2\n"
    );
}

fn playbook(dir: &std::path::Path) -> std::path::PathBuf {
    let pb = dir.join("site.yml");
    std::fs::write(
        &pb,
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: write a marker\n      ansible.builtin.copy:\n        \
         dest: \"{{ ansible_env.HOME | default('~') }}/ansible-was-here\"\n        content: \"build={{ packer_build_name }} type={{ packer_builder_type }} user={{ ansible_user }}\\n\"\n",
    )
    .expect("playbook");
    pb
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn ansible_with_password_installs_and_removes_a_temp_key() {
    kiln_testguest::require_e2e();
    let rig = Rig::new(pw()).await;
    playbook(rig.dir.path());
    let a = Ansible {
        playbook_file: "site.yml".into(),
        groups: vec!["builders".into()],
        extra_arguments: vec!["-e".into(), "ansible_env={'HOME': '~'}".into()],
        ..Default::default()
    };
    run(&p(ProvisionerKind::Ansible(a)), &rig.ctx())
        .await
        .unwrap_or_else(|e| panic!("ansible: {e}\n{}", rig.output()));
    let marker = std::fs::read_to_string(rig.sshd.home().join("ansible-was-here")).expect("marker");
    assert_eq!(
        marker,
        format!("build=e2e type=proxmox-iso user={TEST_USER}\n")
    );
    // checked over SSH too
    let o = rig
        .comm
        .exec_capture("cat ~/ansible-was-here", &CancellationToken::new())
        .await
        .expect("exec");
    assert_eq!(o.stdout, marker);
    let keys = std::fs::read_to_string(rig.sshd.home().join(".ssh/authorized_keys")).expect("keys");
    assert!(
        !keys.contains("kiln-ansible-"),
        "temporary key left behind: {keys}"
    );
    let out = rig.output();
    assert!(out.contains("Installed a temporary SSH key"), "{out}");
    assert!(out.contains("ok=1") || out.contains("changed=1"), "{out}");
    assert!(!out.contains(TEST_PASSWORD), "password leaked: {out}");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[tokio::test]
async fn ansible_with_temp_key_and_failure() {
    kiln_testguest::require_e2e();
    let sshd = TestSshd::start().unwrap_or_else(|e| panic!("cannot start the test sshd: {e}"));
    let k = Arc::new(TempKeyPair::generate_ed25519("kiln-build-key").expect("key"));
    sshd.authorize_key(k.public_key_openssh())
        .expect("authorize");
    let rig = Rig::with(sshd, vec![SshAuth::TempKey(k)]).await;
    playbook(rig.dir.path());
    std::fs::create_dir_all(rig.dir.path().join("inv")).expect("mkdir");
    let a = Ansible {
        playbook_file: "site.yml".into(),
        use_proxy: Some(false),
        inventory_directory: Some("inv".into()),
        extra_arguments: vec!["-e".into(), "ansible_env={'HOME': '~'}".into()],
        ..Default::default()
    };
    run(&p(ProvisionerKind::Ansible(a)), &rig.ctx())
        .await
        .unwrap_or_else(|e| panic!("ansible: {e}\n{}", rig.output()));
    assert!(rig.sshd.home().join("ansible-was-here").exists());
    assert!(!rig.output().contains("Installed a temporary SSH key"));
    let left: Vec<_> = std::fs::read_dir(rig.dir.path().join("inv"))
        .expect("inv")
        .collect();
    assert!(left.is_empty(), "inventory left behind: {left:?}");
    assert!(rig.output().contains("-i "), "{}", rig.output());
    // a failing playbook is an error naming the exit status
    std::fs::write(
        rig.dir.path().join("fail.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.fail:\n        msg: boom\n",
    )
    .expect("w");
    let a = Ansible {
        playbook_file: "fail.yml".into(),
        use_proxy: Some(false),
        ..Default::default()
    };
    let e = run(&p(ProvisionerKind::Ansible(a)), &rig.ctx())
        .await
        .expect_err("fails");
    assert!(
        e.to_string()
            .contains("ansible-playbook failed with exit code 2"),
        "{e}"
    );
    assert!(rig.output().contains("boom"));
}
