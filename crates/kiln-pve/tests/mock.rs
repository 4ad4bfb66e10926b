//! Wire-level tests against wiremock (plain HTTP via `allow_http`).

use kiln_pve::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{body_string_contains, header, method, path, path_regex, query_param};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

const TICKET: &str = "PVE:kiln@pve:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv+/abc==";
const CSRF: &str = "4EEC61E2:lwk7od06fa1+DcPUwBTXCcndyAY";
const UPID: &str = "UPID:pve:000A1B2C:0032F1A0:6745A1C0:qmcreate:9000:kiln@pve:";

struct NoHeader(&'static str);
impl Match for NoHeader {
    fn matches(&self, r: &Request) -> bool {
        !r.headers.contains_key(self.0)
    }
}

fn pw_auth() -> Auth {
    Auth::Password {
        username: "kiln@pve".into(),
        password: Secret::new("s3cret-pw"),
    }
}

fn token_auth() -> Auth {
    Auth::Token {
        token_id: "kiln@pve!build".into(),
        secret: Secret::new("0b9f-secret-uuid"),
    }
}

fn opts(server: &MockServer, auth: Auth) -> ConnectOptions {
    let _ = crypto_provider();
    let mut o = ConnectOptions::new(server.uri(), auth);
    o.allow_http = true;
    o.timeout = Duration::from_secs(5);
    o.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    o
}

fn ok(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({ "data": data }))
}

async fn mount_login(server: &MockServer, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api2/json/access/ticket"))
        .and(body_string_contains("username=kiln%40pve"))
        .and(body_string_contains("password=s3cret-pw"))
        .respond_with(ok(serde_json::json!({
            "username": "kiln@pve", "ticket": TICKET, "CSRFPreventionToken": CSRF,
            "cap": {}
        })))
        .expect(times)
        .mount(server)
        .await;
}

fn cookie() -> String {
    // the ticket is percent-encoded in the cookie
    let enc: String = TICKET
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("PVEAuthCookie={enc}")
}

#[tokio::test]
async fn ticket_login_cookie_and_csrf_on_writes_only() {
    let server = MockServer::start().await;
    mount_login(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/api2/json/version"))
        .and(header("cookie", cookie().as_str()))
        .and(NoHeader("csrfpreventiontoken"))
        .respond_with(ok(
            serde_json::json!({"version":"9.1.9","release":"9.1","repoid":"x"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu"))
        .and(header("cookie", cookie().as_str()))
        .and(header("CSRFPreventionToken", CSRF))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains(
            "vmid=9000&name=tpl&boot=order%3Dscsi0%3Bide2",
        ))
        .respond_with(ok(serde_json::json!(UPID)))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, pw_auth())).await.unwrap();
    assert_eq!(c.version().await.unwrap().major_minor(), Some((9, 1)));
    let mut p = Params::new();
    p.add("name", "tpl").add("boot", "order=scsi0;ide2");
    let upid = c.qemu_create("pve", 9000, &p).await.unwrap().unwrap();
    assert_eq!(upid.task_type, "qmcreate");
    // no secret in Debug output of the client or options
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("s3cret-pw") && !dbg.contains(TICKET) && !dbg.contains(CSRF),
        "{dbg}"
    );
}

#[tokio::test]
async fn ticket_is_renewed_when_old() {
    let server = MockServer::start().await;
    mount_login(&server, 3).await;
    Mock::given(method("GET"))
        .and(path("/api2/json/version"))
        .respond_with(ok(serde_json::json!({"version":"9.1.9","release":"9.1"})))
        .expect(2)
        .mount(&server)
        .await;
    let mut o = opts(&server, pw_auth());
    o.ticket_renew_after = Duration::ZERO;
    let c = Client::connect(o).await.unwrap();
    c.version().await.unwrap();
    c.version().await.unwrap();
}

#[tokio::test]
async fn ticket_is_renewed_once_on_401() {
    let server = MockServer::start().await;
    mount_login(&server, 2).await;
    Mock::given(method("GET"))
        .and(path("/api2/json/version"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/version"))
        .respond_with(ok(serde_json::json!({"version":"9.1.9","release":"9.1"})))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, pw_auth())).await.unwrap();
    c.version().await.unwrap();
}

#[tokio::test]
async fn persistent_401_is_not_looped() {
    let server = MockServer::start().await;
    mount_login(&server, 2).await;
    Mock::given(method("GET"))
        .and(path("/api2/json/version"))
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, pw_auth())).await.unwrap();
    let e = c.version().await.unwrap_err();
    assert_eq!(e.status(), Some(401));
}

#[tokio::test]
async fn token_header_no_login_no_csrf() {
    let server = MockServer::start().await;
    mount_login(&server, 0).await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/9000/sendkey"))
        .and(header(
            "authorization",
            "PVEAPIToken=kiln@pve!build=0b9f-secret-uuid",
        ))
        .and(NoHeader("csrfpreventiontoken"))
        .and(NoHeader("cookie"))
        .and(body_string_contains("key=shift-a"))
        .respond_with(ok(serde_json::Value::Null))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    c.sendkey("pve", 9000, "shift-a").await.unwrap();
}

#[tokio::test]
async fn bad_password_says_user_and_realm_without_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/access/ticket"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            serde_json::json!({"data": null, "message": "authentication failure\n"}),
        ))
        .expect(1) // a 401 is never retried
        .mount(&server)
        .await;
    let e = Client::connect(opts(&server, pw_auth())).await.unwrap_err();
    let a = e.api().unwrap();
    assert_eq!(a.kind, ApiErrorKind::BadCredentials);
    let s = e.to_string();
    assert!(s.contains("401 authentication failure"), "{s}");
    assert!(s.contains("user \"kiln\" in realm \"pve\""), "{s}");
    assert!(!s.contains("s3cret-pw"), "{s}");
}

#[tokio::test]
async fn token_403_mentions_privsep() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu"))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "data": null, "message": "Permission check failed (/vms/9000, VM.Allocate)\n"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let e = c
        .qemu_create("pve", 9000, &Params::new())
        .await
        .unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("403 Permission check failed (/vms/9000, VM.Allocate)"),
        "{s}"
    );
    assert!(s.contains("privsep") && s.contains("kiln@pve!build"), "{s}");
    assert!(!s.contains("0b9f-secret-uuid"), "{s}");
}

#[tokio::test]
async fn proxy_595_is_retried_even_for_writes_596_only_for_reads() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve2/qemu"))
        .respond_with(ResponseTemplate::new(595))
        .expect(4)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve3/qemu"))
        .respond_with(ResponseTemplate::new(596))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve3/qemu"))
        .respond_with(ResponseTemplate::new(596))
        .expect(4)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let e = c
        .qemu_create("pve2", 9000, &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.api().unwrap().kind, ApiErrorKind::NodeUnreachable);
    assert!(e.to_string().contains("\"pve2\""), "{e}");
    let e = c
        .qemu_create("pve3", 9000, &Params::new())
        .await
        .unwrap_err();
    assert_eq!(e.api().unwrap().kind, ApiErrorKind::NodeConnectionBroken);
    assert!(e.to_string().contains("node-to-node"), "{e}");
    let e = c.qemu_list("pve3").await.unwrap_err();
    assert_eq!(e.status(), Some(596));
}

#[tokio::test]
async fn get_retried_after_503_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .respond_with(ok(serde_json::json!("104")))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    assert_eq!(c.next_id().await.unwrap(), 104);
}

#[tokio::test]
async fn lost_answer_retried_for_get_not_for_create() {
    let server = MockServer::start().await;
    let slow = ok(serde_json::json!([])).set_delay(Duration::from_millis(800));
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes"))
        .respond_with(slow.clone())
        .expect(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu"))
        .respond_with(slow)
        .expect(1)
        .mount(&server)
        .await;
    let mut o = opts(&server, token_auth());
    o.timeout = Duration::from_millis(200);
    o.retry.max_attempts = 3;
    let c = Client::connect(o).await.unwrap();
    let e = c.nodes().await.unwrap_err();
    assert!(e.is_maybe_processed(), "{e:?}");
    let e = c
        .qemu_create("pve", 9000, &Params::new())
        .await
        .unwrap_err();
    assert!(e.is_maybe_processed(), "{e:?}");
    assert!(e.to_string().contains("may have been processed"), "{e}");
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let _ = crypto_provider();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut o = ConnectOptions::new(format!("http://127.0.0.1:{port}/api2/json/"), token_auth());
    o.allow_http = true;
    o.retry = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let c = Client::connect(o).await.unwrap();
    let e = c.version().await.unwrap_err();
    assert!(e.is_not_sent(), "{e:?}");
    assert!(e.to_string().contains("could not reach Proxmox VE"), "{e}");
    // password login fails the same way at connect time
    let mut o = ConnectOptions::new(format!("http://127.0.0.1:{port}"), pw_auth());
    o.allow_http = true;
    o.retry = RetryPolicy::none();
    let e = Client::connect(o).await.unwrap_err();
    assert!(e.is_not_sent(), "{e:?}");
}

#[tokio::test]
async fn sendkey_retries_only_before_acting() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/100/sendkey"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "data": null, "message": "unable to connect to VM 100 qmp socket - timeout after 31 retries\n"})))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/100/sendkey"))
        .respond_with(ok(serde_json::Value::Null))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api2/json/nodes/pve/qemu/101/sendkey"))
        .respond_with(ResponseTemplate::new(500).set_body_json(serde_json::json!({
            "data": null, "message": "VM 101 not running\n"})))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    c.sendkey("pve", 100, "ret").await.unwrap();
    let e = c.sendkey("pve", 101, "ret").await.unwrap_err();
    assert!(e.to_string().contains("VM 101 not running"), "{e}");
}

#[tokio::test]
async fn task_failure_carries_exit_status_and_log() {
    let server = MockServer::start().await;
    let status = format!("/api2/json/nodes/pve/tasks/{UPID}/status");
    Mock::given(method("GET"))
        .and(path(status.as_str()))
        .respond_with(ok(
            serde_json::json!({"status":"running","upid":UPID,"type":"qmcreate","id":"9000"}),
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(status.as_str()))
        .respond_with(ok(serde_json::json!({"status":"stopped","exitstatus":"storage 'local-zfs' does not exist","upid":UPID})))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/api2/json/nodes/pve/tasks/UPID:.*:/log$"))
        .and(query_param("start", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": [{"n":1,"t":"creating VM"},{"n":2,"t":"something"},{"n":3,"t":"TASK ERROR: storage 'local-zfs' does not exist"}],
            "total": 3
        })))
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let upid: Upid = UPID.parse().unwrap();
    let mut seen = 0;
    let mut cb = |_: &TaskStatus| seen += 1;
    let e = c
        .wait_task(
            &upid,
            &WaitOptions {
                poll_interval: Duration::from_millis(5),
                timeout: Duration::from_secs(5),
                log_lines_on_failure: 3,
            },
            Some(&mut cb),
        )
        .await
        .unwrap_err();
    assert_eq!(seen, 3);
    match &e {
        Error::TaskFailed {
            exitstatus, log, ..
        } => {
            assert_eq!(exitstatus, "storage 'local-zfs' does not exist");
            assert_eq!(log.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    let s = e.to_string();
    assert!(s.contains("qmcreate") && s.contains("TASK ERROR"), "{s}");
}

#[tokio::test]
async fn task_ok_warnings_and_timeout() {
    let server = MockServer::start().await;
    let up2 = "UPID:pve:000A1B2D:0032F1A0:6745A1C0:qmstart:9000:kiln@pve:";
    Mock::given(method("GET"))
        .and(path(
            format!("/api2/json/nodes/pve/tasks/{UPID}/status").as_str(),
        ))
        .respond_with(ok(
            serde_json::json!({"status":"stopped","exitstatus":"WARNINGS: 1"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            format!("/api2/json/nodes/pve/tasks/{up2}/status").as_str(),
        ))
        .respond_with(ok(serde_json::json!({"status":"running"})))
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let st = c
        .wait_task(&UPID.parse().unwrap(), &WaitOptions::default(), None)
        .await
        .unwrap();
    assert!(st.is_ok());
    let e = c
        .wait_task(
            &up2.parse().unwrap(),
            &WaitOptions {
                poll_interval: Duration::from_millis(5),
                timeout: Duration::from_millis(40),
                log_lines_on_failure: 3,
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::TaskTimeout { .. }), "{e:?}");
    assert!(e.to_string().contains("task_timeout"), "{e}");
    // data:null is a synchronous success
    assert!(c
        .wait_opt(None, &WaitOptions::default())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn typed_responses_tolerate_pve_quirks() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/9000/agent/network-get-interfaces"))
        .respond_with(ok(serde_json::json!({"result": [
            {"name":"lo","hardware-address":"00:00:00:00:00:00","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},
            {"name":"eth0","hardware-address":"bc:24:11:5e:7a:01","ip-addresses":[{"ip-address":"10.0.0.5","ip-address-type":"ipv4","prefix":24}],
             "statistics":{"rx-bytes":1}}
        ]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/qemu/9000/config"))
        .respond_with(ok(serde_json::json!({"memory":"2048","cores":2,"ide2":"local:iso/x.iso,media=cdrom","digest":"abc","unused0":"local:9000/vm-9000-disk-1.raw"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .and(query_param("vmid", "100"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"data":null,"errors":{"vmid":"VM 100 already exists"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/nextid"))
        .and(query_param("vmid", "101"))
        .respond_with(ok(serde_json::json!("101")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/cluster/resources"))
        .and(query_param("type", "vm"))
        .respond_with(ok(serde_json::json!([
            {"id":"qemu/9001","type":"qemu","vmid":9001,"name":"tpl","node":"pve","template":1},
            {"id":"qemu/9000","type":"qemu","vmid":"9000","name":"tpl","node":"pve","template":0},
            {"id":"lxc/200","type":"lxc","vmid":200,"name":"ct","node":"pve"}
        ])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve/storage/local/content"))
        .and(query_param("content", "iso"))
        .respond_with(ok(serde_json::json!([{"volid":"local:iso/ubuntu.iso","size":"1048576","format":"iso","content":"iso"}])))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(
            "/api2/json/nodes/pve/storage/local/content/local:iso%2Fubuntu.iso",
        ))
        .respond_with(ok(serde_json::json!(
            "UPID:pve:000A1B2D:0032F1A0:6745A1C0:imgdel:local%3Aiso%2Fubuntu.iso:kiln@pve:"
        )))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let ifs = c.agent_network_interfaces("pve", 9000).await.unwrap();
    assert_eq!(select_guest_ip(&ifs, None).unwrap().to_string(), "10.0.0.5");
    let cfg = c.qemu_config("pve", 9000, false).await.unwrap();
    assert_eq!(cfg.get("memory"), Some("2048"));
    assert_eq!(cfg.unused_disks(), vec!["unused0"]);
    assert_eq!(cfg.cdrom_drives(), vec!["ide2"]);
    assert!(!c.is_vmid_free(100).await.unwrap());
    assert!(c.is_vmid_free(101).await.unwrap());
    let vm = c.find_vm_by_name("tpl").await.unwrap().unwrap();
    assert_eq!(vm.vmid, Some(9000));
    assert!(c.find_vm_by_id(200).await.unwrap().is_some());
    let v = c
        .find_volume("pve", "local", UploadContent::Iso, "ubuntu.iso")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.size, 1_048_576);
    let t = c
        .delete_volume("pve", "local", &v.volid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.task_type, "imgdel");
}

#[tokio::test]
async fn parameter_errors_are_listed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/qemu"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "data": null, "message": "Parameter verification failed.\n",
            "errors": {"scsi0": "invalid format - unable to parse drive options\n", "cores": "type check ('integer') failed - got 'x'\n"}})))
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let e = c
        .qemu_create("pve", 9000, &Params::new())
        .await
        .unwrap_err();
    let a = e.api().unwrap();
    assert_eq!(a.kind, ApiErrorKind::InvalidParameters);
    assert_eq!(a.errors.len(), 2);
    assert!(
        e.to_string()
            .contains("\n  scsi0: invalid format - unable to parse drive options"),
        "{e}"
    );
}

#[tokio::test]
async fn upload_streams_multipart_with_length_and_progress() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test.iso");
    let data: Vec<u8> = (0..(3 * 1024 * 1024 + 17))
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    struct Multipart(usize);
    impl Match for Multipart {
        fn matches(&self, r: &Request) -> bool {
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let len: usize = r
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = String::from_utf8_lossy(&r.body);
            let c = body.find("name=\"content\"\r\n\r\niso\r\n");
            let ck = body.find("name=\"checksum-algorithm\"\r\n\r\nsha256\r\n");
            let f = body.find("name=\"filename\"; filename=\"test.iso\"");
            ct.starts_with("multipart/form-data; boundary=")
                && len == r.body.len()
                && r.body.len() > self.0
                && matches!((c, ck, f), (Some(a), Some(b), Some(d)) if a < b && b < d)
        }
    }
    Mock::given(method("POST"))
        .and(path("/api2/json/nodes/pve/storage/local/upload"))
        .and(Multipart(data.len()))
        .respond_with(ok(serde_json::json!(
            "UPID:pve:000A1B2D:0032F1A0:6745A1C0:imgcopy::kiln@pve:"
        )))
        .expect(1)
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    let last = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let (l2, c2) = (last.clone(), calls.clone());
    let progress: UploadProgress = Arc::new(move |sent, total| {
        assert!(sent <= total);
        l2.store(sent, Ordering::SeqCst);
        c2.fetch_add(1, Ordering::SeqCst);
    });
    let req = UploadRequest {
        path: file.clone(),
        filename: "test.iso".into(),
        content: UploadContent::Iso,
        checksum: Some(Checksum {
            algorithm: "sha256".into(),
            value: "ab".repeat(32),
        }),
    };
    let upid = c
        .upload("pve", "local", &req, Some(progress))
        .await
        .unwrap();
    assert_eq!(upid.task_type, "imgcopy");
    assert_eq!(last.load(Ordering::SeqCst), data.len() as u64);
    assert!(calls.load(Ordering::SeqCst) >= 2);
    // a missing file is a clear local error
    let mut bad = req.clone();
    bad.path = dir.path().join("missing.iso");
    let e = c.upload("pve", "local", &bad, None).await.unwrap_err();
    assert!(matches!(e, Error::File { .. }), "{e:?}");
    assert!(e.to_string().contains("missing.iso"), "{e}");
}

/// PVE puts the error text in the HTTP reason phrase and (older servers)
/// nowhere else: read it from there.
#[tokio::test]
async fn reason_phrase_is_the_message() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = crypto_provider();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let body = "{\"data\":null}";
            let resp = format!(
                "HTTP/1.1 500 Configuration file 'nodes/pve/qemu-server/999.conf' does not exist\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    let mut o = ConnectOptions::new(format!("http://127.0.0.1:{port}"), token_auth());
    o.allow_http = true;
    let c = Client::connect(o).await.unwrap();
    let e = c.qemu_status("pve", 999).await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert_eq!(
        e.api().unwrap().message,
        "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist"
    );
}

#[tokio::test]
async fn check_node_lists_the_cluster() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes"))
        .respond_with(ok(serde_json::json!([
            {"node":"pve1","status":"online","id":"node/pve1","type":"node"},
            {"node":"pve2","status":"offline"}
        ])))
        .mount(&server)
        .await;
    let c = Client::connect(opts(&server, token_auth())).await.unwrap();
    c.check_node("pve1").await.unwrap();
    let e = c.check_node("PVE1").await.unwrap_err().to_string();
    assert!(
        e.contains("pve1, pve2") && e.contains("did you mean \"pve1\""),
        "{e}"
    );
    let e = c.check_node("pve2").await.unwrap_err().to_string();
    assert!(e.contains("offline"), "{e}");
}
