//! Local stand-in for `kiln_bootcmd::keys::parse` (that crate's parser is not exported yet):
//! Packer's boot-command grammar → `sendkey` qcode chords and waits (behaviour reference §3).
//! Swap for `kiln_bootcmd::keys::parse` once it is public.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Key(String),
    Wait(Duration),
}

fn special(name: &str) -> Option<&'static str> {
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
        "pageup" => "pgup",
        "pagedown" => "pgdn",
        "up" => "up",
        "down" => "down",
        "left" => "left",
        "right" => "right",
        "menu" => "menu",
        "leftalt" => "alt",
        "rightalt" => "alt_r",
        "leftctrl" => "ctrl",
        "rightctrl" => "ctrl_r",
        "leftshift" | "rightshift" => "shift",
        "leftsuper" | "leftcommand" => "meta_l",
        "rightsuper" | "rightcommand" => "meta_r",
        "leftoption" => "alt",
        "rightoption" => "alt_r",
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
        _ => return None,
    })
}

/// A character → (shift?, qcode).
pub fn char_key(c: char) -> Option<(bool, String)> {
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        return Some((false, c.to_string()));
    }
    if c.is_ascii_uppercase() {
        return Some((true, c.to_ascii_lowercase().to_string()));
    }
    let plain = match c {
        ' ' => "spc",
        '.' => "dot",
        ',' => "comma",
        ';' => "semicolon",
        '*' => "asterisk",
        '-' => "minus",
        '[' => "bracket_left",
        ']' => "bracket_right",
        '=' => "equal",
        '\'' => "apostrophe",
        '`' => "grave_accent",
        '/' => "slash",
        '\\' => "backslash",
        _ => "",
    };
    if !plain.is_empty() {
        return Some((false, plain.to_string()));
    }
    let shifted = match c {
        '!' => "1",
        '@' => "2",
        '#' => "3",
        '$' => "4",
        '%' => "5",
        '^' => "6",
        '&' => "7",
        '(' => "9",
        ')' => "0",
        '{' => "bracket_left",
        '}' => "bracket_right",
        '"' => "apostrophe",
        '+' => "equal",
        '_' => "minus",
        ':' => "semicolon",
        '<' => "comma",
        '>' => "dot",
        '~' => "grave_accent",
        '?' => "slash",
        '|' => "backslash",
        _ => return None,
    };
    Some((true, shifted.to_string()))
}

fn parse_wait(arg: &str) -> Option<Duration> {
    if arg.is_empty() {
        return Some(Duration::from_secs(1));
    }
    if let Ok(n) = arg.parse::<u64>() {
        return Some(if n == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(n)
        });
    }
    // Go duration: groups of number+unit
    let mut total = 0f64;
    let mut rest = arg;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if n_end == 0 {
            return None;
        }
        let n: f64 = rest[..n_end].parse().ok()?;
        let r = &rest[n_end..];
        let u_end = r.find(|c: char| c.is_ascii_digit()).unwrap_or(r.len());
        let mult = match &r[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &r[u_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Parse a (rendered) boot command.
pub fn parse(cmd: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut held: Vec<String> = Vec::new();
    let chord = |held: &[String], shift: bool, key: &str| {
        let mut parts: Vec<String> = held.to_vec();
        if shift && !parts.iter().any(|p| p == "shift") {
            parts.push("shift".into());
        }
        parts.push(key.to_string());
        parts.join("-")
    };
    let chars: Vec<char> = cmd.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '<' {
            if let Some(len) = chars[i + 1..].iter().position(|&x| x == '>') {
                let tag: String = chars[i + 1..i + 1 + len].iter().collect();
                let lower = tag.to_ascii_lowercase();
                let mut handled = true;
                if let Some(arg) = lower.strip_prefix("wait") {
                    match parse_wait(arg) {
                        Some(d) => out.push(Action::Wait(d)),
                        None => handled = false,
                    }
                } else if let Some(k) = special(&tag) {
                    out.push(Action::Key(chord(&held, false, k)));
                } else if let Some(base) = lower.strip_suffix("on").filter(|b| !b.is_empty()) {
                    let k = special(base).map(String::from).or_else(|| {
                        let cs: Vec<char> = tag.chars().collect();
                        (cs.len() == 3)
                            .then(|| char_key(cs[0]).map(|(_, k)| k))
                            .flatten()
                    });
                    match k {
                        Some(k) => held.push(k),
                        None => handled = false,
                    }
                } else if let Some(base) = lower.strip_suffix("off").filter(|b| !b.is_empty()) {
                    let k = special(base).map(String::from).or_else(|| {
                        let cs: Vec<char> = tag.chars().collect();
                        (cs.len() == 4)
                            .then(|| char_key(cs[0]).map(|(_, k)| k))
                            .flatten()
                    });
                    match k {
                        Some(k) => held.retain(|h| *h != k),
                        None => handled = false,
                    }
                } else {
                    handled = false;
                }
                if handled {
                    i += len + 2;
                    continue;
                }
            }
        }
        match char_key(c) {
            Some((shift, k)) => out.push(Action::Key(chord(&held, shift, &k))),
            None => {
                return Err(format!(
                    "boot_command: character {c:?} cannot be typed with sendkey (US layout)"
                ))
            }
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<String> {
        parse(s)
            .unwrap_or_default()
            .into_iter()
            .map(|a| match a {
                Action::Key(k) => k,
                Action::Wait(d) => format!("wait{}ms", d.as_millis()),
            })
            .collect()
    }

    #[test]
    fn packer_observed_sequence() {
        assert_eq!(
            keys("<esc><wait>Hi!<enter><f1>"),
            ["esc", "wait1000ms", "shift-h", "i", "shift-1", "ret", "f1"]
        );
        assert_eq!(keys("<leftCtrlOn>c<leftCtrlOff>x"), ["ctrl-c", "x"]);
        assert_eq!(
            keys("<wait1m30s><wait5><wait500ms>"),
            ["wait90000ms", "wait5000ms", "wait500ms"]
        );
        assert_eq!(
            keys("<waitX>"),
            ["shift-comma", "w", "a", "i", "t", "shift-x", "shift-dot"]
        );
        assert_eq!(
            keys(":~\\;"),
            [
                "shift-semicolon",
                "shift-grave_accent",
                "backslash",
                "semicolon"
            ]
        );
        assert!(parse("é").is_err());
    }
}
