//! `kiln port` against the real iptables, nftables and ufw, inside network namespaces this test creates:
//! a server namespace whose firewall drops by default and a client namespace joined to it by a veth pair.
//! Before `open` the client cannot reach the port, after it can, after `close` it cannot, and the ruleset
//! is then byte-identical to what it was. Needs root and the Debian packages iptables, nftables, ufw,
//! iproute2, python3 (`cargo xtask test` installs them); runs only with KILN_E2E=1.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn kiln() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run {args:?}: {e}"),
    }
}

fn sh_ok(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A server namespace and a client namespace joined by a veth pair; deleted on drop.
struct Pair {
    server: String,
    client: String,
    server_ip: String,
    listener: Option<Child>,
    state_dir: tempfile::TempDir,
    /// a bind-mounted copy of /etc/ufw for the ufw test (ufw keeps its rules there)
    ufw_etc: Option<tempfile::TempDir>,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let server = format!("kiln-fw{tag}-s-{pid}-{n}");
        let client = format!("kiln-fw{tag}-c-{pid}-{n}");
        // private addresses only ever inside these namespaces
        let subnet = 100 + (pid % 100) as u8 + n as u8;
        let server_ip = format!("10.213.{subnet}.1");
        let client_ip = format!("10.213.{subnet}.2");
        sh_ok(&["ip", "netns", "add", &server]);
        sh_ok(&["ip", "netns", "add", &client]);
        let pair = Pair {
            server,
            client,
            server_ip: server_ip.clone(),
            listener: None,
            state_dir: tempfile::tempdir().expect("tempdir"),
            ufw_etc: None,
        };
        let (s, c) = (pair.server.as_str(), pair.client.as_str());
        sh_ok(&[
            "ip", "link", "add", "kfw-s", "netns", s, "type", "veth", "peer", "name", "kfw-c",
            "netns", c,
        ]);
        for (ns, dev, ip) in [(s, "kfw-s", &server_ip), (c, "kfw-c", &client_ip)] {
            sh_ok(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            sh_ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh_ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// A TCP server on `port` in the server namespace.
    fn listen(&mut self, port: u16) {
        let code = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',{port}))\ns.listen(16)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'ok')\n  c.close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, "python3", "-c", &code])
            .stdout(Stdio::null())
            .spawn()
            .expect("start listener");
        self.listener = Some(child);
        // wait until it listens (from inside its own namespace, which no firewall filters on lo… unless
        // it does: ask ss instead)
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ss = sh(&["ip", "netns", "exec", &self.server, "ss", "-ltn"]);
            if String::from_utf8_lossy(&ss.stdout).contains(&format!(":{port} ")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("listener on {port} did not start");
    }

    /// Whether the client can open a TCP connection to the server's port (1.5 s timeout).
    fn reachable(&self, port: u16) -> bool {
        let code = format!(
            "import socket,sys\ntry:\n  s=socket.create_connection(('{}',{port}),timeout=1.5)\n  sys.exit(0 if s.recv(2)==b'ok' else 3)\nexcept OSError:\n  sys.exit(1)\n",
            self.server_ip
        );
        sh(&["ip", "netns", "exec", &self.client, "python3", "-c", &code])
            .status
            .success()
    }

    /// Runs a command in the server namespace (with the ufw copy mounted when there is one).
    fn in_server(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.server]);
        if let Some(etc) = &self.ufw_etc {
            // `ip netns exec` gives each command a private mount namespace: the bind mount stays in it
            let path = etc.path().to_string_lossy().into_owned();
            cmd.args([
                "sh",
                "-c",
                &format!("mount --bind '{path}' /etc/ufw && exec \"$@\""),
                "sh",
            ]);
        }
        cmd.args(args).env("KILN_STATE_DIR", self.state_dir.path());
        cmd.output().expect("run in server namespace")
    }

    fn in_server_ok(&self, args: &[&str]) -> String {
        let o = self.in_server(args);
        assert!(
            o.status.success(),
            "{args:?} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn kiln_port(&self, args: &[&str]) -> Output {
        let mut full = vec![kiln(), "port"];
        full.extend_from_slice(args);
        self.in_server(&full)
    }

    /// The whole ruleset as the tools print it, counters removed (traffic changes them).
    fn ruleset(&self) -> String {
        let strip = |s: String| -> String {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match l.find(" [") {
                    Some(i) if l.starts_with(':') => l[..i].to_string(),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut all = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            all += &strip(self.in_server_ok(&[tool]));
        }
        // nft prints live counters on rules that count ("counter packets 3 bytes 156"): drop the numbers
        let nft = self.in_server_ok(&["nft", "list", "ruleset"]);
        for line in nft.lines() {
            let mut words: Vec<&str> = Vec::new();
            let mut it = line.split(' ').peekable();
            while let Some(w) = it.next() {
                words.push(w);
                if w.trim_start() == "counter" && it.peek() == Some(&"packets") {
                    // skip "packets N bytes M"
                    for _ in 0..4 {
                        it.next();
                    }
                }
            }
            all += &words.join(" ");
            all.push('\n');
        }
        if let Some(etc) = &self.ufw_etc {
            for f in ["user.rules", "user6.rules", "ufw.conf"] {
                all += &std::fs::read_to_string(etc.path().join(f)).unwrap_or_default();
            }
        }
        all
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(mut c) = self.listener.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&["ip", "netns", "del", &self.server]);
        let _ = sh(&["ip", "netns", "del", &self.client]);
    }
}

/// Equal rulesets, or a failure that shows only the lines that differ.
fn assert_same(before: &str, after: &str, what: &str) {
    if before == after {
        return;
    }
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    panic!("{what}: ruleset differs after close\n  only before: {gone:#?}\n  only after: {new:#?}");
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The common scenario: closed → open → open again (one rule) → close → closed, ruleset as before.
fn scenario(pair: &mut Pair, port: u16, backend: &str, count_rules: &dyn Fn(&Pair) -> usize) {
    pair.listen(port);
    let before = pair.ruleset();
    assert!(
        !pair.reachable(port),
        "{backend}: port {port} reachable before open: the firewall does not drop"
    );

    let p = port.to_string();
    let o = pair.kiln_port(&["open", "--port", &p, "--backend", backend]);
    assert!(o.status.success(), "{backend} open: {}", text(&o));
    assert!(text(&o).contains("opened"), "{}", text(&o));
    assert!(
        pair.reachable(port),
        "{backend}: port not reachable after open"
    );

    let o = pair.kiln_port(&["open", "--port", &p, "--backend", backend]);
    assert!(o.status.success(), "{backend} second open: {}", text(&o));
    assert!(text(&o).contains("already open"), "{}", text(&o));
    assert_eq!(
        count_rules(pair),
        1,
        "{backend}: opening twice must leave exactly one rule"
    );

    let o = pair.kiln_port(&["status", "--port", &p, "--backend", backend]);
    assert!(
        text(&o).contains("present"),
        "{backend} status: {}",
        text(&o)
    );

    let o = pair.kiln_port(&["close", "--port", &p, "--backend", backend]);
    assert!(o.status.success(), "{backend} close: {}", text(&o));
    assert!(
        !pair.reachable(port),
        "{backend}: port still reachable after close"
    );
    assert_same(&before, &pair.ruleset(), backend);

    let o = pair.kiln_port(&["close", "--port", &p, "--backend", backend]);
    assert!(
        text(&o).contains("not open"),
        "{backend} second close: {}",
        text(&o)
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn iptables_open_close_restores_ruleset() {
    kiln_testguest::require_e2e();
    let mut pair = Pair::new("i");
    for tool in ["iptables", "ip6tables"] {
        pair.in_server_ok(&[tool, "-P", "INPUT", "DROP"]);
    }
    scenario(&mut pair, 18081, "iptables", &|p| {
        p.in_server_ok(&["iptables-save"])
            .lines()
            .filter(|l| l.contains("--comment kiln"))
            .count()
    });
    // auto detects iptables here and says so
    let o = pair.kiln_port(&["open", "--port", "18081"]);
    assert!(
        text(&o).contains("INPUT policy DROP") && text(&o).contains("using iptables"),
        "{}",
        text(&o)
    );
    assert!(pair.reachable(18081));
    let o = pair.kiln_port(&["close", "--port", "18081"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!pair.reachable(18081));
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn iptables_rule_of_another_owner_is_left_alone() {
    kiln_testguest::require_e2e();
    let mut pair = Pair::new("o");
    pair.in_server_ok(&["iptables", "-P", "INPUT", "DROP"]);
    pair.in_server_ok(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "18082", "-j", "ACCEPT",
    ]);
    pair.listen(18082);
    let before = pair.ruleset();
    let o = pair.kiln_port(&["open", "--port", "18082", "--backend", "iptables"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("already allowed by a rule kiln did not add"),
        "{}",
        text(&o)
    );
    let o = pair.kiln_port(&["close", "--port", "18082", "--backend", "iptables"]);
    assert!(text(&o).contains("not open"), "{}", text(&o));
    assert_same(&before, &pair.ruleset(), "other owner");
    assert!(
        pair.reachable(18082),
        "the other owner's rule must still be there"
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn nftables_open_close_restores_ruleset() {
    kiln_testguest::require_e2e();
    let mut pair = Pair::new("n");
    pair.in_server_ok(&["nft", "add", "table", "inet", "filter"]);
    pair.in_server_ok(&[
        "nft",
        "add",
        "chain",
        "inet",
        "filter",
        "input",
        "{ type filter hook input priority 0; policy drop; }",
    ]);
    pair.in_server_ok(&[
        "nft", "add", "rule", "inet", "filter", "input", "tcp", "dport", "22", "accept",
    ]);
    scenario(&mut pair, 18083, "nftables", &|p| {
        p.in_server_ok(&["nft", "list", "ruleset"])
            .lines()
            .filter(|l| l.contains("comment \"kiln\""))
            .count()
    });
    let o = pair.kiln_port(&["status", "--port", "18083"]);
    assert!(
        text(&o).contains("using nftables"),
        "auto must find the nftables chain: {}",
        text(&o)
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn ufw_open_close_restores_ruleset() {
    kiln_testguest::require_e2e();
    let mut pair = Pair::new("u");
    let etc = tempfile::tempdir().expect("tempdir");
    sh_ok(&["cp", "-a", "/etc/ufw/.", &etc.path().to_string_lossy()]);
    pair.ufw_etc = Some(etc);
    pair.in_server_ok(&["ufw", "--force", "enable"]);
    // ufw's first enable in a fresh namespace leaves out `-A ufw6-user-limit -j REJECT …`, which every
    // later ufw reload (so also kiln's `ufw allow`) adds: let ufw converge before taking the baseline
    pair.in_server_ok(&["ufw", "reload"]);
    scenario(&mut pair, 18084, "ufw", &|p| {
        let st = p.in_server_ok(&["ufw", "status"]);
        st.lines()
            .filter(|l| l.contains("# kiln") && !l.contains("(v6)"))
            .count()
    });
    let o = pair.kiln_port(&["status", "--port", "18084"]);
    assert!(
        text(&o).contains("ufw is active") && text(&o).contains("using ufw"),
        "{}",
        text(&o)
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn stale_rule_of_a_dead_build_is_closed() {
    kiln_testguest::require_e2e();
    let mut pair = Pair::new("x");
    pair.in_server_ok(&["iptables", "-P", "INPUT", "DROP"]);
    pair.listen(18085);
    let before = pair.ruleset();
    // a build that opened the port and died: its rule and its record are left behind
    pair.in_server_ok(&[
        "iptables",
        "-I",
        "INPUT",
        "1",
        "-p",
        "tcp",
        "-m",
        "tcp",
        "--dport",
        "18085",
        "-m",
        "comment",
        "--comment",
        "kiln",
        "-j",
        "ACCEPT",
    ]);
    let mut dead = Command::new("true").spawn().expect("spawn");
    let dead_pid = dead.id();
    dead.wait().expect("wait");
    let netns_inode = pair.in_server_ok(&["stat", "-L", "-c", "%i", "/proc/self/ns/net"]);
    let state = serde_json_state(dead_pid, netns_inode.trim());
    std::fs::write(pair.state_dir.path().join("firewall.json"), state).expect("write state");
    assert!(pair.reachable(18085));

    let o = pair.kiln_port(&["close", "--stale"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("left by a build that is no longer running"),
        "{}",
        text(&o)
    );
    assert!(!pair.reachable(18085));
    assert_same(&before, &pair.ruleset(), "stale");
    let o = pair.kiln_port(&["close", "--stale"]);
    assert!(text(&o).contains("no stale rules"), "{}", text(&o));
}

fn serde_json_state(pid: u32, netns: &str) -> String {
    format!(
        r#"{{"version":1,"entries":[{{"backend":"iptables","rule":{{"port":18085,"proto":"tcp","comment":"kiln"}},
        "owner":{{"kind":"build","pid":{pid},"start_time":1}},"netns":{netns},"opened_at":0}}]}}"#
    )
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn nixos_backend_runs_the_documented_commands() {
    kiln_testguest::require_e2e();
    // NixOS cannot run here: a stand-in nixos-firewall-tool records how it is called
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls.log");
    let tool = dir.path().join("nixos-firewall-tool");
    std::fs::write(
        &tool,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", log.display()),
    )
    .expect("write");
    sh_ok(&["chmod", "+x", &tool.to_string_lossy()]);
    let state = tempfile::tempdir().expect("tempdir");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| -> Output {
        Command::new(kiln())
            .arg("port")
            .args(args)
            .env("PATH", &path)
            .env("KILN_STATE_DIR", state.path())
            .output()
            .expect("run kiln")
    };
    let o = run(&["close", "--port", "8888", "--backend", "nixos"]);
    assert!(
        text(&o).contains("not open"),
        "reset must not run when kiln opened nothing: {}",
        text(&o)
    );
    let o = run(&["open", "--port", "8888", "--backend", "nixos"]);
    assert!(
        o.status.success() && text(&o).contains("ran: nixos-firewall-tool open tcp 8888"),
        "{}",
        text(&o)
    );
    let o = run(&["open", "--port", "8888", "--backend", "nixos"]);
    assert!(text(&o).contains("already open"), "{}", text(&o));
    let o = run(&["close", "--port", "8888", "--backend", "nixos"]);
    assert!(
        text(&o).contains("drops EVERY temporary rule"),
        "the reset warning must come first: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("ran: nixos-firewall-tool reset"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "open tcp 8888\nreset\n"
    );
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn clear_errors_and_nothing_changed() {
    kiln_testguest::require_e2e();
    let state = tempfile::tempdir().expect("tempdir");
    // missing tool: no nixos-firewall-tool on this machine
    let o = Command::new(kiln())
        .args(["port", "open", "--port", "8888", "--backend", "nixos"])
        .env("KILN_STATE_DIR", state.path())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("nixos-firewall-tool` was not found"),
        "{}",
        text(&o)
    );
    // not root
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            kiln(),
            "port",
            "open",
            "--port",
            "8888",
        ])
        .env("KILN_STATE_DIR", state.path())
        .output()
        .expect("run setpriv");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("needs root"), "{}", text(&o));
    // usage: no port and no template
    let o = Command::new(kiln())
        .args(["port", "open"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
