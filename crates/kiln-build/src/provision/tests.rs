//! Unit tests of the provisioners with a fake communicator (no guest needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use indexmap::IndexMap;
use kiln_config::model::{
    Ansible, FileProvisioner, Provisioner, ProvisionerKind, Shell, ShellLocal,
};
use kiln_guest::{CommError, Communicator, ExitStatus, LineSink, SshAuth, SshConfig};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::ui::{Masker, Ui, UiOptions};

type Uploads = BTreeMap<String, (Vec<u8>, Option<u32>)>;

/// Records what the provisioners ask for and answers from a script of exit statuses.
#[derive(Default)]
struct FakeComm {
    log: Mutex<Vec<String>>,
    uploads: Mutex<Uploads>,
    /// Statuses for successive `exec` calls (default: exit 0).
    statuses: Mutex<Vec<Result<ExitStatus, String>>>,
    dirs: Vec<String>,
}

#[async_trait]
impl Communicator for FakeComm {
    async fn exec(
        &self,
        cmd: &str,
        stdout: LineSink<'_>,
        _stderr: LineSink<'_>,
        _cancel: &CancellationToken,
    ) -> Result<ExitStatus, CommError> {
        self.log.lock().expect("lock").push(format!("exec {cmd}"));
        stdout(&format!("ran: {cmd}"));
        let mut st = self.statuses.lock().expect("lock");
        if st.is_empty() {
            return Ok(ExitStatus::Code(0));
        }
        st.remove(0).map_err(CommError::Disconnected)
    }
    async fn upload(
        &self,
        src: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        remote: &str,
        mode: Option<u32>,
    ) -> Result<(), CommError> {
        let mut v = Vec::new();
        src.read_to_end(&mut v)
            .await
            .map_err(|e| CommError::Channel(e.to_string()))?;
        self.log
            .lock()
            .expect("lock")
            .push(format!("upload {remote}"));
        self.uploads
            .lock()
            .expect("lock")
            .insert(remote.to_string(), (v, mode));
        Ok(())
    }
    async fn upload_dir(&self, local: &Path, remote: &str) -> Result<(), CommError> {
        self.log.lock().expect("lock").push(format!(
            "upload_dir {} {remote}",
            local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        Ok(())
    }
    async fn download(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        self.log
            .lock()
            .expect("lock")
            .push(format!("download {remote} {}", local.display()));
        Ok(())
    }
    async fn download_dir(&self, remote: &str, local: &Path) -> Result<(), CommError> {
        self.log
            .lock()
            .expect("lock")
            .push(format!("download_dir {remote} {}", local.display()));
        Ok(())
    }
    async fn is_dir(&self, remote: &str) -> Result<bool, CommError> {
        Ok(self.dirs.iter().any(|d| d == remote))
    }
    async fn reconnect(&self, _t: Duration, _c: &CancellationToken) -> Result<(), CommError> {
        self.log.lock().expect("lock").push("reconnect".to_string());
        Ok(())
    }
}

struct Env {
    ui: crate::ui::BuildUi,
    out: Arc<Mutex<Vec<u8>>>,
    vars: BTreeMap<String, String>,
    cancel: CancellationToken,
    dir: tempfile::TempDir,
    ssh: SshConfig,
}

impl Env {
    fn new() -> Env {
        let masker = Arc::new(Masker::new());
        masker.add("sup3r-secret");
        let (ui, out) = Ui::capture(UiOptions::default(), masker);
        let mut vars = BTreeMap::new();
        vars.insert("HTTPIP".to_string(), "10.0.2.2".to_string());
        vars.insert("HTTPPort".to_string(), "8888".to_string());
        let mut ssh = SshConfig::new(
            "10.1.2.3",
            "packer",
            vec![SshAuth::Password("sup3r-secret".into())],
        );
        ssh.port = 2222;
        Env {
            ui: ui.for_build("proxmox-iso.test"),
            out,
            vars,
            cancel: CancellationToken::new(),
            dir: tempfile::tempdir().expect("tmp"),
            ssh,
        }
    }
    fn ctx<'a>(&'a self, comm: Option<&'a dyn Communicator>) -> ProvisionContext<'a> {
        ProvisionContext {
            comm,
            ssh: Some(&self.ssh),
            build_name: "test",
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
        start_retry_timeout: Duration::from_secs(300),
        pause_after: Duration::ZERO,
        binary: false,
    }
}

fn prov(kind: ProvisionerKind) -> Provisioner {
    Provisioner {
        name: None,
        pause_before: Duration::ZERO,
        max_retries: 0,
        timeout: None,
        kind,
        location: None,
    }
}

#[test]
fn shell_plan_default_command() {
    let env = Env::new();
    let mut s = shell();
    s.inline = vec!["echo hi".into(), "cloud-init status --wait".into()];
    s.environment_vars = vec!["FOO=bar baz".into(), "Q=it's".into()];
    s.env.insert("ZED".into(), "1".into());
    s.remote_file = Some("script_1.sh".into());
    let plan = ShellPlan::new(&s, &env.ctx(None)).expect("plan");
    assert_eq!(plan.remote_path, "/tmp/script_1.sh");
    assert_eq!(
        plan.scripts,
        vec![shell::ScriptSource::Inline(
            "#!/bin/sh -e\necho hi\ncloud-init status --wait\n".into()
        )]
    );
    assert_eq!(
        plan.command,
        "chmod +x /tmp/script_1.sh; FOO='bar baz' PACKER_BUILDER_TYPE='proxmox-iso' PACKER_BUILD_NAME='test' \
         PACKER_HTTP_ADDR='10.0.2.2:8888' PACKER_HTTP_IP='10.0.2.2' PACKER_HTTP_PORT='8888' Q='it'\"'\"'s' ZED='1'  /tmp/script_1.sh"
    );
}

#[test]
fn shell_plan_sudo_command_env_file_and_errors() {
    let env = Env::new();
    let mut s = shell();
    s.inline = vec!["true".into()];
    s.execute_command = "echo 'packer' | sudo -S -E sh -eux '{{ .Path }}'".into();
    s.remote_path = Some("/home/x/run.sh".into());
    let plan = ShellPlan::new(&s, &env.ctx(None)).expect("plan");
    assert_eq!(
        plan.command,
        "echo 'packer' | sudo -S -E sh -eux '/home/x/run.sh'"
    );

    s.use_env_var_file = true;
    s.execute_command = "chmod +x {{.Path}}; . {{.EnvVarFile}} && {{.Path}}".into();
    s.environment_vars = vec!["A=1".into()];
    let plan = ShellPlan::new(&s, &env.ctx(None)).expect("plan");
    let (path, content) = plan.env_var_file.clone().expect("env file");
    assert!(
        path.starts_with("/tmp/varfile_") && path.ends_with(".sh"),
        "{path}"
    );
    assert!(
        content.starts_with("export A='1'\nexport PACKER_BUILDER_TYPE='proxmox-iso'\n"),
        "{content}"
    );
    assert_eq!(
        plan.command,
        format!("chmod +x /home/x/run.sh; . {path} && /home/x/run.sh")
    );

    s.environment_vars = vec!["NOEQUALS".into()];
    assert!(matches!(
        ShellPlan::new(&s, &env.ctx(None)),
        Err(ProvisionError::Config(_))
    ));
    let mut s = shell();
    s.script = Some("missing.sh".into());
    let e = ShellPlan::new(&s, &env.ctx(None)).expect_err("missing script");
    assert!(e.to_string().contains("missing.sh"), "{e}");
    let mut s = shell();
    s.inline = vec!["x".into()];
    s.execute_command = "{{ .Nope }}".into();
    let e = ShellPlan::new(&s, &env.ctx(None)).expect_err("bad template");
    assert!(
        e.to_string().contains("Nope") && e.to_string().contains("Path, Vars"),
        "{e}"
    );
}

#[tokio::test]
async fn shell_runs_uploads_and_cleans() {
    let env = Env::new();
    std::fs::write(env.dir.path().join("a.sh"), "echo a\r\necho b\r\n").expect("w");
    let comm = FakeComm::default();
    let mut s = shell();
    s.inline = vec!["echo inline".into()];
    s.scripts = vec!["a.sh".into()];
    s.remote_path = Some("/tmp/s.sh".into());
    run(&prov(ProvisionerKind::Shell(s)), &env.ctx(Some(&comm)))
        .await
        .expect("run");
    let log = comm.log.lock().expect("lock").clone();
    assert_eq!(log.len(), 5, "{log:?}");
    assert_eq!(log[0], "upload /tmp/s.sh");
    assert!(log[1].starts_with("exec chmod +x /tmp/s.sh; "), "{log:?}");
    assert_eq!(log[4], "exec rm -f /tmp/s.sh");
    let up = comm.uploads.lock().expect("lock");
    let (data, mode) = up.get("/tmp/s.sh").expect("uploaded");
    assert_eq!(
        data, b"echo a\necho b\n",
        "CRLF normalised, last script wins the path"
    );
    assert_eq!(*mode, Some(0o755));
    let out = env.output();
    assert!(
        out.contains(
            "==> proxmox-iso.test: Provisioning with shell script: inline commands (1 lines)"
        ),
        "{out}"
    );
    assert!(out.contains("    proxmox-iso.test: ran: chmod +x"), "{out}");
}

#[tokio::test]
async fn shell_exit_codes_and_disconnects() {
    let env = Env::new();
    // a bad exit code fails with a clear message
    let comm = FakeComm::default();
    comm.statuses
        .lock()
        .expect("lock")
        .push(Ok(ExitStatus::Code(3)));
    let mut s = shell();
    s.inline = vec!["exit 3".into()];
    let e = run(
        &prov(ProvisionerKind::Shell(s.clone())),
        &env.ctx(Some(&comm)),
    )
    .await
    .expect_err("exit 3");
    assert!(
        e.to_string().contains("exit code 3") && e.to_string().contains("valid_exit_codes"),
        "{e}"
    );
    // accepted by valid_exit_codes
    let comm = FakeComm::default();
    comm.statuses
        .lock()
        .expect("lock")
        .push(Ok(ExitStatus::Code(3)));
    s.valid_exit_codes = vec![0, 3];
    run(
        &prov(ProvisionerKind::Shell(s.clone())),
        &env.ctx(Some(&comm)),
    )
    .await
    .expect("3 is valid");
    // a disconnect fails unless expected
    let comm = FakeComm::default();
    comm.statuses
        .lock()
        .expect("lock")
        .push(Ok(ExitStatus::Disconnected));
    let e = run(
        &prov(ProvisionerKind::Shell(s.clone())),
        &env.ctx(Some(&comm)),
    )
    .await
    .expect_err("disconnect");
    assert!(matches!(e, ProvisionError::UnexpectedDisconnect), "{e}");
    let comm = FakeComm::default();
    comm.statuses
        .lock()
        .expect("lock")
        .push(Ok(ExitStatus::Disconnected));
    s.expect_disconnect = true;
    run(
        &prov(ProvisionerKind::Shell(s.clone())),
        &env.ctx(Some(&comm)),
    )
    .await
    .expect("expected");
    assert!(comm
        .log
        .lock()
        .expect("lock")
        .contains(&"reconnect".to_string()));
    // a signal is a failure
    let comm = FakeComm::default();
    comm.statuses
        .lock()
        .expect("lock")
        .push(Ok(ExitStatus::Signal {
            name: "KILL".into(),
            core_dumped: false,
        }));
    let e = run(&prov(ProvisionerKind::Shell(s)), &env.ctx(Some(&comm)))
        .await
        .expect_err("signal");
    assert!(e.to_string().contains("signal KILL"), "{e}");
}

#[tokio::test]
async fn max_retries_and_start_retry() {
    let env = Env::new();
    let comm = FakeComm::default();
    // first exec fails to start (connection error) → retried inside the shell provisioner,
    // then a bad exit → retried by max_retries, then success
    comm.statuses
        .lock()
        .expect("lock")
        .extend([Err("gone".to_string()), Ok(ExitStatus::Code(1))]);
    let mut s = shell();
    s.inline = vec!["x".into()];
    let mut p = prov(ProvisionerKind::Shell(s));
    p.max_retries = 1;
    run(&p, &env.ctx(Some(&comm)))
        .await
        .expect("succeeds on retry");
    let out = env.output();
    assert!(out.contains("failed (attempt 1/2)"), "{out}");
}

#[tokio::test]
async fn timeout_and_no_communicator() {
    let env = Env::new();
    let mut s = shell();
    s.inline = vec!["x".into()];
    let e = run(&prov(ProvisionerKind::Shell(s)), &env.ctx(None))
        .await
        .expect_err("no comm");
    assert!(e.to_string().contains("communicator"), "{e}");
    let sl = ShellLocal {
        inline: vec!["sleep 5".into()],
        ..Default::default()
    };
    let mut p = prov(ProvisionerKind::ShellLocal(sl));
    p.timeout = Some(Duration::from_millis(300));
    let e = run(&p, &env.ctx(None)).await.expect_err("timeout");
    assert!(matches!(e, ProvisionError::Timeout(_)), "{e}");
}

#[tokio::test]
async fn file_upload_download_rules() {
    let env = Env::new();
    std::fs::create_dir_all(env.dir.path().join("files")).expect("mkdir");
    std::fs::write(env.dir.path().join("files/a.txt"), "A").expect("w");
    let comm = FakeComm {
        dirs: vec!["/etc/app".into()],
        ..Default::default()
    };
    let up = |source: &str, dst: &str| FileProvisioner {
        source: Some(source.into()),
        sources: vec![],
        content: None,
        destination: dst.into(),
        direction: "upload".into(),
        generated: false,
    };
    let ctx = env.ctx(Some(&comm));
    file::run(&up("files/a.txt", "/etc/app"), &ctx)
        .await
        .expect("into existing dir");
    file::run(&up("files/a.txt", "/tmp/b.txt"), &ctx)
        .await
        .expect("to file");
    file::run(&up("files", "/opt/"), &ctx)
        .await
        .expect("dir itself");
    file::run(&up("files/", "/opt/x"), &ctx)
        .await
        .expect("dir contents");
    let mut c = up("x", "/etc/motd");
    c.source = None;
    c.content = Some("hello".into());
    file::run(&c, &ctx).await.expect("content");
    let mut d = up("/var/log/syslog", "out/");
    d.direction = "download".into();
    file::run(&d, &ctx).await.expect("download");
    let e = file::run(&up("nope.txt", "/tmp/"), &ctx)
        .await
        .expect_err("missing source");
    assert!(e.to_string().contains("nope.txt"), "{e}");
    let mut multi = up("files/a.txt", "/tmp/one");
    multi.sources = vec!["files/a.txt".into()];
    assert!(matches!(
        file::run(&multi, &ctx).await,
        Err(ProvisionError::Config(_))
    ));
    let log = comm.log.lock().expect("lock").clone();
    let out_dir = env.dir.path().join("out");
    assert_eq!(
        log,
        vec![
            "upload /etc/app/a.txt".to_string(),
            "upload /tmp/b.txt".to_string(),
            "upload_dir files /opt/files".to_string(),
            "upload_dir files /opt/x".to_string(),
            "upload /etc/motd".to_string(),
            format!(
                "download /var/log/syslog {}",
                out_dir.join("syslog").display()
            ),
        ]
    );
    assert_eq!(
        comm.uploads
            .lock()
            .expect("lock")
            .get("/etc/motd")
            .map(|u| u.0.clone()),
        Some(b"hello".to_vec())
    );
}

fn ansible() -> Ansible {
    Ansible {
        playbook_file: "site.yml".into(),
        ..Default::default()
    }
}

#[test]
fn inventory_like_packer() {
    let inv = build_inventory(
        None,
        "default",
        "10.1.2.3",
        22,
        "packer",
        &["web".into(), "db".into()],
        &["empty".into()],
    )
    .expect("inv");
    let line = "default ansible_host=10.1.2.3 ansible_user=packer ansible_port=22\n";
    assert_eq!(inv, format!("{line}[web]\n{line}[db]\n{line}[empty]\n"));
    let inv = build_inventory(
        Some("{{ .HostAlias }} ansible_host={{ .Host }}"),
        "vm",
        "h",
        2,
        "u",
        &[],
        &[],
    )
    .expect("inv");
    assert_eq!(inv, "vm ansible_host=h\n");
    assert!(build_inventory(Some("{{ .Bogus }}"), "vm", "h", 2, "u", &[], &[]).is_err());
}

#[test]
fn ansible_command_line_has_no_secrets() {
    let env = Env::new();
    let mut a = ansible();
    a.extra_arguments = vec![
        "--extra-vars".into(),
        "foo={{ .HTTPIP }}".into(),
        "-e".into(),
        "jinja={{ item }}".into(),
    ];
    a.ansible_env_vars = vec![
        "ANSIBLE_CONFIG=/x/ansible.cfg".into(),
        "ANSIBLE_PIPELINING=False".into(),
    ];
    a.roles_path = Some("roles".into());
    a.command = Some("PYTHONUNBUFFERED=1 ansible-playbook".into());
    let ctx = env.ctx(None);
    let plan = ansible_command_line(
        &a,
        &ctx,
        Path::new("/w/inventory.ini"),
        Some(Path::new("/w/id_ed25519")),
        Some(Path::new("/w/secrets.json")),
    )
    .expect("plan");
    assert_eq!(plan.program, "ansible-playbook");
    let playbook = env.dir.path().join("site.yml").display().to_string();
    let expect: Vec<String> = [
        "-e",
        "packer_build_name=\"test\"",
        "-e",
        "packer_builder_type=proxmox-iso",
        "-e",
        "packer_http_addr=10.0.2.2:8888",
        "--ssh-extra-args",
        super::ansible::DEFAULT_SSH_EXTRA_ARGS,
        "-e",
        "ansible_ssh_private_key_file=/w/id_ed25519",
        "-e",
        "@/w/secrets.json",
        "--extra-vars",
        "foo=10.0.2.2",
        "-e",
        "jinja={{ item }}",
        "-i",
        "/w/inventory.ini",
        &playbook,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(plan.args, expect);
    assert!(!plan.args.join(" ").contains("sup3r-secret"));
    let get = |k: &str| {
        plan.env
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("ANSIBLE_HOST_KEY_CHECKING").as_deref(), Some("False"));
    assert_eq!(
        get("ANSIBLE_PIPELINING").as_deref(),
        Some("False"),
        "user env wins"
    );
    assert_eq!(get("ANSIBLE_CONFIG").as_deref(), Some("/x/ansible.cfg"));
    assert_eq!(get("PYTHONUNBUFFERED").as_deref(), Some("1"));
    assert_eq!(
        get("ANSIBLE_ROLES_PATH"),
        Some(env.dir.path().join("roles").display().to_string())
    );
    assert!(
        plan.notes.iter().any(|n| n.contains("proxy")),
        "{:?}",
        plan.notes
    );
    a.use_proxy = Some(false);
    a.ansible_ssh_extra_args = vec!["-o ForwardAgent=yes".into()];
    let plan = ansible_command_line(&a, &ctx, Path::new("/i"), None, None).expect("plan");
    assert!(plan.notes.is_empty());
    assert!(plan
        .args
        .windows(2)
        .any(|w| w[0] == "--ssh-extra-args" && w[1] == "-o ForwardAgent=yes"));
    let mut ssh = env.ssh.clone();
    ssh.bastion = Some(Box::new(kiln_guest::BastionConfig {
        host: "jump.example".into(),
        port: 2200,
        username: "ops".into(),
        auth: vec![],
    }));
    let mut ctx2 = env.ctx(None);
    ctx2.ssh = Some(&ssh);
    let plan = ansible_command_line(&a, &ctx2, Path::new("/i"), None, None).expect("plan");
    assert!(plan
        .args
        .iter()
        .any(|x| x == "-o ForwardAgent=yes -o ProxyJump=ops@jump.example:2200"));
    // with ssh_bastion_private_key_file the jump hop is told the key (ProxyJump would not use it)
    if let Some(b) = ssh.bastion.as_mut() {
        b.auth = vec![kiln_guest::SshAuth::PrivateKeyFile {
            path: "/keys/jump key".into(),
            passphrase: None,
        }];
    }
    let mut ctx3 = env.ctx(None);
    ctx3.ssh = Some(&ssh);
    let plan = ansible_command_line(&a, &ctx3, Path::new("/i"), None, None).expect("plan");
    assert!(
        plan.args.iter().any(|x| x
            == "-o ForwardAgent=yes -o ProxyCommand=\"ssh -W %h:%p -i '/keys/jump key' -p 2200 -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null ops@jump.example\""),
        "{:?}",
        plan.args
    );
    a.ansible_env_vars = vec!["bad".into()];
    assert!(ansible_command_line(&a, &ctx, Path::new("/i"), None, None).is_err());
}

#[test]
fn galaxy_invocations() {
    let env = Env::new();
    let ctx = env.ctx(None);
    let mut a = ansible();
    a.roles_path = Some("/r".into());
    a.collections_path = Some("/c".into());
    a.galaxy_force_with_deps = true;
    let f = Path::new("/g/req.yml");
    let roles_only = super::ansible::galaxy_commands(&a, &ctx, f, "- src: geerlingguy.docker\n");
    assert_eq!(
        roles_only,
        vec![vec![
            "ansible-galaxy",
            "install",
            "-r",
            "/g/req.yml",
            "--force-with-deps",
            "-p",
            "/r"
        ]]
    );
    let both = super::ansible::galaxy_commands(&a, &ctx, f, "roles:\n  - x\ncollections:\n  - y\n");
    assert_eq!(both.len(), 2);
    assert_eq!(
        both[1][..4],
        ["ansible-galaxy", "collection", "install", "-r"]
    );
    assert_eq!(both[1][both[1].len() - 2..], ["-p", "/c"]);
    let cols = super::ansible::galaxy_commands(&a, &ctx, f, "collections:\n  - y\n");
    assert_eq!(cols.len(), 1);
}

#[tokio::test]
async fn ansible_missing_tool_is_explained() {
    let env = Env::new();
    let mut a = ansible();
    a.command = Some("/nonexistent/ansible-playbook".into());
    let e = run(&prov(ProvisionerKind::Ansible(a)), &env.ctx(None))
        .await
        .expect_err("missing");
    let m = e.to_string();
    assert!(
        m.contains("not found") && m.contains("apt-get install -y ansible") && m.contains("pip"),
        "{m}"
    );
}

#[tokio::test]
async fn shell_local_env_and_codes() {
    let env = Env::new();
    let marker = env.dir.path().join("out.txt");
    let sl = ShellLocal {
        inline: vec![format!(
            "echo \"$PACKER_BUILD_NAME $PACKER_BUILDER_TYPE $PACKER_HTTP_ADDR $FOO\" > {}",
            marker.display()
        )],
        environment_vars: vec!["FOO=it's ok".into()],
        ..Default::default()
    };
    run(&prov(ProvisionerKind::ShellLocal(sl)), &env.ctx(None))
        .await
        .expect("shell-local");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "test proxmox-iso 10.0.2.2:8888 it's ok\n"
    );
    let bad = ShellLocal {
        inline: vec!["exit 4".into()],
        ..Default::default()
    };
    let e = run(
        &prov(ProvisionerKind::ShellLocal(bad.clone())),
        &env.ctx(None),
    )
    .await
    .expect_err("exit 4");
    assert!(e.to_string().contains("exit code 4"), "{e}");
    let ok = ShellLocal {
        valid_exit_codes: vec![4],
        ..bad
    };
    run(&prov(ProvisionerKind::ShellLocal(ok)), &env.ctx(None))
        .await
        .expect("4 valid");
    let argv = shell_local::local_argv(
        &ShellLocal::default(),
        &env.ctx(None),
        "/s.sh",
        &[("A".into(), "1".into())],
    )
    .expect("argv");
    assert_eq!(argv, vec!["/bin/sh", "-c", "A='1'  /s.sh"]);
    let skipped = ShellLocal {
        inline: vec!["exit 1".into()],
        only_on: vec!["windows".into()],
        ..Default::default()
    };
    run(&prov(ProvisionerKind::ShellLocal(skipped)), &env.ctx(None))
        .await
        .expect("skipped");
}

#[tokio::test]
async fn breakpoint_non_interactive_continues() {
    let env = Env::new();
    let b = kiln_config::model::Breakpoint {
        note: Some("look".into()),
        disable: false,
    };
    run(&prov(ProvisionerKind::Breakpoint(b)), &env.ctx(None))
        .await
        .expect("continues");
    assert!(env.output().contains("not attached to a terminal"));
}

#[test]
fn resolve_paths() {
    let env = Env::new();
    let ctx = env.ctx(None);
    assert_eq!(ctx.resolve("/abs"), PathBuf::from("/abs"));
    assert_eq!(ctx.resolve("rel/x"), env.dir.path().join("rel/x"));
    assert_eq!(ctx.lookup("HTTPIP").as_deref(), Some("10.0.2.2"));
    assert_eq!(ctx.lookup("build_name").as_deref(), Some("test"));
    assert_eq!(ctx.http_addr().as_deref(), Some("10.0.2.2:8888"));
}

#[tokio::test]
async fn shell_local_post_processor_runs_with_packers_environment() {
    let env = Env::new();
    let marker = env.dir.path().join("pp.txt");
    let mut vars = env.vars.clone();
    vars.insert("ID".to_string(), "123".to_string());
    let pp = ShellLocal {
        inline: vec![format!(
            "echo \"$PACKER_BUILD_NAME $PACKER_BUILDER_TYPE\" > {}",
            marker.display()
        )],
        ..Default::default()
    };
    let ctx = ProvisionContext {
        comm: None,
        ssh: None,
        vars: &vars,
        ..env.ctx(None)
    };
    super::run_shell_local_post_processor(&pp, &ctx)
        .await
        .expect("post-processor");
    assert_eq!(
        std::fs::read_to_string(&marker).expect("the post-processor ran"),
        "test proxmox-iso\n"
    );
    let bad = ShellLocal {
        inline: vec!["exit 3".into()],
        ..Default::default()
    };
    let e = super::run_shell_local_post_processor(&bad, &ctx)
        .await
        .expect_err("exit 3 fails the post-processor");
    assert!(e.to_string().contains("exit code 3"), "{e}");
}

#[tokio::test]
async fn ansible_local_uploads_the_playbook_and_runs_it_in_the_guest() {
    let env = Env::new();
    std::fs::write(env.dir.path().join("site.yml"), "- hosts: all\n").expect("playbook");
    std::fs::create_dir_all(env.dir.path().join("roles/web")).expect("role");
    let comm = FakeComm::default();
    let a = kiln_config::model::AnsibleLocal {
        playbook_file: Some("site.yml".into()),
        role_paths: vec!["roles/web".into()],
        extra_arguments: vec!["--extra-vars".into(), "\"x=1\"".into()],
        staging_directory: Some("/tmp/stage".into()),
        clean_staging_directory: true,
        ..Default::default()
    };
    run(
        &prov(ProvisionerKind::AnsibleLocal(a.clone())),
        &env.ctx(Some(&comm)),
    )
    .await
    .expect("ansible-local");
    let log = comm.log.lock().expect("lock").clone();
    assert_eq!(log[0], "exec mkdir -p /tmp/stage");
    assert_eq!(log[1], "upload_dir web /tmp/stage/roles/web");
    assert_eq!(
        log[2],
        "upload /tmp/stage/packer-provisioner-ansible-local-inventory"
    );
    assert_eq!(log[3], "upload /tmp/stage/site.yml");
    assert_eq!(
        log[4],
        "exec cd /tmp/stage && ANSIBLE_FORCE_COLOR=1 PYTHONUNBUFFERED=1 ansible-playbook site.yml \
         --extra-vars 'packer_build_name=test packer_builder_type=proxmox-iso packer_http_addr=10.0.2.2:8888' \
         --extra-vars \"x=1\" -c local -i packer-provisioner-ansible-local-inventory"
    );
    assert_eq!(log[5], "exec rm -rf /tmp/stage");
    {
        let uploads = comm.uploads.lock().expect("lock");
        assert_eq!(uploads["/tmp/stage/site.yml"].0, b"- hosts: all\n");
        assert_eq!(
            uploads["/tmp/stage/packer-provisioner-ansible-local-inventory"].0,
            b"127.0.0.1\n"
        );
    }

    // a failing playbook fails the provisioner (and the staging directory is still removed)
    let failing = FakeComm::default();
    *failing.statuses.lock().expect("lock") =
        vec![Ok(ExitStatus::Code(0)), Ok(ExitStatus::Code(2))];
    let e = run(
        &prov(ProvisionerKind::AnsibleLocal(a)),
        &env.ctx(Some(&failing)),
    )
    .await
    .expect_err("playbook failed");
    assert!(e.to_string().contains("ansible-playbook failed"), "{e}");
    assert!(failing
        .log
        .lock()
        .expect("lock")
        .iter()
        .any(|l| l == "exec rm -rf /tmp/stage"));
}

#[test]
fn ansible_local_inventory_groups() {
    assert_eq!(
        super::ansible_local::inventory(&["web".into(), "db".into()]),
        "[web]\n127.0.0.1\n\n[db]\n127.0.0.1\n"
    );
}
