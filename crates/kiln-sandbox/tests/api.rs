//! Sandbox API tests (no QEMU, no qemu-img): wire format, auth, validation table, tasks, VM config
//! CRUD without disks, storage upload/download/delete, faults, events.

mod common;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn wire_envelope_version_and_unknown_paths() {
    let env = start().await;
    let v = env.get("/version").await;
    assert_eq!(v["release"], "9.1");
    assert!(v["version"].as_str().unwrap().starts_with("9.1"));

    // unknown path: 501 naming the method and path
    let r = env.call("GET", "/nodes/pve/bogus", &[]).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.reason, "Method 'GET /nodes/pve/bogus' not implemented");
    // real PVE endpoint the sandbox does not implement: 501 naming the endpoint
    let r = env
        .call(
            "GET",
            "/nodes/pve/qemu/100/rrddata",
            &[("timeframe", "hour")],
        )
        .await;
    assert_eq!(r.status, 501);
    assert!(
        r.reason.contains("GET /nodes/{node}/qemu/{vmid}/rrddata"),
        "{}",
        r.reason
    );
    // outside /api2/json
    let r = resp(
        env.http
            .get(format!("https://{}/index.html", env.sb.addr))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn ticket_auth_csrf_and_tokens() {
    let env = start().await;
    let http = &env.http;
    // no auth
    let r = resp(http.get(env.url("/nodes")).send().await.unwrap()).await;
    assert_eq!(
        (r.status, r.reason.as_str(), r.raw.as_str()),
        (401, "No ticket", "")
    );
    // bad password
    let r = resp(
        http.post(env.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", "wrong")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason, "authentication failure");
    assert_eq!(
        r.body,
        json!({"data": null, "message": "authentication failure\n"})
    );
    // login (JSON body)
    let r = resp(
        http.post(env.url("/access/ticket"))
            .json(&json!({"username": "root@pam", "password": PASSWORD}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let ticket = r.body["data"]["ticket"].as_str().unwrap().to_string();
    let csrf = r.body["data"]["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ticket.starts_with("PVE:root@pam:"));
    assert_eq!(r.body["data"]["username"], "root@pam");
    let cookie = format!(
        "PVEAuthCookie={}",
        percent_encoding::utf8_percent_encode(&ticket, percent_encoding::NON_ALPHANUMERIC)
    );
    // GET with cookie: fine
    let r = resp(
        http.get(env.url("/nodes"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"][0]["node"], "pve");
    // write without CSRF token
    let r = resp(
        http.post(env.url("/nodes/pve/qemu"))
            .header("Cookie", &cookie)
            .form(&[("vmid", "100")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (401, "Permission denied - invalid csrf token")
    );
    // with CSRF token
    let r = resp(
        http.post(env.url("/nodes/pve/qemu"))
            .header("Cookie", &cookie)
            .header("CSRFPreventionToken", &csrf)
            .form(&[("vmid", "100"), ("name", "csrf-ok")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // Authorization: PVEAuthCookie=... works as well
    let r = resp(
        http.get(env.url("/version"))
            .header("Authorization", format!("PVEAuthCookie={ticket}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // ticket renewal
    let r = resp(
        http.post(env.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", &ticket)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // forged ticket
    let forged = ticket.replace("root@pam", "evil@pam");
    let r = resp(
        http.get(env.url("/nodes"))
            .header("Cookie", format!("PVEAuthCookie={forged}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (401, "Authentication failed!")
    );
    // tokens: good, wrong secret, not allowed on /access/ticket
    let r = resp(
        http.get(env.url("/nodes"))
            .header("Authorization", env.token_header())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = resp(
        http.get(env.url("/nodes"))
            .header("Authorization", format!("PVEAPIToken={TOKEN_ID}=nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (401, "Authentication failed!")
    );
    // UPIDs of token calls carry the token id
    let r = env
        .call("POST", "/nodes/pve/qemu", &[("vmid", "101")])
        .await;
    let upid = r.body["data"].as_str().unwrap().to_string();
    assert!(upid.ends_with(":qmcreate:101:root@pam!kiln:"), "{upid}");
    assert_eq!(env.wait_task(&upid).await, "OK");
    let enc = percent_encoding::utf8_percent_encode(&upid, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let st = env.get(&format!("/nodes/pve/tasks/{enc}/status")).await;
    assert_eq!(st["user"], "root@pam");
    assert_eq!(st["tokenid"], "kiln");
    env.sb.shutdown().await;
}

/// (method, path, form params, status, [(param, expected message)])
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    u16,
    Vec<(&'static str, &'static str)>,
);

#[tokio::test]
async fn invalid_requests_are_refused_like_pve() {
    let env = start().await;
    let unknown =
        "property is not defined in schema and the schema does not allow additional properties";
    let missing = "property is missing and it is not optional";
    let cases: Vec<Case> = vec![
        ("POST", "/nodes/pve/qemu", vec![("vmid", "abc"), ("cores", "0"), ("foo", "1")], 400, vec![
            ("vmid", "type check ('integer') failed - got 'abc'"),
            ("cores", "value must have a minimum value of 1"),
            ("foo", unknown),
        ]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "42")], 400, vec![("vmid", "invalid format - value does not look like a valid VM ID\n")]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "100"), ("ostype", "linux")], 400, vec![(
            "ostype",
            "value 'linux' does not have a value in the enumeration 'other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris'",
        )]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "100"), ("onboot", "true")], 400, vec![("onboot", "type check ('boolean') failed - got 'true'")]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("net0", "virtio,bridge=vmbr0,speed=10")], 400, vec![(
            "net0",
            "invalid format - invalid key in comma-separated list property: speed\n",
        )]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("storage", "9bad")], 400, vec![("storage", "invalid format - storage ID '9bad' contains illegal characters\n")]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("cdrom", "local:iso/x.iso,media=floppy")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("scsi0", "local-lvm:8,cache=fast")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("boot", "order=scsi0;floppy0")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("memory", "8")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("name", "not a dns name")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("serial0", "tcp")], 400, vec![("serial0", "value does not match the regex pattern")]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("sshkeys", "ssh-ed25519 AAAA")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "9000"), ("ipconfig0", "ip=300.1.1.1/24")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![("vmid", "1000000000")], 400, vec![]),
        ("POST", "/nodes/pve/qemu", vec![], 400, vec![("vmid", missing)]),
        ("PUT", "/nodes/pve/qemu/100/sendkey", vec![], 400, vec![("key", missing)]),
        ("GET", "/cluster/resources", vec![("type", "lxc")], 400, vec![]),
        ("GET", "/nodes/pve/tasks/not-a-upid/status", vec![], 400, vec![("upid", "unable to parse worker upid")]),
        ("GET", "/nodes/pve/tasks/UPID:pve:00000001:00000002:00000003:qmstart:100:root@pam:/status", vec![], 400, vec![("upid", "no such task")]),
        ("POST", "/nodes/pve/storage/local/download-url", vec![("content", "iso"), ("filename", "x.iso"), ("url", "ftp://x/y")], 400, vec![]),
        ("POST", "/nodes/pve/storage/local/download-url", vec![("content", "iso"), ("filename", "x.iso"), ("url", "http://127.0.0.1/x.iso"), ("checksum-algorithm", "crc32")], 400, vec![]),
        ("POST", "/nodes/pve/qemu/100/status/start", vec![("vmid", "101")], 400, vec![(
            "vmid",
            "duplicate parameter (already defined in URI) with conflicting values!",
        )]),
        ("GET", "/nodes/pve/qemu/100/config", vec![("current", "yes")], 400, vec![("current", "type check ('boolean') failed - got 'yes'")]),
        ("POST", "/nodes/pve/qemu/100/clone", vec![], 400, vec![("newid", missing)]),
        ("GET", "/nodes/pve/qemu/abc/config", vec![], 400, vec![("vmid", "type check ('integer') failed - got 'abc'")]),
        ("GET", "/nodes/pve/storage/1x/content", vec![], 400, vec![]),
    ];
    for (method, path, form, status, expect) in cases {
        let r = env.call(method, path, &form).await;
        assert_eq!(
            r.status, status,
            "{method} {path} {form:?}: {} {}",
            r.reason, r.raw
        );
        assert_eq!(
            r.reason, "Parameter verification failed.",
            "{method} {path} {form:?}"
        );
        assert_eq!(r.body["data"], Value::Null);
        assert_eq!(r.body["message"], "Parameter verification failed.\n");
        let errs = r.body["errors"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no errors: {}", r.raw));
        assert!(!errs.is_empty());
        for (k, msg) in expect {
            assert_eq!(
                errs.get(k).and_then(Value::as_str),
                Some(msg),
                "{method} {path} {form:?}: {}",
                r.raw
            );
        }
    }
    // validation failures are in the events log
    let ev = env.events();
    assert!(ev
        .iter()
        .any(|e| e["status"] == 400 && e["errors"]["onboot"].is_string()));
    env.sb.shutdown().await;
}

#[tokio::test]
async fn valid_requests_pass_and_vm_config_crud() {
    let env = start().await;
    assert_eq!(env.get("/cluster/nextid").await, json!(100));
    // create (form, with property strings Packer 1.6.6 sends) — no disks, so no qemu-img needed
    let st = env
        .task(
            "POST",
            "/nodes/pve/qemu",
            &[
                ("vmid", "100"),
                ("name", "crud-vm"),
                ("memory", "1024"),
                ("cores", "2"),
                ("sockets", "1"),
                ("cpu", "kvm64"),
                ("ostype", "l26"),
                ("agent", "1"),
                ("kvm", "1"),
                ("numa", "0"),
                ("onboot", "0"),
                ("scsihw", "virtio-scsi-pci"),
                (
                    "net0",
                    "virtio=72:E6:B2:99:2D:00,bridge=vmbr0,tag=10,firewall=false",
                ),
                ("net1", "virtio,bridge=vmbr0"),
                ("vga", "type=std"),
                ("serial0", "socket"),
                ("ipconfig0", "ip=dhcp"),
                ("sshkeys", "ssh-ed25519%20AAAAC3Nz%20kiln%0A"),
                ("boot", "order=net0"),
                ("description", "Packer ephemeral build VM"),
            ],
        )
        .await;
    assert_eq!(st, "OK");
    let r = env.call("GET", "/cluster/nextid", &[("vmid", "100")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"]["vmid"], "VM 100 already exists");
    assert_eq!(env.get("/cluster/nextid").await, json!(101));
    assert_eq!(
        env.call("GET", "/cluster/nextid", &[("vmid", "150")])
            .await
            .body["data"],
        "150"
    );
    // duplicate create
    let r = env
        .call("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "unable to create VM 100 - VM 100 already exists on node 'pve'"
    );
    let c = env.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(c["cores"], 2);
    assert_eq!(c["memory"], "1024");
    assert_eq!(c["numa"], 0);
    assert_eq!(
        c["net0"],
        "virtio=72:E6:B2:99:2D:00,bridge=vmbr0,tag=10,firewall=false"
    );
    assert!(
        c["net1"].as_str().unwrap().starts_with("virtio=BC:24:11:"),
        "{}",
        c["net1"]
    );
    assert!(c["digest"].as_str().unwrap().len() == 40);
    assert!(c["smbios1"].as_str().unwrap().starts_with("uuid="));
    assert!(c["meta"].as_str().unwrap().starts_with("creation-qemu="));
    // PUT (sync) with delete= and digest
    let digest = c["digest"].as_str().unwrap().to_string();
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[
                ("name", "renamed"),
                ("delete", "net1,serial0"),
                ("digest", &digest),
            ],
        )
        .await;
    assert_eq!(
        (r.status, &r.body),
        (200, &json!({"data": null})),
        "{}",
        r.raw
    );
    let c2 = env.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(c2["name"], "renamed");
    assert!(c2.get("net1").is_none() && c2.get("serial0").is_none());
    // stale digest
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("name", "x"), ("digest", &digest)],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "detected modified configuration - file changed by other user? Try again."
    );
    // POST (async) config, with background_delay → null when done in time
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/config", &[("cores", "4")])
            .await,
        "OK"
    );
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu/100/config",
            &[("sockets", "2"), ("background_delay", "5")],
        )
        .await;
    assert_eq!(r.body, json!({"data": null}), "{}", r.raw);
    // bad boot order is a handler error (500)
    let r = env
        .call(
            "PUT",
            "/nodes/pve/qemu/100/config",
            &[("boot", "order=scsi0")],
        )
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.reason,
        "invalid bootorder: device 'scsi0' does not exist'"
    );
    // JSON body with native types
    let r = resp(
        env.http
            .put(env.url("/nodes/pve/qemu/100/config"))
            .header("Authorization", env.token_header())
            .json(&json!({"onboot": true, "cores": 1, "tags": "a;b"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let c3 = env.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(
        (c3["onboot"].clone(), c3["cores"].clone()),
        (json!(1), json!(1))
    );
    // status / list / resources
    let s = env.get("/nodes/pve/qemu/100/status/current").await;
    assert_eq!(
        (
            s["status"].clone(),
            s["qmpstatus"].clone(),
            s["agent"].clone()
        ),
        (json!("stopped"), json!("stopped"), json!(1))
    );
    let l = env.get("/nodes/pve/qemu").await;
    assert_eq!(l[0]["vmid"], 100);
    let res = env.get("/cluster/resources?type=vm").await;
    assert_eq!(res[0]["id"], "qemu/100");
    // agent on a stopped VM / sendkey on a stopped VM
    let r = env
        .call("POST", "/nodes/pve/qemu/100/agent/ping", &[])
        .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "VM 100 is not running")
    );
    let r = env
        .call("PUT", "/nodes/pve/qemu/100/sendkey", &[("key", "ret")])
        .await;
    assert_eq!((r.status, r.reason.as_str()), (500, "VM 100 not running"));
    // missing VM
    let r = env.call("GET", "/nodes/pve/qemu/999/config", &[]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (
            500,
            "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"
        )
    );
    // wrong node
    let r = env.call("GET", "/nodes/other/qemu", &[]).await;
    assert_eq!(r.status, 596);
    // template, then read-only behaviour
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu/100/template", &[]).await,
        "OK"
    );
    let c4 = env.get("/nodes/pve/qemu/100/config").await;
    assert_eq!(c4["template"], 1);
    let exit = env
        .task("POST", "/nodes/pve/qemu/100/status/start", &[])
        .await;
    assert_eq!(exit, "you can't start a vm if it's a template");
    let r = env
        .call("PUT", "/nodes/pve/qemu/100/config", &[("template", "0")])
        .await;
    assert_eq!(r.status, 500);
    let r = env.call("POST", "/nodes/pve/qemu/100/template", &[]).await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (500, "you can't convert a template to a template")
    );
    // metadata changes (Packer's finalize step) stay allowed on templates
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/100/config",
            &[("description", "built"), ("ide2", "none,media=cdrom")]
        )
        .await,
        "OK"
    );
    // clone of the template (no disks), then destroy both
    assert_eq!(
        env.task(
            "POST",
            "/nodes/pve/qemu/100/clone",
            &[("newid", "200"), ("name", "clone1"), ("full", "1")]
        )
        .await,
        "OK"
    );
    let cc = env.get("/nodes/pve/qemu/200/config").await;
    assert_eq!(cc["name"], "clone1");
    assert!(cc.get("template").is_none());
    assert_eq!(
        env.task("DELETE", "/nodes/pve/qemu/200", &[("purge", "1")])
            .await,
        "OK"
    );
    assert_eq!(env.task("DELETE", "/nodes/pve/qemu/100", &[]).await, "OK");
    assert_eq!(env.get("/nodes/pve/qemu").await, json!([]));
    // the events log has requests (secrets masked) and VM lifecycle
    let ev = env.events();
    assert!(ev
        .iter()
        .any(|e| e["event"] == "vm" && e["action"] == "template"));
    assert!(ev
        .iter()
        .any(|e| e["event"] == "request" && e["path"] == "/api2/json/nodes/pve/qemu/100/template"));
    env.sb.shutdown().await;
}

#[tokio::test]
async fn task_status_and_log_shape() {
    let env = start().await;
    let r = env
        .call("POST", "/nodes/pve/qemu", &[("vmid", "300")])
        .await;
    let upid = r.body["data"].as_str().unwrap().to_string();
    let re = regex::Regex::new(
        r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:qmcreate:300:root@pam!kiln:$",
    )
    .unwrap();
    assert!(re.is_match(&upid), "{upid}");
    env.wait_task(&upid).await;
    let enc = percent_encoding::utf8_percent_encode(&upid, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let st = env.get(&format!("/nodes/pve/tasks/{enc}/status")).await;
    for k in [
        "upid",
        "node",
        "pid",
        "pstart",
        "starttime",
        "type",
        "id",
        "user",
        "status",
        "exitstatus",
    ] {
        assert!(st.get(k).is_some(), "missing {k} in {st}");
    }
    // the raw (unencoded) UPID in the path works too, as Packer sends it
    let st2 = env.get(&format!("/nodes/pve/tasks/{upid}/status")).await;
    assert_eq!(st2["exitstatus"], "OK");
    let r = env
        .call(
            "GET",
            &format!("/nodes/pve/tasks/{enc}/log"),
            &[("start", "0"), ("limit", "50")],
        )
        .await;
    let lines = r.body["data"].as_array().unwrap();
    assert_eq!(lines.last().unwrap()["t"], "TASK OK");
    assert_eq!(lines[0]["n"], 1);
    assert_eq!(r.body["total"], lines.len());
    let tasks = env.call("GET", "/nodes/pve/tasks", &[]).await;
    assert_eq!(tasks.body["data"][0]["upid"], upid.as_str());
    assert_eq!(tasks.body["data"][0]["status"], "OK");
    env.sb.shutdown().await;
}

#[tokio::test]
async fn storage_upload_download_and_delete() {
    let env = start().await;
    let data = b"not really an ISO, but bytes\n".repeat(1000);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    let upload = |content: &'static str, name: &'static str, checksum: Option<String>| {
        let mut form = reqwest::multipart::Form::new().text("content", content);
        if let Some(c) = checksum {
            form = form
                .text("checksum-algorithm", "sha256")
                .text("checksum", c);
        }
        let part = reqwest::multipart::Part::bytes(data.clone()).file_name(name);
        form = form.part("filename", part);
        env.http
            .post(env.url("/nodes/pve/storage/local/upload"))
            .header("Authorization", env.token_header())
            .multipart(form)
            .send()
    };
    let r = resp(upload("iso", "test.iso", Some(sha.clone())).await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let upid = r.body["data"].as_str().unwrap().to_string();
    assert!(upid.contains(":imgcopy::root@pam!kiln:"), "{upid}");
    assert_eq!(env.wait_task(&upid).await, "OK");
    // wrong checksum: the task fails
    let r = resp(
        upload("iso", "bad.iso", Some("00".repeat(32)))
            .await
            .unwrap(),
    )
    .await;
    let st = env.wait_task(r.body["data"].as_str().unwrap()).await;
    assert!(st.starts_with("checksum mismatch"), "{st}");
    // wrong extension
    let r = resp(upload("iso", "test.txt", None).await.unwrap()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"]["filename"], "wrong file extension");
    // content listing
    let list = env
        .get("/nodes/pve/storage/local/content?content=iso")
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["volid"], "local:iso/test.iso");
    assert_eq!(list[0]["size"], data.len());
    // download-url from a loopback HTTP server, with checksum (file:// fails PVE's own `url` pattern)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = data.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
    });
    let url = format!("http://127.0.0.1:{port}/dl.iso");
    let st = env
        .task(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("content", "iso"),
                ("filename", "dl.iso"),
                ("url", &url),
                ("checksum-algorithm", "sha256"),
                ("checksum", &sha),
            ],
        )
        .await;
    assert_eq!(st, "OK");
    let st = env
        .task(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("content", "iso"),
                ("filename", "dl2.iso"),
                ("url", &url),
                ("checksum-algorithm", "sha256"),
                ("checksum", &"ab".repeat(32)),
            ],
        )
        .await;
    assert!(st.starts_with("checksum mismatch"), "{st}");
    let r = env
        .call(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("content", "iso"),
                ("filename", "x.iso"),
                ("url", "file:///etc/hostname"),
            ],
        )
        .await;
    assert_eq!(
        r.body["errors"]["url"],
        "value does not match the regex pattern"
    );
    // non-loopback URLs are refused
    let r = env
        .call(
            "POST",
            "/nodes/pve/storage/local/download-url",
            &[
                ("content", "iso"),
                ("filename", "x.iso"),
                ("url", "https://example.com/x.iso"),
            ],
        )
        .await;
    assert_eq!(r.status, 500);
    // storage lists
    let s = env.get("/nodes/pve/storage").await;
    assert_eq!(s.as_array().unwrap().len(), 2);
    let s = env.get("/nodes/pve/storage?content=images").await;
    assert_eq!(s[0]["storage"], "local-lvm");
    // delete (full volid and relative)
    assert_eq!(
        env.task(
            "DELETE",
            "/nodes/pve/storage/local/content/local:iso/dl.iso",
            &[]
        )
        .await,
        "OK"
    );
    let r = env
        .call(
            "DELETE",
            "/nodes/pve/storage/local/content/iso/test.iso",
            &[("delay", "5")],
        )
        .await;
    assert_eq!(r.body, json!({"data": null}), "{}", r.raw);
    assert_eq!(env.get("/nodes/pve/storage/local/content").await, json!([]));
    let r = env
        .call(
            "DELETE",
            "/nodes/pve/storage/local/content/local:iso/gone.iso",
            &[],
        )
        .await;
    assert_eq!(r.status, 500);
    env.sb.shutdown().await;
}

#[tokio::test]
async fn fault_injection() {
    let env = start_with(|c| {
        c.faults = kiln_sandbox::Faults {
            rules: vec![
                kiln_sandbox::Faults::parse_fail("GET:/version:2:596:Broken pipe").unwrap(),
                kiln_sandbox::Faults::parse_fail("GET:/nodes:1:500:injected failure").unwrap(),
                kiln_sandbox::Faults::parse_drop("GET:/cluster/nextid:1").unwrap(),
                kiln_sandbox::Faults::parse_fail_task("qmcreate:1:create failed: injected")
                    .unwrap(),
                kiln_sandbox::Faults::parse_delay("GET:/nodes/{node}/network:300").unwrap(),
            ],
            agent_disabled: true,
        };
    })
    .await;
    assert_eq!(env.call("GET", "/version", &[]).await.status, 200);
    let r = env.call("GET", "/version", &[]).await;
    assert_eq!((r.status, r.reason.as_str()), (596, "Broken pipe"));
    assert_eq!(env.call("GET", "/version", &[]).await.status, 200);
    let r = env.call("GET", "/nodes", &[]).await;
    assert_eq!((r.status, r.reason.as_str()), (500, "injected failure"));
    let dropped = env
        .http
        .get(env.url("/cluster/nextid"))
        .header("Authorization", env.token_header())
        .send()
        .await;
    assert!(dropped.is_err(), "expected a dropped connection");
    assert_eq!(env.call("GET", "/cluster/nextid", &[]).await.status, 200);
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu", &[("vmid", "100")])
            .await,
        "create failed: injected"
    );
    let t0 = std::time::Instant::now();
    let _ = env.get("/nodes/pve/network").await;
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300));
    let ev = env.events();
    assert!(ev.iter().any(|e| e["status"] == "dropped"));
    env.sb.shutdown().await;
}

#[tokio::test]
async fn events_mask_secrets() {
    let env = start().await;
    let _ = env
        .http
        .post(env.url("/access/ticket"))
        .form(&[("username", "root@pam"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let _ = env
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "100"), ("cipassword", "hunter2")],
        )
        .await;
    let text = std::fs::read_to_string(env.dir.path().join("state/events.jsonl")).unwrap();
    assert!(
        !text.contains(PASSWORD) && !text.contains("hunter2"),
        "secret leaked into events.jsonl"
    );
    assert!(text.contains("\"password\":\"***\""));
    env.sb.shutdown().await;
}

/// Keys of every object in a sample must appear, with the same JSON type (numbers-as-strings allowed
/// where PVE sends strings), in the sandbox's answer.
fn same_shape(sample: &Value, ours: &Value, skip: &[&str]) -> Result<(), String> {
    let (Some(s), Some(o)) = (sample.as_object(), ours.as_object()) else {
        return Err(format!("not objects: {sample} / {ours}"));
    };
    for (k, v) in s {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let Some(ov) = o.get(k) else {
            return Err(format!("missing key '{k}' (sample {sample})"));
        };
        let kind = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if kind(v) != kind(ov) && !v.is_null() && !ov.is_null() {
            return Err(format!(
                "key '{k}': sample {} vs ours {}",
                kind(v),
                kind(ov)
            ));
        }
    }
    Ok(())
}

fn sample(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema/samples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("sample")).expect("sample json")
}

#[tokio::test]
async fn recorded_samples_are_reproduced_in_shape() {
    let env = start().await;
    // GET /nodes (recorded from a real 8.x cluster)
    let ours = env.get("/nodes").await;
    for s in sample("recorded__GET_nodes.json")["data"]
        .as_array()
        .unwrap()
    {
        same_shape(s, &ours[0], &[]).unwrap();
    }
    // GET /nodes/{node}/network: our vmbr0 has the keys of the recorded bridge entry
    let ours = env.get("/nodes/pve/network").await;
    let rec = sample("recorded__GET_nodes_NODE_network.json");
    let bridge = rec["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "bridge")
        .unwrap()
        .clone();
    same_shape(
        &bridge,
        &ours[0],
        &["comments", "bridge_vids", "bridge_vlan_aware"],
    )
    .unwrap();
    assert_eq!(ours[0]["iface"], "vmbr0");
    // GET /nodes/{node}/tasks (recorded)
    env.task("POST", "/nodes/pve/qemu", &[("vmid", "100")])
        .await;
    let ours = env.get("/nodes/pve/tasks").await;
    for s in sample("recorded__GET_nodes_NODE_tasks.json")["data"]
        .as_array()
        .unwrap()
    {
        same_shape(s, &ours[0], &[]).unwrap();
    }
    // status/current (recorded on a running VM: compare the keys a stopped VM also has)
    let ours = env.get("/nodes/pve/qemu/100/status/current").await;
    let rec = sample("recorded__GET_nodes_NODE_qemu_VMID_status_current.json")["data"].clone();
    let running_only = [
        "blockstat",
        "ballooninfo",
        "nics",
        "proxmox-support",
        "freemem",
        "balloon",
        "pid",
        "running-machine",
        "running-qemu",
        "serial",
        "agent",
        "lock",
        "spice",
        "clipboard",
        "balloon_min",
        "shares",
        "memhost",
        "pressurecpusome",
        "pressurecpufull",
        "pressureiosome",
        "pressureiofull",
        "pressurememorysome",
        "pressurememoryfull",
    ];
    same_shape(&rec, &ours, &running_only).unwrap();
    // constructed samples
    same_shape(
        &sample("constructed__GET_version.json")["data"],
        &env.get("/version").await,
        &[],
    )
    .unwrap();
    let ours = env.get("/nodes/pve/storage").await;
    for s in sample("constructed__GET_nodes_NODE_storage.json")["data"]
        .as_array()
        .unwrap()
    {
        same_shape(s, &ours[0], &[]).unwrap();
    }
    let ours = env.get("/cluster/resources?type=vm").await;
    let s = &sample("constructed__GET_cluster_resources_type_vm.json")["data"][0];
    same_shape(s, &ours[0], &["template", "name"]).unwrap();
    let errs = sample("constructed__error-responses.json");
    let r = env.call("GET", "/nodes/pve/qemu/999/config", &[]).await;
    assert_eq!(r.body, errs["vm_missing_500"]["body"]);
    assert_eq!(r.reason, errs["vm_missing_500"]["reason"]);
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "abc"), ("cores", "0"), ("foo", "1")],
        )
        .await;
    assert_eq!(r.body, errs["param_error_400"]["body"]);
    let r = env
        .call("GET", "/nodes/pve/qemu/9000/nonexistent", &[])
        .await;
    assert_eq!(r.reason, errs["unknown_path_501"]["reason"]);
    env.sb.shutdown().await;
}

/// Every supported endpoint accepts a minimal valid request: the answer is never a parameter error
/// (400) nor "not implemented" (501). Handler errors (500: VM not running, …) are allowed.
#[tokio::test]
async fn every_supported_endpoint_accepts_a_valid_request() {
    let env = start().await;
    // VM 100 is a template, so start/reboot fail inside the task without needing QEMU
    env.task(
        "POST",
        "/nodes/pve/qemu",
        &[("vmid", "100"), ("agent", "1"), ("template", "1")],
    )
    .await;
    let r = env
        .call("POST", "/nodes/pve/qemu", &[("vmid", "101")])
        .await;
    let upid = r.body["data"].as_str().unwrap().to_string();
    env.wait_task(&upid).await;
    let schema = kiln_sandbox::schema::Schema::get();
    let mut checked = 0;
    for ep in &schema.endpoints {
        if ep.path.ends_with("/upload") {
            continue; // multipart: covered by storage_upload_download_and_delete
        }
        let path = ep
            .path
            .replace("{node}", "pve")
            .replace("{vmid}", "100")
            .replace("{storage}", "local")
            .replace("{volume}", "local:iso/none.iso")
            .replace("{upid}", &upid);
        let mut form: Vec<(&str, String)> = Vec::new();
        for (name, s) in &ep.params {
            if kiln_sandbox::validate::is_optional(s) || ep.path.contains(&format!("{{{name}}}")) {
                continue;
            }
            let v = match name.as_str() {
                "username" => "root@pam".to_string(),
                "vmid" => "102".to_string(),
                "password" => PASSWORD.to_string(),
                "key" => "ret".to_string(),
                "command" if ep.path.ends_with("/agent") => "ping".to_string(),
                "command" => "true".to_string(),
                "pid" => "1".to_string(),
                "file" => "/tmp/x".to_string(),
                "content" if ep.path.contains("storage") => "iso".to_string(),
                "content" => "x".to_string(),
                "newid" => "200".to_string(),
                "disk" => "scsi0".to_string(),
                "size" if ep.path.contains("storage") => "1".to_string(),
                "size" => "+1G".to_string(),
                "filename" if ep.path.contains("download-url") => "x.iso".to_string(),
                "filename" => "vm-100-disk-9".to_string(),
                "url" => "http://127.0.0.1:1/x.iso".to_string(),
                other => panic!(
                    "no sample value for required parameter '{other}' of {} {}",
                    ep.method, ep.path
                ),
            };
            form.push((name.as_str(), v));
        }
        let form_ref: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = env.call(&ep.method, &path, &form_ref).await;
        assert!(
            r.status != 400 && r.status != 501,
            "{} {path} {form_ref:?}: {} {} {}",
            ep.method,
            r.status,
            r.reason,
            r.raw
        );
        checked += 1;
    }
    assert!(checked >= 48, "{checked}");
    env.sb.shutdown().await;
}

/// `import-from` takes a volume id or an absolute path, and the path only from `root@pam` itself
/// (PVE's storage access check: a host path has no storage permissions to check). The refusal
/// comes before any task, so no qemu-img is needed.
#[tokio::test]
async fn import_from_a_host_path_is_for_root_only() {
    let env = start().await;
    let disk = "local-lvm:0,import-from=/var/lib/vz/import/cloud.qcow2";
    // an API token (even root@pam's) may not
    let r = env
        .call(
            "POST",
            "/nodes/pve/qemu",
            &[("vmid", "120"), ("scsi0", disk)],
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.raw);
    assert_eq!(r.reason, "Only root can pass arbitrary filesystem paths.");
    let vms = env.get("/nodes/pve/qemu").await;
    assert_eq!(vms, json!([]), "a refused create left a VM");
    assert_eq!(
        env.task("POST", "/nodes/pve/qemu", &[("vmid", "120")])
            .await,
        "OK"
    );
    let r = env
        .call("POST", "/nodes/pve/qemu/120/config", &[("scsi0", disk)])
        .await;
    assert_eq!(r.status, 500, "{}", r.raw);
    assert_eq!(r.reason, "Only root can pass arbitrary filesystem paths.");
    // a volume id passes the check (and then fails: no such volume)
    let st = env
        .task(
            "POST",
            "/nodes/pve/qemu/120/config",
            &[(
                "scsi0",
                "local-lvm:0,import-from=local:import/missing.qcow2",
            )],
        )
        .await;
    assert!(st.contains("does not exist"), "{st}");
    // root@pam with a ticket passes the check (the path does not exist: the import fails)
    let r = resp(
        env.http
            .post(env.url("/access/ticket"))
            .form(&[("username", "root@pam"), ("password", PASSWORD)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ticket = r.body["data"]["ticket"].as_str().unwrap().to_string();
    let csrf = r.body["data"]["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!(
        "PVEAuthCookie={}",
        percent_encoding::utf8_percent_encode(&ticket, percent_encoding::NON_ALPHANUMERIC)
    );
    let r = resp(
        env.http
            .post(env.url("/nodes/pve/qemu/120/config"))
            .header("Cookie", &cookie)
            .header("CSRFPreventionToken", &csrf)
            .form(&[("scsi0", disk)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{} {}", r.reason, r.raw);
    let st = env.wait_task(r.body["data"].as_str().unwrap()).await;
    assert_ne!(st, "OK");
    assert!(!st.contains("Only root"), "{st}");
}
