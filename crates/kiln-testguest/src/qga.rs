//! A minimal blocking qemu-guest-agent client over the virtio-serial chardev socket.
//! Each call opens the socket, resynchronises with `guest-sync-delimited` (skipping stale
//! replies, as the protocol requires), sends one command and reads its reply.

use crate::{io, Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Qga {
    path: PathBuf,
    timeout: Duration,
}

impl Qga {
    /// `path`: the unix socket of `-chardev socket,id=qga0,server=on,wait=off`.
    pub fn new(path: &Path) -> Qga {
        Qga {
            path: path.to_path_buf(),
            timeout: Duration::from_secs(3),
        }
    }

    /// Run `execute` (with optional arguments) and return its `return` value.
    /// Fails (quickly) while the agent is not running yet: callers poll.
    pub fn execute(&self, execute: &str, args: Option<Value>) -> Result<Value> {
        let s = UnixStream::connect(&self.path)
            .map_err(io(format!("connect QGA {}", self.path.display())))?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(io("QGA timeout"))?;
        let mut w = s.try_clone().map_err(io("clone QGA socket"))?;
        let mut r = BufReader::new(s);
        let id = u64::from(std::process::id()) * 1000 + u64::from(rand_u16());
        let sync = json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } });
        w.write_all(format!("{sync}\n").as_bytes())
            .map_err(io("write QGA"))?;
        loop {
            let line = read_line(&mut r)?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("return").and_then(Value::as_u64) == Some(id) {
                    break;
                }
            }
        }
        let mut msg = json!({ "execute": execute });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        w.write_all(format!("{msg}\n").as_bytes())
            .map_err(io("write QGA"))?;
        let line = read_line(&mut r)?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| Error::Protocol(format!("bad QGA reply {line:?}: {e}")))?;
        if let Some(e) = v.get("error") {
            return Err(Error::Protocol(format!("{execute}: {e}")));
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }

    /// `guest-network-get-interfaces` reduced to (name, IPv4 addresses).
    pub fn ipv4_addresses(&self) -> Result<Vec<(String, Vec<String>)>> {
        let r = self.execute("guest-network-get-interfaces", None)?;
        Ok(parse_interfaces(&r))
    }
}

/// (interface name, IPv4 addresses) from a `guest-network-get-interfaces` reply.
pub fn parse_interfaces(r: &Value) -> Vec<(String, Vec<String>)> {
    r.as_array()
        .map(|ifs| {
            ifs.iter()
                .map(|i| {
                    let name = i["name"].as_str().unwrap_or("").to_string();
                    let ips = i["ip-addresses"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter(|x| x["ip-address-type"] == "ipv4")
                                .filter_map(|x| x["ip-address"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    (name, ips)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_line(r: &mut BufReader<UnixStream>) -> Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).map_err(io("read QGA"))?;
    if n == 0 {
        return Err(Error::Protocol("QGA connection closed".into()));
    }
    // guest-sync-delimited: the reply is preceded by a 0xFF sentinel byte (not UTF-8)
    buf.retain(|b| *b != 0xff);
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t % 1000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_reply() {
        let v = json!([
            {"name": "lo", "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "ens18", "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}]}
        ]);
        let r = parse_interfaces(&v);
        assert_eq!(r[1], ("ens18".to_string(), vec!["10.0.2.15".to_string()]));
        assert_eq!(r[0].1, vec!["127.0.0.1".to_string()]);
    }
}
