//! kiln-iso against a local HTTP server (axum on 127.0.0.1:0, started in each test).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use kiln_iso::{Action, ChecksumSpec, Fetcher, IsoError, IsoSource, Planned, Progress};

/// A checksum as the loader hands it over (parsed).
fn spec(text: impl AsRef<str>) -> ChecksumSpec {
    ChecksumSpec::parse(text.as_ref()).expect("a valid iso_checksum")
}
use sha2::Digest as _;

struct Server {
    body: Vec<u8>,
    sums: String,
    log: Mutex<Vec<(String, Option<String>)>>,
    drop_next_full: AtomicBool,
}

type Shared = Arc<Server>;

async fn handler(
    State(s): State<Shared>,
    AxPath(name): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Ok(mut log) = s.log.lock() {
        log.push((name.clone(), range.clone()));
    }
    let resp = Response::builder();
    match name.as_str() {
        "SHA256SUMS" => resp
            .status(200)
            .body(Body::from(s.sums.clone()))
            .unwrap_or_default(),
        "guest.iso" => {
            let len = s.body.len();
            if let Some(start) = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
            {
                let start: usize = start.parse().unwrap_or(0);
                if start >= len {
                    return resp.status(416).body(Body::empty()).unwrap_or_default();
                }
                return resp
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{len}", len - 1),
                    )
                    .header(header::CONTENT_LENGTH, len - start)
                    .body(Body::from(s.body[start..].to_vec()))
                    .unwrap_or_default();
            }
            if s.drop_next_full.swap(false, Ordering::SeqCst) {
                // Send half, then fail the stream: hyper aborts the connection mid-body.
                let half = bytes::Bytes::copy_from_slice(&s.body[..len / 2]);
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
                    vec![Ok(half), Err(std::io::Error::other("simulated drop"))];
                return resp
                    .status(200)
                    .header(header::CONTENT_LENGTH, len)
                    .body(Body::from_stream(futures::stream::iter(chunks)))
                    .unwrap_or_default();
            }
            resp.status(200)
                .header(header::CONTENT_LENGTH, len)
                .body(Body::from(s.body.clone()))
                .unwrap_or_default()
        }
        _ => resp
            .status(404)
            .body(Body::from("not found"))
            .unwrap_or_default(),
    }
}

async fn start() -> (SocketAddr, Shared) {
    let body: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let hex = hex::encode(sha2::Sha256::digest(&body));
    let sums = format!("{}  other.iso\n{hex} *guest.iso\n", "0".repeat(64));
    let state = Arc::new(Server {
        body,
        sums,
        log: Mutex::new(Vec::new()),
        drop_next_full: AtomicBool::new(false),
    });
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(handler))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

fn requests(s: &Shared) -> Vec<(String, Option<String>)> {
    s.log.lock().map(|l| l.clone()).unwrap_or_default()
}

fn sha(s: &Shared) -> String {
    hex::encode(sha2::Sha256::digest(&s.body))
}

fn no_progress(_: &Progress<'_>) {}

fn fetcher(dir: &tempfile::TempDir) -> Fetcher {
    Fetcher::new(dir.path().join("cache"))
        .expect("fetcher")
        .with_base_dir(dir.path().to_path_buf())
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".part"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn first_download_then_cached_without_request() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("sha256:{}", sha(&srv))),
    };
    let max_seen = std::sync::atomic::AtomicU64::new(0);
    let progress = |p: &Progress<'_>| {
        max_seen.fetch_max(p.done, Ordering::SeqCst);
    };
    let got = f.fetch(&src, &progress).await.expect("download");
    assert_eq!(
        got.action,
        Action::Downloaded {
            bytes: srv.body.len() as u64,
            resumed_from: 0
        }
    );
    assert_eq!(std::fs::read(&got.path).expect("read"), srv.body);
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        srv.body.len() as u64,
        "progress reached the total"
    );
    assert!(leftovers(f.cache_dir()).is_empty());
    assert_eq!(requests(&srv).len(), 1);

    let again = f.fetch(&src, &no_progress).await.expect("cached");
    assert_eq!(again.action, Action::Cached);
    assert_eq!(again.path, got.path);
    assert_eq!(requests(&srv).len(), 1, "second run makes no request");
    assert!(matches!(f.plan(&src), Ok(Planned::Cached { .. })));
}

#[tokio::test]
async fn corrupted_cache_is_detected_and_refetched() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(sha(&srv)),
    };
    let got = f.fetch(&src, &no_progress).await.expect("download");
    let mut data = std::fs::read(&got.path).expect("read");
    data[1000] ^= 0xff;
    std::fs::write(&got.path, &data).expect("corrupt");
    let again = f.fetch(&src, &no_progress).await.expect("refetch");
    assert!(
        matches!(again.action, Action::Downloaded { .. }),
        "{:?}",
        again.action
    );
    assert_eq!(std::fs::read(&again.path).expect("read"), srv.body);
    assert_eq!(requests(&srv).len(), 2);
}

#[tokio::test]
async fn interrupted_download_resumes_with_range_in_one_call() {
    let (addr, srv) = start().await;
    srv.drop_next_full.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("sha256:{}", sha(&srv))),
    };
    let got = f.fetch(&src, &no_progress).await.expect("resumed download");
    assert_eq!(std::fs::read(&got.path).expect("read"), srv.body);
    let reqs = requests(&srv);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].1, None);
    let range = reqs[1]
        .1
        .clone()
        .expect("second request has a Range header");
    let start: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .expect("range start");
    assert!(start > 0, "{range}");
    assert_eq!(
        got.action,
        Action::Downloaded {
            bytes: srv.body.len() as u64,
            resumed_from: start
        }
    );
}

#[tokio::test]
async fn interrupted_download_resumes_across_runs_and_never_leaves_the_final_name() {
    let (addr, srv) = start().await;
    srv.drop_next_full.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir).attempts(1);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("sha256:{}", sha(&srv))),
    };
    let err = f
        .fetch(&src, &no_progress)
        .await
        .expect_err("first run is cut");
    assert!(matches!(err, IsoError::Network { .. }), "{err}");
    let final_path = f.cache_path(&src);
    assert!(
        !final_path.exists(),
        "no half-written file under the final name"
    );
    assert_eq!(leftovers(f.cache_dir()).len(), 1);
    match f.plan(&src) {
        Ok(Planned::Download { partial, .. }) => assert!(partial > 0),
        other => panic!("{other:?}"),
    }
    let got = f
        .fetch(&src, &no_progress)
        .await
        .expect("second run resumes");
    assert!(
        matches!(got.action, Action::Downloaded { resumed_from, .. } if resumed_from > 0),
        "{:?}",
        got.action
    );
    assert_eq!(std::fs::read(&final_path).expect("read"), srv.body);
    assert!(requests(&srv)[1].1.is_some());
    assert!(leftovers(f.cache_dir()).is_empty());
}

#[tokio::test]
async fn file_checksum_url_remote_and_local() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("file:http://{addr}/SHA256SUMS")),
    };
    let got = f.fetch(&src, &no_progress).await.expect("download");
    assert_eq!(got.digest.as_ref().map(|d| d.hex.clone()), Some(sha(&srv)));
    assert_eq!(requests(&srv).len(), 2, "SHA256SUMS + ISO");
    let again = f.fetch(&src, &no_progress).await.expect("cached");
    assert_eq!(again.action, Action::Cached);
    assert_eq!(
        requests(&srv).len(),
        2,
        "no request at all on the second run, not even for SHA256SUMS"
    );
    let mut data = std::fs::read(&got.path).expect("read");
    data[7] ^= 1;
    std::fs::write(&got.path, data).expect("corrupt");
    let refetched = f.fetch(&src, &no_progress).await.expect("refetch");
    assert!(matches!(refetched.action, Action::Downloaded { .. }));
    assert_eq!(
        requests(&srv).len(),
        3,
        "only the ISO is fetched again: the digest is on record"
    );

    // file:./local checksum file, BSD format
    std::fs::write(
        dir.path().join("SUMS"),
        format!("SHA256 (guest.iso) = {}\n", sha(&srv)),
    )
    .expect("write");
    let local = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec("file:./SUMS"),
    };
    let got = f
        .fetch(&local, &no_progress)
        .await
        .expect("download with local sums");
    assert!(matches!(got.action, Action::Downloaded { .. }));

    // a checksum file without our file name
    std::fs::write(
        dir.path().join("OTHER"),
        format!("{}  other.iso\n", sha(&srv)),
    )
    .expect("write");
    let none = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec("file:./OTHER"),
    };
    let err = f.fetch(&none, &no_progress).await.expect_err("no entry");
    assert!(matches!(err, IsoError::ChecksumNotFound { .. }), "{err}");
}

#[tokio::test]
async fn checksum_mismatch_names_expected_got_and_url() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let url = format!("http://{addr}/guest.iso");
    let src = IsoSource {
        urls: vec![url.clone()],
        checksum: spec(format!("sha256:{}", "ab".repeat(32))),
    };
    let err = f.fetch(&src, &no_progress).await.expect_err("mismatch");
    let msg = err.to_string();
    assert!(matches!(err, IsoError::ChecksumMismatch { .. }));
    assert!(
        msg.contains(&"ab".repeat(32)) && msg.contains(&sha(&srv)) && msg.contains(&url),
        "{msg}"
    );
    assert!(!f.cache_path(&src).exists());
    assert!(
        leftovers(f.cache_dir()).is_empty(),
        "a bad download is removed"
    );
}

#[tokio::test]
async fn not_found_is_typed_and_next_url_is_tried() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let missing = IsoSource {
        urls: vec![format!("http://{addr}/gone.iso")],
        checksum: spec(sha(&srv)),
    };
    match f.fetch(&missing, &no_progress).await {
        Err(e @ IsoError::Http { status: 404, .. }) => {
            assert!(e.to_string().contains("check iso_url"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let both = IsoSource {
        urls: vec![
            format!("http://{addr}/gone.iso"),
            format!("http://{addr}/guest.iso"),
        ],
        checksum: spec(sha(&srv)),
    };
    let got = f
        .fetch(&both, &no_progress)
        .await
        .expect("second url works");
    assert!(got.url.ends_with("/guest.iso"));
    let refused = IsoSource {
        urls: vec!["http://127.0.0.1:1/x.iso".into()],
        checksum: spec(sha(&srv)),
    };
    assert!(matches!(
        f.attempts(1).fetch(&refused, &no_progress).await,
        Err(IsoError::Network { .. })
    ));
}

#[tokio::test]
async fn local_files_are_verified_in_place() {
    let (_addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let iso = dir.path().join("guest.iso");
    std::fs::write(&iso, &srv.body).expect("write");
    let f = fetcher(&dir);
    for url in [
        format!("file://{}", iso.display()),
        "guest.iso".to_string(),
        "./guest.iso".to_string(),
    ] {
        let src = IsoSource {
            urls: vec![url.clone()],
            checksum: spec(format!("sha256:{}", sha(&srv))),
        };
        let got = f.fetch(&src, &no_progress).await.expect("local");
        assert_eq!(got.action, Action::Local, "{url}");
        assert_eq!(
            got.path,
            if url.starts_with("file://") {
                iso.clone()
            } else {
                dir.path().join(&url)
            }
        );
    }
    let bad = IsoSource {
        urls: vec!["guest.iso".into()],
        checksum: spec(format!("md5:{}", "0".repeat(32))),
    };
    assert!(matches!(
        f.fetch(&bad, &no_progress).await,
        Err(IsoError::ChecksumMismatch { .. })
    ));
    let gone = IsoSource {
        urls: vec!["nope.iso".into()],
        checksum: spec("none"),
    };
    assert!(matches!(
        f.fetch(&gone, &no_progress).await,
        Err(IsoError::LocalMissing { .. })
    ));
    assert!(matches!(
        f.plan(&gone),
        Ok(Planned::Local { exists: false, .. })
    ));
    assert!(matches!(
        f.fetch(
            &IsoSource {
                urls: vec![],
                checksum: spec("none")
            },
            &no_progress
        )
        .await,
        Err(IsoError::NoUrls)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fetches_of_one_iso_download_it_once() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("sha256:{}", sha(&srv))),
    };
    let (f1, f2) = (fetcher(&dir), fetcher(&dir));
    let (a, b) = tokio::join!(f1.fetch(&src, &no_progress), f2.fetch(&src, &no_progress));
    let mut actions = vec![a.expect("first").action, b.expect("second").action];
    actions.sort_by_key(|a| matches!(a, Action::Cached));
    assert!(
        matches!(actions[0], Action::Downloaded { .. }),
        "{actions:?}"
    );
    assert_eq!(actions[1], Action::Cached);
    assert_eq!(
        requests(&srv).len(),
        1,
        "the second fetch waited for the first and found the file cached"
    );
}

#[tokio::test]
async fn a_stale_part_file_is_discarded_after_a_mismatch() {
    let (addr, srv) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = fetcher(&dir);
    let src = IsoSource {
        urls: vec![format!("http://{addr}/guest.iso")],
        checksum: spec(format!("sha256:{}", sha(&srv))),
    };
    std::fs::create_dir_all(f.cache_dir()).expect("mkdir");
    let mut part = f.cache_path(&src).into_os_string();
    part.push(".part");
    std::fs::write(&part, vec![0x42u8; 100_000]).expect("stale part");
    let got = f.fetch(&src, &no_progress).await.expect("download");
    assert_eq!(
        got.action,
        Action::Downloaded {
            bytes: srv.body.len() as u64,
            resumed_from: 0
        }
    );
    assert_eq!(std::fs::read(&got.path).expect("read"), srv.body);
    let reqs = requests(&srv);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].1.as_deref(), Some("bytes=100000-"));
    assert_eq!(reqs[1].1, None);
}
