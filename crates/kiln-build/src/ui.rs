//! The user interface of a build: Packer-style lines (`==> proxmox-iso.ubuntu: …`), optional
//! timestamps (`-timestamp-ui`), Packer's machine-readable CSV format (`-machine-readable`),
//! progress bars (only on a TTY) and — in every one of these — secrets masked.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What a masked secret is replaced with (Packer's word).
pub const MASK: &str = "<sensitive>";

/// How lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UiOptions {
    /// `-timestamp-ui`: prefix every line with an RFC 3339 UTC timestamp.
    pub timestamp: bool,
    /// `-machine-readable`: `timestamp,target,type,data…` lines instead of human output.
    pub machine_readable: bool,
}

/// Replaces every known secret by [`MASK`]. Shared by all builds of one run.
#[derive(Debug, Default)]
pub struct Masker {
    secrets: RwLock<Vec<String>>,
}

impl Masker {
    /// Secrets shorter than this are not masked (masking `"1"` would garble every number); they
    /// are rejected loudly by [`Masker::add`]'s return value so callers may warn.
    pub const MIN_LEN: usize = 3;

    pub fn new() -> Self {
        Self::default()
    }

    /// Register a secret. Returns false when it is too short to be masked safely.
    pub fn add(&self, secret: &str) -> bool {
        let s = secret.trim_end_matches(['\n', '\r']);
        if s.chars().count() < Self::MIN_LEN {
            return s.is_empty();
        }
        let mut v = match self.secrets.write() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
            // longest first, so a secret containing another is masked whole
            v.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
        // multi-line secrets (keys, certificates): also mask each long line on its own
        if s.contains('\n') {
            for line in s.lines().map(str::trim).filter(|l| l.len() >= 8) {
                if !v.iter().any(|x| x == line) {
                    v.push(line.to_string());
                }
            }
            v.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
        true
    }

    pub fn mask(&self, text: &str) -> String {
        let v = match self.secrets.read() {
            Ok(v) => v,
            Err(p) => p.into_inner(),
        };
        let mut out = text.to_string();
        for s in v.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

/// Where the lines go.
enum Sink {
    Stdout,
    Capture(Arc<Mutex<Vec<u8>>>),
}

struct Inner {
    opts: UiOptions,
    masker: Arc<Masker>,
    sink: Sink,
    write_lock: Mutex<()>,
    multi: Option<MultiProgress>,
}

/// The run-wide UI. Cheap to clone.
#[derive(Clone)]
pub struct Ui {
    inner: Arc<Inner>,
}

impl Ui {
    /// Write to stdout; progress bars on stderr only when stderr is a terminal and the output is
    /// for humans.
    pub fn stdout(opts: UiOptions, masker: Arc<Masker>) -> Ui {
        let tty = std::io::stderr().is_terminal() && !opts.machine_readable;
        let multi = tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Ui {
            inner: Arc::new(Inner {
                opts,
                masker,
                sink: Sink::Stdout,
                write_lock: Mutex::new(()),
                multi,
            }),
        }
    }

    /// Collect output in memory (tests).
    pub fn capture(opts: UiOptions, masker: Arc<Masker>) -> (Ui, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let ui = Ui {
            inner: Arc::new(Inner {
                opts,
                masker,
                sink: Sink::Capture(buf.clone()),
                write_lock: Mutex::new(()),
                multi: None,
            }),
        };
        (ui, buf)
    }

    pub fn masker(&self) -> &Arc<Masker> {
        &self.inner.masker
    }

    pub fn options(&self) -> UiOptions {
        self.inner.opts
    }

    /// A UI whose lines are prefixed with one build's name (`proxmox-iso.ubuntu`).
    pub fn for_build(&self, name: &str) -> BuildUi {
        BuildUi {
            ui: self.clone(),
            name: name.to_string(),
        }
    }

    /// A line not tied to a build (`==> Builds finished…`).
    pub fn say(&self, msg: &str) {
        self.emit("", "say", &format!("==> {msg}"), msg);
    }

    /// A plain line (`--> proxmox-iso.x: A template was created: 101`).
    pub fn raw(&self, msg: &str) {
        self.emit("", "message", msg, msg);
    }

    /// A machine-readable record (`artifact`, `error-count`, …); nothing in human mode.
    pub fn machine(&self, target: &str, kind: &str, data: &[&str]) {
        if !self.inner.opts.machine_readable {
            return;
        }
        let masked: Vec<String> = data.iter().map(|d| self.inner.masker.mask(d)).collect();
        let refs: Vec<&str> = masked.iter().map(String::as_str).collect();
        self.write_line(&machine_line(unix_now(), target, kind, &refs));
    }

    fn emit(&self, target: &str, kind: &str, human: &str, plain: &str) {
        let m = &self.inner.masker;
        if self.inner.opts.machine_readable {
            let plain = m.mask(plain);
            self.write_line(&machine_line(unix_now(), target, "ui", &[kind, &plain]));
            return;
        }
        let mut text = m.mask(human);
        if self.inner.opts.timestamp {
            text = format!("{}: {text}", rfc3339_now());
        }
        self.write_line(&text);
    }

    fn write_line(&self, line: &str) {
        let _g = self.inner.write_lock.lock();
        match &self.inner.sink {
            Sink::Stdout => {
                if let Some(multi) = &self.inner.multi {
                    // keep bars intact: print above them
                    if multi.println(line).is_ok() {
                        return;
                    }
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Sink::Capture(buf) => {
                if let Ok(mut b) = buf.lock() {
                    b.extend_from_slice(line.as_bytes());
                    b.push(b'\n');
                }
            }
        }
    }
}

/// One build's view of the UI.
#[derive(Clone)]
pub struct BuildUi {
    ui: Ui,
    name: String,
}

impl BuildUi {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ui(&self) -> &Ui {
        &self.ui
    }

    /// A step-level line: `==> proxmox-iso.ubuntu: Creating VM`.
    pub fn say(&self, msg: &str) {
        for l in msg.lines() {
            self.ui
                .emit(&self.name, "say", &format!("==> {}: {l}", self.name), l);
        }
    }

    /// A detail line: `    proxmox-iso.ubuntu: Uploaded ISO to local:iso/x.iso`.
    pub fn message(&self, msg: &str) {
        for l in msg.lines() {
            self.ui
                .emit(&self.name, "message", &format!("    {}: {l}", self.name), l);
        }
    }

    /// An error line: `==> proxmox-iso.ubuntu: <error>`.
    pub fn error(&self, msg: &str) {
        for l in msg.lines() {
            self.ui
                .emit(&self.name, "error", &format!("==> {}: {l}", self.name), l);
        }
    }

    /// Streamed output of a provisioner or tool (`    proxmox-iso.ubuntu: <line>`).
    pub fn output(&self, line: &str) {
        self.message(line);
    }

    /// A progress indicator for `total` bytes (0 = unknown). A bar on a TTY; otherwise a line
    /// at each quarter.
    pub fn progress(&self, label: &str, total: u64) -> Progress {
        let bar = self.ui.inner.multi.as_ref().map(|m| {
            let pb = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::new_spinner()
            };
            let style = ProgressStyle::with_template(
                "{prefix} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let pb = m.add(pb);
            pb.set_style(style);
            pb.set_prefix(format!("    {}:", self.name));
            pb.set_message(self.ui.inner.masker.mask(label));
            pb
        });
        Progress {
            ui: self.clone(),
            label: label.to_string(),
            total,
            done: 0,
            last_quarter: 0,
            bar,
            started: Instant::now(),
        }
    }
}

/// See [`BuildUi::progress`].
pub struct Progress {
    ui: BuildUi,
    label: String,
    total: u64,
    done: u64,
    last_quarter: u64,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if let Some(q) = done.saturating_mul(4).checked_div(self.total) {
            if q > self.last_quarter && q < 4 {
                self.last_quarter = q;
                self.ui.message(&format!("{}: {}%", self.label, q * 25));
            }
        }
    }

    pub fn inc(&mut self, n: u64) {
        let d = self.done.saturating_add(n);
        self.set(d);
    }

    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        let mib = self.done as f64 / (1024.0 * 1024.0);
        let rate = if secs > 0.0 { mib / secs } else { 0.0 };
        self.ui.message(&format!(
            "{}: done, {mib:.1} MiB in {} ({rate:.1} MiB/s)",
            self.label,
            fmt_duration(Duration::from_secs_f64(secs))
        ));
    }
}

/// Packer's machine-readable line: commas in data become `%!(PACKER_COMMA)`, newlines `\n`.
pub fn machine_line(ts: u64, target: &str, kind: &str, data: &[&str]) -> String {
    let esc = |s: &str| {
        s.replace(',', "%!(PACKER_COMMA)")
            .replace('\r', "\\r")
            .replace('\n', "\\n")
    };
    let mut line = format!("{ts},{},{}", esc(target), esc(kind));
    for d in data {
        line.push(',');
        line.push_str(&esc(d));
    }
    line
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `20ms`, `1.2s`, `2m03s`, `1h02m03s` — for step lists and summaries.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        // a key interval of 20 ms must not read "0.0s"
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        let t = d.as_secs();
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        let t = d.as_secs();
        format!("{}h{:02}m{:02}s", t / 3600, (t % 3600) / 60, t % 60)
    }
}

/// Packer's "finished after 12 minutes 3 seconds" wording.
pub fn fmt_duration_words(d: Duration) -> String {
    let t = d.as_secs();
    let (h, m, s) = (t / 3600, (t % 3600) / 60, t % 60);
    let unit = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (h, m) {
        (0, 0) if t == 0 => format!("{} milliseconds", d.as_millis()),
        (0, 0) => unit(s, "second"),
        (0, _) => format!("{} {}", unit(m, "minute"), unit(s, "second")),
        _ => format!(
            "{} {} {}",
            unit(h, "hour"),
            unit(m, "minute"),
            unit(s, "second")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(buf.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn masks_secrets_in_every_line_kind() {
        let m = Arc::new(Masker::new());
        assert!(m.add("hunter22"));
        assert!(m.add("abc-token-uuid"));
        let (ui, buf) = Ui::capture(UiOptions::default(), m.clone());
        let b = ui.for_build("proxmox-iso.t");
        b.say("password is hunter22");
        b.message("token abc-token-uuid here");
        b.error("failed with hunter22");
        ui.say("bye hunter22");
        let out = text(&buf);
        assert!(!out.contains("hunter22"), "{out}");
        assert!(!out.contains("abc-token-uuid"), "{out}");
        assert!(
            out.contains("==> proxmox-iso.t: password is <sensitive>"),
            "{out}"
        );
        assert!(
            out.contains("    proxmox-iso.t: token <sensitive> here"),
            "{out}"
        );
    }

    #[test]
    fn short_secrets_are_refused_and_longest_masked_first() {
        let m = Masker::new();
        assert!(!m.add("ab"));
        assert!(m.add(""));
        m.add("secret");
        m.add("secret-longer");
        assert_eq!(
            m.mask("x secret-longer y secret"),
            "x <sensitive> y <sensitive>"
        );
    }

    #[test]
    fn machine_readable_escapes_like_packer() {
        let m = Arc::new(Masker::new());
        m.add("pw-xyz");
        let (ui, buf) = Ui::capture(
            UiOptions {
                machine_readable: true,
                timestamp: false,
            },
            m,
        );
        ui.for_build("proxmox-iso.a").say("a,b pw-xyz\nnext");
        ui.machine("proxmox-iso.a", "artifact", &["0", "id", "101"]);
        let out = text(&buf);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let first: Vec<&str> = lines[0].splitn(2, ',').collect();
        assert!(first[0].parse::<u64>().is_ok());
        assert_eq!(
            first[1],
            "proxmox-iso.a,ui,say,a%!(PACKER_COMMA)b <sensitive>"
        );
        assert!(lines[2].ends_with(",proxmox-iso.a,artifact,0,id,101"));
    }

    #[test]
    fn timestamp_prefix() {
        let (ui, buf) = Ui::capture(
            UiOptions {
                timestamp: true,
                machine_readable: false,
            },
            Arc::new(Masker::new()),
        );
        ui.for_build("b").say("hello");
        let out = text(&buf);
        // 2026-11-26T04:00:00.123Z: ==> b: hello
        let (ts, rest) = out.split_once(": ").unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{out}"
        );
        assert_eq!(rest.trim_end(), "==> b: hello");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(fmt_duration(Duration::ZERO), "0ms");
        assert_eq!(fmt_duration(Duration::from_secs(123)), "2m03s");
        assert_eq!(
            fmt_duration_words(Duration::from_secs(723)),
            "12 minutes 3 seconds"
        );
        assert_eq!(fmt_duration_words(Duration::from_secs(1)), "1 second");
    }
}
