//! A minimal blocking QMP client: connect (retrying while QEMU starts), `qmp_capabilities`,
//! then commands. Events are skipped. Enough for tests: `send-key`, `query-status`,
//! `system_powerdown`, `quit`, and typing a boot command.

use crate::keys::{self, Step};
use crate::{io, Error, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Time between two keys when typing: QEMU/SeaBIOS/GRUB lose keys sent < 0.05 s apart under TCG.
pub const KEY_INTERVAL: Duration = Duration::from_millis(100);

impl Qmp {
    /// Connect to a QMP unix socket, retrying for up to `timeout` while QEMU creates it.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(io(format!("connect QMP {}", path.display()))(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io("QMP socket timeout"))?;
        let writer = stream.try_clone().map_err(io("clone QMP socket"))?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read_msg()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!(
                "unexpected QMP greeting {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read_msg(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(io("read from QMP"))?;
        if n == 0 {
            return Err(Error::Protocol("QMP connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("bad QMP JSON: {e}")))
    }

    /// Run a command and return its `return` value; a QMP `error` becomes [`Error::Protocol`].
    pub fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": cmd });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(io(format!("send QMP {cmd}")))?;
        loop {
            let r = self.read_msg()?;
            if r.get("event").is_some() {
                continue;
            }
            if let Some(e) = r.get("error") {
                return Err(Error::Protocol(format!("{cmd}: {e}")));
            }
            return Ok(r.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Press keys together (QMP `send-key` with qcodes, default hold time).
    pub fn send_key(&mut self, qcodes: &[&str]) -> Result<()> {
        let keys: Vec<Value> = qcodes
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.execute("send-key", Some(json!({ "keys": keys })))
            .map(|_| ())
    }

    /// Type a Packer-style boot command, one `send-key` per key, `interval` apart.
    /// Returns the number of keys sent.
    pub fn type_boot_command(&mut self, cmd: &str, interval: Duration) -> Result<usize> {
        let steps = keys::parse(cmd)?;
        let mut n = 0;
        for s in steps {
            match s {
                Step::Wait(d) => std::thread::sleep(d),
                Step::Keys(k) => {
                    self.send_key(&k)?;
                    n += 1;
                    std::thread::sleep(interval);
                }
            }
        }
        Ok(n)
    }

    /// Like [`Qmp::type_boot_command`], but after each key waits (up to `echo_timeout`) until the
    /// guest wrote something more to its serial log: GRUB echoes every key on the serial
    /// terminal, so this paces typing to a guest slowed down by a busy host (under TCG a starved
    /// guest drops keys that arrive faster than it polls the keyboard). Returns the keys sent.
    pub fn type_boot_command_paced(
        &mut self,
        cmd: &str,
        interval: Duration,
        serial: &crate::serial::SerialLog,
        echo_timeout: Duration,
    ) -> Result<usize> {
        let steps = keys::parse(cmd)?;
        let len = || {
            std::fs::metadata(serial.path())
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut n = 0;
        for s in steps {
            match s {
                Step::Wait(d) => std::thread::sleep(d),
                Step::Keys(k) => {
                    let before = len();
                    self.send_key(&k)?;
                    n += 1;
                    std::thread::sleep(interval);
                    let end = Instant::now() + echo_timeout;
                    while len() == before && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        Ok(n)
    }

    /// `query-status` → the run state ("running", "paused", "shutdown", ...).
    pub fn query_status(&mut self) -> Result<String> {
        let r = self.execute("query-status", None)?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::Protocol(format!("query-status returned {r}")))
    }

    /// Press the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.execute("system_powerdown", None).map(|_| ())
    }

    /// Stop QEMU now.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) | Err(Error::Protocol(_)) => Ok(()), // the socket may close before the reply
            Err(e) => Err(e),
        }
    }
}
