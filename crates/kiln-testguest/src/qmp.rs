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

/// Time between two keys when typing: Packer's default (5 ms). QEMU feeds queued keys to the guest
/// one per 20 ms (`send-key`'s default 10 ms hold + 10 ms after the release), and the test guest's
/// GRUB takes ~2.5 ms per key under TCG, so nothing is lost at this pace.
pub const KEY_INTERVAL: Duration = Duration::from_millis(5);

/// Guest-physical address of the VGA text buffer (80×25 cells of character + attribute byte).
const VGA_TEXT: u64 = 0xb8000;

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

    /// The guest's screen in VGA text mode (GRUB on BIOS, the kernel's VGA console): 25 lines of
    /// 80 columns, trailing blanks trimmed. Read with QMP `pmemsave` of the text buffer at 0xb8000
    /// into `scratch` (a file QEMU can write). Meaningless in a graphics mode (OVMF's GOP).
    pub fn screen_text(&mut self, scratch: &Path) -> Result<Vec<String>> {
        self.execute(
            "pmemsave",
            Some(json!({ "val": VGA_TEXT, "size": 80 * 25 * 2, "filename": scratch })),
        )?;
        let raw = std::fs::read(scratch).map_err(io(format!("read {}", scratch.display())))?;
        Ok(vga_lines(&raw))
    }

    /// Wait until a line of the VGA text screen contains `needle`; returns the screen.
    pub fn wait_screen(
        &mut self,
        needle: &str,
        scratch: &Path,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let end = Instant::now() + timeout;
        loop {
            let screen = self.screen_text(scratch)?;
            if screen.iter().any(|l| l.contains(needle)) {
                return Ok(screen);
            }
            if Instant::now() >= end {
                return Err(Error::Timeout {
                    what: format!(
                        "{needle:?} on the VGA screen; the screen:\n{}",
                        screen.join("\n")
                    ),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// The text of a VGA text buffer dump (character bytes in code page 437; only ASCII is kept, other
/// characters — GRUB's box drawing — become spaces), one string per 80-column line.
pub fn vga_lines(raw: &[u8]) -> Vec<String> {
    raw.chunks(160)
        .map(|row| {
            let line: String = row
                .chunks(2)
                .map(|cell| match cell[0] {
                    c @ 0x20..=0x7e => c as char,
                    _ => ' ',
                })
                .collect();
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vga_cells_become_lines() {
        let mut raw = vec![0u8; 80 * 25 * 2];
        for (i, b) in b"GNU GRUB".iter().enumerate() {
            raw[2 * i] = *b;
            raw[2 * i + 1] = 0x07;
        }
        raw[160] = 0xda; // a box corner in code page 437
        raw[162] = b'x';
        let lines = vga_lines(&raw);
        assert_eq!(lines.len(), 25);
        assert_eq!(lines[0], "GNU GRUB");
        assert_eq!(lines[1], " x");
        assert_eq!(lines[24], "");
    }
}
