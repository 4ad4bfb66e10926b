//! Packer's boot-command key grammar, mapped to Proxmox VE `sendkey` names.
//!
//! Grammar (Packer SDK `bootcommand/boot_command.pigeon`, reimplemented):
//!
//! * `<wait>` = 1 s; `<waitN>` = N seconds (`N` is `0` or has no leading zero;
//!   `<wait0>` waits 1 s like Packer); `<waitD>` with a Go duration
//!   (`<wait1m30s>`, `<wait500ms>`, `<wait1.5s>`; units ns us µs ms s m h).
//!   `wait` is case-sensitive, as in Packer.
//! * `<xOn>` / `<xOff>`: hold / release the single character `x`.
//! * `<name>`, `<nameOn>`, `<nameOff>`: special keys, case-insensitive
//!   (`<enter>`, `<F10>`, `<leftCtrlOn>`). Names are matched in Packer's
//!   order and the first matching name is final (`<delete>` is typed
//!   literally because `del` matches first and `ete>` does not close it).
//! * anything else, including a `<` that does not start a valid tag, is typed
//!   literally, character by character.
//!
//! Differences from Packer (all fixes of its bugs): `<pageUp>`/`<pageDown>`
//! send the valid QEMU names `pgup`/`pgdn` (Packer sends the invalid
//! `pageup`); `<leftCommand>`/`<leftMeta>` → `meta_l`, `<leftOption>` →
//! `alt` (Packer sends unmapped names); a newline (LF or CRLF) or tab in the
//! text is typed as `ret`/`tab`; characters a US keyboard cannot type are a
//! parse error with their offset instead of a failed `sendkey` mid-typing;
//! a chord never repeats a key (`<leftShiftOn>A` → `shift-a`, not
//! `shift-shift-a`).

use std::time::Duration;

/// One thing to do while typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this `sendkey` value (a QEMU qcode chord like `shift-a`).
    Key(String),
    /// Sleep.
    Wait(Duration),
}

/// An [`Action`] with the byte range of the source text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Byte offset of the source text.
    pub offset: usize,
    /// Byte length of the source text.
    pub len: usize,
}

/// A boot command that cannot be typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("boot command: {message} at byte {offset}")]
pub struct ParseError {
    /// Byte offset in the (joined, rendered) boot command.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Packer's special key names, in Packer's match order (first match wins),
/// plus kiln's additions at the end (leftCommand, leftOption, …).
pub const SPECIAL: &[&str] = &[
    "bs",
    "del",
    "enter",
    "esc",
    "f10",
    "f11",
    "f12",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "f6",
    "f7",
    "f8",
    "f9",
    "return",
    "tab",
    "up",
    "down",
    "spacebar",
    "insert",
    "home",
    "end",
    "pageUp",
    "pageDown",
    "leftAlt",
    "leftCtrl",
    "leftMeta",
    "leftShift",
    "rightAlt",
    "rightCtrl",
    "rightMeta",
    "rightShift",
    "leftSuper",
    "rightSuper",
    "leftCommand",
    "rightCommand",
    "leftOption",
    "rightOption",
    "left",
    "right",
    "menu",
];

/// `sendkey` name of a special key (lower-cased Packer name).
pub fn special_key_name(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "bs" => "backspace",
        "del" => "delete",
        "enter" | "return" => "ret",
        "esc" => "esc",
        "tab" => "tab",
        "spacebar" => "spc",
        "insert" => "insert",
        "home" => "home",
        "end" => "end",
        "up" => "up",
        "down" => "down",
        "left" => "left",
        "right" => "right",
        "pageup" => "pgup",
        "pagedown" => "pgdn",
        "f1" => "f1",
        "f2" => "f2",
        "f3" => "f3",
        "f4" => "f4",
        "f5" => "f5",
        "f6" => "f6",
        "f7" => "f7",
        "f8" => "f8",
        "f9" => "f9",
        "f10" => "f10",
        "f11" => "f11",
        "f12" => "f12",
        "leftalt" | "leftoption" => "alt",
        "rightalt" | "rightoption" => "alt_r",
        "leftctrl" => "ctrl",
        "rightctrl" => "ctrl_r",
        "leftshift" | "rightshift" => "shift",
        "leftsuper" | "leftmeta" | "leftcommand" => "meta_l",
        "rightsuper" | "rightmeta" | "rightcommand" => "meta_r",
        "menu" => "menu",
        _ => return None,
    })
}

/// `sendkey` chord for one character on a US keyboard (`a`, `shift-a`,
/// `shift-1`, `minus`, `spc`, …); `None` if it cannot be typed.
pub fn char_key(c: char) -> Option<String> {
    let plain = |s: &str| Some(s.to_string());
    let shift = |s: &str| Some(format!("shift-{s}"));
    match c {
        'a'..='z' | '0'..='9' => Some(c.to_string()),
        'A'..='Z' => Some(format!("shift-{}", c.to_ascii_lowercase())),
        ' ' => plain("spc"),
        '\n' | '\r' => plain("ret"),
        '\t' => plain("tab"),
        '.' => plain("dot"),
        ',' => plain("comma"),
        ';' => plain("semicolon"),
        '*' => plain("asterisk"),
        '-' => plain("minus"),
        '[' => plain("bracket_left"),
        ']' => plain("bracket_right"),
        '=' => plain("equal"),
        '\'' => plain("apostrophe"),
        '`' => plain("grave_accent"),
        '/' => plain("slash"),
        '\\' => plain("backslash"),
        '!' => shift("1"),
        '@' => shift("2"),
        '#' => shift("3"),
        '$' => shift("4"),
        '%' => shift("5"),
        '^' => shift("6"),
        '&' => shift("7"),
        '(' => shift("9"),
        ')' => shift("0"),
        '{' => shift("bracket_left"),
        '}' => shift("bracket_right"),
        '"' => shift("apostrophe"),
        '+' => shift("equal"),
        '_' => shift("minus"),
        ':' => shift("semicolon"),
        '<' => shift("comma"),
        '>' => shift("dot"),
        '~' => shift("grave_accent"),
        '?' => shift("slash"),
        '|' => shift("backslash"),
        _ => None,
    }
}

enum Token {
    Wait(Duration),
    Char(char, Hold),
    Special(String, Hold),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Press,
    On,
    Off,
}

/// A `<waitXX>` argument: Packer's grammar (`( Number TimeUnit )+`, Number = `-`? Integer
/// (`.` Digit+)?) decides whether `s` is a duration at all (`None`: it is not); its value is
/// Go's `time.ParseDuration` of the text ([`crate::duration::parse_go_duration`]), refused when
/// negative.
fn go_duration(s: &str) -> Option<Result<Duration, String>> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            i += 1;
        }
        // Integer = '0' / [1-9][0-9]*
        if i < b.len() && b[i] == b'0' {
            i += 1;
        } else if i < b.len() && (b'1'..=b'9').contains(&b[i]) {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            return None;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        let rest = &s[i..];
        let len = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(*u))
            .map(|u| u.len())?;
        i += len;
    }
    if s.is_empty() {
        return None;
    }
    let nanos = match crate::duration::parse_go_duration(s) {
        Ok(n) => n,
        Err(m) => return Some(Err(m)),
    };
    if nanos < 0 {
        return Some(Err(format!("Expecting a positive wait value. Got {s}")));
    }
    if nanos > 1_000_000_000 * 1_000_000_000 {
        return Some(Err(format!("wait value {s} is too large")));
    }
    Some(Ok(Duration::from_nanos(nanos as u64)))
}

/// Try to read a tag at `s` (which starts with `<`). Returns the token and
/// its byte length, or `None` when the `<` is a literal.
fn tag(s: &str) -> Option<Result<(Token, usize), ParseError>> {
    let body = &s[1..];
    // Wait
    if let Some(rest) = body.strip_prefix("wait") {
        if let Some(end) = rest.find('>') {
            let arg = &rest[..end];
            let len = 1 + 4 + end + 1;
            if arg.is_empty() {
                return Some(Ok((Token::Wait(Duration::from_secs(1)), len)));
            }
            // Duration first, then Integer (PEG order)
            if let Some(d) = go_duration(arg) {
                return Some(match d {
                    Ok(d) => Ok((Token::Wait(d), len)),
                    Err(m) => Err(ParseError {
                        offset: 0,
                        message: m,
                    }),
                });
            }
            if arg == "0" {
                return Some(Ok((Token::Wait(Duration::from_secs(1)), len)));
            }
            let b = arg.as_bytes();
            if (b'1'..=b'9').contains(&b[0]) && b.iter().all(u8::is_ascii_digit) {
                if let Ok(n) = arg.parse::<u64>() {
                    return Some(Ok((Token::Wait(Duration::from_secs(n)), len)));
                }
            }
        }
    }
    // CharToggle: '<' any-char ('on'|'off') '>'
    if let Some(c) = body.chars().next() {
        let after = &body[c.len_utf8()..];
        for (word, hold) in [("on", Hold::On), ("off", Hold::Off)] {
            let ab = after.as_bytes();
            if ab.len() > word.len()
                && ab[..word.len()].eq_ignore_ascii_case(word.as_bytes())
                && ab[word.len()] == b'>'
            {
                return Some(Ok((
                    Token::Char(c, hold),
                    1 + c.len_utf8() + word.len() + 1,
                )));
            }
        }
    }
    // Special: first matching name is final.
    let name = SPECIAL.iter().find(|n| {
        body.len() >= n.len() && body.as_bytes()[..n.len()].eq_ignore_ascii_case(n.as_bytes())
    })?;
    let after = &body[name.len()..];
    for (word, hold) in [("", Hold::Press), ("on", Hold::On), ("off", Hold::Off)] {
        let ab = after.as_bytes();
        if ab.len() > word.len()
            && ab[..word.len()].eq_ignore_ascii_case(word.as_bytes())
            && ab[word.len()] == b'>'
        {
            return Some(Ok((
                Token::Special(name.to_ascii_lowercase(), hold),
                1 + name.len() + word.len() + 1,
            )));
        }
    }
    None
}

/// Parse a boot command into [`Step`]s (actions with source spans).
pub fn parse_steps(cmd: &str) -> Result<Vec<Step>, ParseError> {
    let mut out = Vec::new();
    // held keys, in the order they were pressed: specials first, then literals
    let mut held_special: Vec<String> = Vec::new();
    let mut held_chars: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        let rest = &cmd[i..];
        let (tok, len) = if rest.starts_with('<') {
            match tag(rest) {
                Some(Ok(t)) => t,
                Some(Err(mut e)) => {
                    e.offset = i;
                    return Err(e);
                }
                None => (Token::Char('<', Hold::Press), 1),
            }
        } else if rest.starts_with("\r\n") {
            // CRLF line ending: one Enter, not two
            i += 1;
            continue;
        } else {
            let c = rest.chars().next().unwrap_or('\0');
            (Token::Char(c, Hold::Press), c.len_utf8())
        };
        let mut press = |key: String| {
            let mut parts: Vec<String> = Vec::new();
            for h in held_special.iter().chain(held_chars.iter()) {
                for p in h.split('-') {
                    if !parts.iter().any(|x| x == p) {
                        parts.push(p.to_string());
                    }
                }
            }
            for p in key.split('-') {
                if !parts.iter().any(|x| x == p) {
                    parts.push(p.to_string());
                }
            }
            out.push(Step {
                action: Action::Key(parts.join("-")),
                offset: i,
                len,
            });
        };
        match tok {
            Token::Wait(d) => out.push(Step {
                action: Action::Wait(d),
                offset: i,
                len,
            }),
            Token::Char(c, hold) => {
                let key = char_key(c).ok_or_else(|| ParseError {
                    offset: i,
                    message: format!(
                        "character {c:?} cannot be typed with sendkey on a US keyboard layout"
                    ),
                })?;
                match hold {
                    Hold::Press => press(key),
                    Hold::On => {
                        if !held_chars.contains(&key) {
                            held_chars.push(key)
                        }
                    }
                    Hold::Off => held_chars.retain(|k| *k != key),
                }
            }
            Token::Special(name, hold) => {
                let key = special_key_name(&name)
                    .ok_or_else(|| ParseError {
                        offset: i,
                        message: format!("unknown special key <{name}>"),
                    })?
                    .to_string();
                match hold {
                    Hold::Press => press(key),
                    Hold::On => {
                        if !held_special.contains(&key) {
                            held_special.push(key)
                        }
                    }
                    Hold::Off => held_special.retain(|k| *k != key),
                }
            }
        }
        i += len;
    }
    Ok(out)
}

/// Parse a boot command into actions: one [`Action::Key`] per `sendkey` call,
/// [`Action::Wait`] for `<wait…>`.
pub fn parse(cmd: &str) -> Result<Vec<Action>, ParseError> {
    Ok(parse_steps(cmd)?.into_iter().map(|s| s.action).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Action {
        Action::Key(s.to_string())
    }
    fn w(ms: u64) -> Action {
        Action::Wait(Duration::from_millis(ms))
    }
    fn keys(s: &str) -> Vec<String> {
        parse(s)
            .unwrap()
            .into_iter()
            .map(|a| match a {
                Action::Key(k) => k,
                Action::Wait(d) => format!("wait{}ms", d.as_millis()),
            })
            .collect()
    }

    #[test]
    fn ubuntu_autoinstall() {
        let s =
            r"e<down><down><down><end> autoinstall ds=nocloud-net\;s=http://10.0.2.2:8888/<f10>";
        let want = "e down down down end spc a u t o i n s t a l l spc d s equal n o c l o u d minus n e t backslash semicolon s equal h t t p shift-semicolon slash slash 1 0 dot 0 dot 2 dot 2 shift-semicolon 8 8 8 8 slash f10";
        assert_eq!(keys(s).join(" "), want);
    }

    #[test]
    fn waits() {
        assert_eq!(parse("<wait>").unwrap(), vec![w(1000)]);
        assert_eq!(parse("<wait0>").unwrap(), vec![w(1000)]);
        assert_eq!(parse("<wait5>").unwrap(), vec![w(5000)]);
        assert_eq!(parse("<wait10s>").unwrap(), vec![w(10_000)]);
        assert_eq!(parse("<wait1m30s>").unwrap(), vec![w(90_000)]);
        assert_eq!(parse("<wait500ms>").unwrap(), vec![w(500)]);
        assert_eq!(parse("<wait1.5s>").unwrap(), vec![w(1500)]);
        assert_eq!(parse("<wait1h>").unwrap(), vec![w(3_600_000)]);
        assert_eq!(
            parse("<wait2µs>").unwrap(),
            vec![Action::Wait(Duration::from_nanos(2000))]
        );
        // not waits: typed literally
        assert_eq!(
            keys("<waitX>").join(" "),
            "shift-comma w a i t shift-x shift-dot"
        );
        assert_eq!(keys("<wait05>").len(), 8);
        assert_eq!(keys("<Wait>").len(), 6);
        assert_eq!(keys("<wait 5>").len(), 8);
        assert_eq!(keys("<wait5x>").len(), 8);
        // negative: validation error like Packer
        let e = parse("ab<wait-1s>").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(e.message.contains("positive"), "{e}");
    }

    #[test]
    fn specials_case_insensitive() {
        assert_eq!(
            keys("<ENTER><Return><esc><TAB><bs><del><spacebar><insert><home><end><up><down><left><right><pageUp><PAGEDOWN><menu>"),
            vec!["ret", "ret", "esc", "tab", "backspace", "delete", "spc", "insert", "home", "end", "up", "down", "left", "right", "pgup", "pgdn", "menu"]
        );
        let f: Vec<String> = (1..=12).map(|n| format!("f{n}")).collect();
        let src: String = (1..=12).map(|n| format!("<F{n}>")).collect();
        assert_eq!(keys(&src), f);
        assert_eq!(keys("<leftAlt><rightAlt><leftCtrl><rightCtrl><leftShift><rightShift><leftSuper><rightSuper>"),
            vec!["alt", "alt_r", "ctrl", "ctrl_r", "shift", "shift", "meta_l", "meta_r"]);
    }

    #[test]
    fn first_match_is_final() {
        // "del" matches first, then "ete>" does not close it: typed literally
        assert_eq!(keys("<delete>").len(), 8);
        assert_eq!(keys("<enterx>").len(), 8);
        assert_eq!(keys("<f13>").len(), 5);
        assert_eq!(keys("<foo>").join(" "), "shift-comma f o o shift-dot");
        assert_eq!(keys("<").join(" "), "shift-comma");
        assert_eq!(keys("a<b").join(" "), "a shift-comma b");
        assert_eq!(keys("<<enter>").join(" "), "shift-comma ret");
        assert_eq!(keys("<>").join(" "), "shift-comma shift-dot");
    }

    #[test]
    fn holds_and_chords() {
        assert_eq!(keys("<leftCtrlOn>c<leftCtrlOff>"), vec!["ctrl-c"]);
        assert_eq!(keys("<leftAltOn><f4><leftAltOff>"), vec!["alt-f4"]);
        assert_eq!(
            keys("<leftCtrlOn><leftAltOn><del><leftAltOff><leftCtrlOff>"),
            vec!["ctrl-alt-delete"]
        );
        assert_eq!(keys("<leftShiftOn><tab><leftShiftOff>"), vec!["shift-tab"]);
        assert_eq!(
            keys("<leftShiftOn>hi<rightAltOn>w<leftShiftOff><rightAltOff>x"),
            vec!["shift-h", "shift-i", "shift-alt_r-w", "x"]
        );
        assert_eq!(
            keys("<cOn><leftShiftOn>n<leftShiftOff><cOff>"),
            vec!["shift-c-n"]
        );
        assert_eq!(keys("<leftCtrlOn>A<leftCtrlOff>"), vec!["ctrl-shift-a"]);
        assert_eq!(keys("<leftShiftOn>A<leftShiftOff>"), vec!["shift-a"]);
        assert!(keys("<leftCtrlOn><leftCtrlOff>").is_empty());
        assert_eq!(keys("<leftCtrlon>c<leftctrlOFF>c"), vec!["ctrl-c", "c"]);
        assert_eq!(keys("<bOn>x<bOff>"), vec!["b-x"]);
        // <bs> is not the toggle of 'b'
        assert_eq!(keys("<bs>"), vec!["backspace"]);
        assert_eq!(keys("<upOn><down><upOff>"), vec!["up-down"]);
    }

    #[test]
    fn characters() {
        let s = "!@#$%^&*()_+-=[]{};':\",./<>?\\|`~ 09azAZ";
        assert_eq!(
            keys(s).join(" "),
            "shift-1 shift-2 shift-3 shift-4 shift-5 shift-6 shift-7 asterisk shift-9 shift-0 shift-minus shift-equal minus equal bracket_left bracket_right shift-bracket_left shift-bracket_right semicolon apostrophe shift-semicolon shift-apostrophe comma dot slash shift-comma shift-dot shift-slash backslash shift-backslash grave_accent shift-grave_accent spc 0 9 a z shift-a shift-z"
        );
        assert_eq!(keys("a\nb\t"), vec!["a", "ret", "b", "tab"]);
        assert_eq!(keys("a\r\nb\r"), vec!["a", "ret", "b", "ret"]);
        let e = parse("ab é").unwrap_err();
        assert_eq!(e.offset, 3);
    }

    #[test]
    fn spans() {
        let s = parse_steps("a<enter><wait5>").unwrap();
        assert_eq!((s[0].offset, s[0].len), (0, 1));
        assert_eq!((s[1].offset, s[1].len), (1, 7));
        assert_eq!((s[2].offset, s[2].len), (8, 7));
        let _ = k("x");
    }

    #[test]
    fn every_key_name_is_a_qemu_qcode() {
        let all = crate::qcodes::QKEYCODES;
        let mut names: Vec<String> = SPECIAL
            .iter()
            .filter_map(|n| special_key_name(n).map(str::to_string))
            .collect();
        for c in (32u8..127).map(char::from).chain(['\n', '\t']) {
            names.push(char_key(c).unwrap());
        }
        for n in names {
            for part in n.split('-') {
                assert!(all.contains(&part), "{part} (in {n}) is not a QEMU qcode");
            }
        }
    }
}
