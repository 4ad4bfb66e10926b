//! A tiny HTTP/1.0 server for NoCloud seeds (`/user-data`, `/meta-data`, …), logging each
//! request. Optionally listens inside a network namespace (the listening thread joins it).

use crate::{io, Error, Result};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct SeedServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SeedServer {
    /// Serve `files` (URL path without the leading '/', body) on `bind` (port 0 = any), inside
    /// network namespace `netns` (a name under /run/netns) if given.
    pub fn start(
        bind: SocketAddr,
        files: HashMap<String, Vec<u8>>,
        netns: Option<&str>,
    ) -> Result<SeedServer> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let ns = netns.map(|n| format!("/run/netns/{n}"));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let listener = (|| -> Result<TcpListener> {
                if let Some(ns) = &ns {
                    let f = std::fs::File::open(ns).map_err(io(format!("open {ns}")))?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                        Error::Command {
                            cmd: format!("setns {ns}"),
                            detail: e.to_string(),
                        }
                    })?;
                }
                let l = TcpListener::bind(bind).map_err(io(format!("bind {bind}")))?;
                l.set_nonblocking(true).map_err(io("nonblocking"))?;
                Ok(l)
            })();
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(listener.local_addr().map_err(io("local_addr")));
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        serve(s, peer, &files, &log2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        let addr = rx
            .recv()
            .map_err(|_| Error::Protocol("seed server thread died".into()))??;
        Ok(SeedServer {
            addr,
            log,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Request log lines: "PEER GET /path STATUS".
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether `path` (e.g. "/user-data") was served with 200.
    pub fn served(&self, path: &str) -> bool {
        let want = format!(" GET {path} 200");
        self.requests().iter().any(|l| l.ends_with(&want))
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    s: std::net::TcpStream,
    peer: SocketAddr,
    files: &HashMap<String, Vec<u8>>,
    log: &Mutex<Vec<String>>,
) {
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        match r.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let body = files.get(path.trim_start_matches('/'));
    let (status, body): (&str, &[u8]) = match (method, body) {
        ("GET" | "HEAD", Some(b)) => ("200 OK", b),
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n"),
        _ => ("405 Method Not Allowed", b""),
    };
    if let Ok(mut l) = log.lock() {
        l.push(format!(
            "{peer} {method} {path} {}",
            status.split(' ').next().unwrap_or("")
        ));
    }
    let mut w = s;
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = w.write_all(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_and_logs() {
        let mut files = HashMap::new();
        files.insert("user-data".to_string(), b"#cloud-config\n".to_vec());
        let srv = SeedServer::start("127.0.0.1:0".parse().unwrap(), files, None).unwrap();
        let get = |p: &str| {
            let mut s = std::net::TcpStream::connect(srv.addr()).unwrap();
            write!(s, "GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get("/user-data");
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
        assert!(ok.ends_with("#cloud-config\n"));
        assert!(get("/meta-data").starts_with("HTTP/1.0 404"));
        assert!(srv.served("/user-data"));
        assert!(!srv.served("/meta-data"));
        assert_eq!(srv.requests().len(), 2);
    }
}
