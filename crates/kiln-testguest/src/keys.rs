//! Packer-style `boot_command` → QMP `send-key` qcodes (a small subset, enough for the tests).
//!
//! Plain characters are typed one by one (shift added for upper case and symbols). Special keys:
//! `<enter> <return> <esc> <tab> <bs> <del> <spacebar> <insert> <home> <end> <pageUp> <pageDown>
//! <up> <down> <left> <right> <f1>..<f12>`, waits `<wait> <wait5> <wait10> <wait2s> <wait500ms>`,
//! chords such as `<leftCtrl>x`-style are written `<ctrl-x>` / `<alt-f2>` here.

use crate::{Error, Result};
use std::time::Duration;

/// One step of a boot command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keys pressed together (one QMP `send-key`).
    Keys(Vec<&'static str>),
    Wait(Duration),
}

fn special(name: &str) -> Option<Vec<&'static str>> {
    let k: &'static str = match name {
        "enter" | "return" => "ret",
        "esc" => "esc",
        "tab" => "tab",
        "bs" => "backspace",
        "del" => "delete",
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
        "lt" => return Some(vec!["shift", "comma"]),
        "gt" => return Some(vec!["shift", "dot"]),
        _ => return None,
    };
    Some(vec![k])
}

fn modifier(name: &str) -> Option<&'static str> {
    Some(match name {
        "ctrl" | "leftctrl" => "ctrl",
        "rightctrl" => "ctrl_r",
        "alt" | "leftalt" => "alt",
        "rightalt" => "alt_r",
        "shift" | "leftshift" => "shift",
        "rightshift" => "shift_r",
        "super" | "leftsuper" => "meta_l",
        _ => return None,
    })
}

const LETTERS: [&str; 26] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s",
    "t", "u", "v", "w", "x", "y", "z",
];
const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The qcodes for one character.
pub fn char_keys(c: char) -> Option<Vec<&'static str>> {
    if c.is_ascii_lowercase() {
        return Some(vec![LETTERS[(c as u8 - b'a') as usize]]);
    }
    if c.is_ascii_uppercase() {
        return Some(vec!["shift", LETTERS[(c as u8 - b'A') as usize]]);
    }
    if c.is_ascii_digit() {
        return Some(vec![DIGITS[(c as u8 - b'0') as usize]]);
    }
    let plain = match c {
        ' ' => "spc",
        '-' => "minus",
        '=' => "equal",
        ';' => "semicolon",
        '/' => "slash",
        '\\' => "backslash",
        '.' => "dot",
        ',' => "comma",
        '\'' => "apostrophe",
        '[' => "bracket_left",
        ']' => "bracket_right",
        '`' => "grave_accent",
        '\n' => "ret",
        '\t' => "tab",
        _ => "",
    };
    if !plain.is_empty() {
        return Some(vec![plain]);
    }
    let shifted = match c {
        '_' => "minus",
        '+' => "equal",
        ':' => "semicolon",
        '?' => "slash",
        '|' => "backslash",
        '>' => "dot",
        '<' => "comma",
        '"' => "apostrophe",
        '{' => "bracket_left",
        '}' => "bracket_right",
        '~' => "grave_accent",
        '!' => "1",
        '@' => "2",
        '#' => "3",
        '$' => "4",
        '%' => "5",
        '^' => "6",
        '&' => "7",
        '*' => "8",
        '(' => "9",
        ')' => "0",
        _ => return None,
    };
    Some(vec!["shift", shifted])
}

/// `<wait>`, `<waitN>` (seconds) or `<waitD>` with a Go duration, read by the parser kiln's boot
/// command uses (`kiln_bootcmd::duration`).
fn wait(spec: &str) -> Option<Duration> {
    let rest = spec.strip_prefix("wait")?;
    if rest.is_empty() {
        return Some(Duration::from_secs(1));
    }
    if rest.bytes().all(|b| b.is_ascii_digit()) {
        return rest.parse().ok().map(Duration::from_secs);
    }
    let nanos = kiln_bootcmd::duration::parse_go_duration(rest).ok()?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// Parse a boot command into steps.
pub fn parse(cmd: &str) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    let mut rest = cmd;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            if let Some(end) = rest.find('>') {
                let name = &rest[1..end];
                let low = name.to_ascii_lowercase();
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
                if valid {
                    if let Some(d) = wait(&low) {
                        out.push(Step::Wait(d));
                    } else if let Some(k) = special(&low) {
                        out.push(Step::Keys(k));
                    } else if let Some((mods, last)) = low.rsplit_once('-') {
                        let mut keys = Vec::new();
                        for m in mods.split('-') {
                            keys.push(modifier(m).ok_or_else(|| {
                                Error::BootCommand(format!("unknown modifier {m:?} in <{name}>"))
                            })?);
                        }
                        let tail = special(last)
                            .or_else(|| {
                                let mut ch = last.chars();
                                match (ch.next(), ch.next()) {
                                    (Some(c), None) => char_keys(c),
                                    _ => None,
                                }
                            })
                            .ok_or_else(|| {
                                Error::BootCommand(format!("unknown key {last:?} in <{name}>"))
                            })?;
                        keys.extend(tail);
                        out.push(Step::Keys(keys));
                    } else {
                        return Err(Error::BootCommand(format!("unknown special key <{name}>")));
                    }
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        let keys = char_keys(c)
            .ok_or_else(|| Error::BootCommand(format!("no key for character {c:?}")))?;
        out.push(Step::Keys(keys));
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ubuntu_edit_style() {
        let s = parse("e<down><end> ds=nocloud-net\\;s=http://10.0.2.2:80/<f10>").unwrap();
        assert_eq!(s[0], Step::Keys(vec!["e"]));
        assert_eq!(s[1], Step::Keys(vec!["down"]));
        assert_eq!(s[2], Step::Keys(vec!["end"]));
        assert_eq!(s[3], Step::Keys(vec!["spc"]));
        assert!(s.contains(&Step::Keys(vec!["backslash"])));
        assert!(s.contains(&Step::Keys(vec!["shift", "semicolon"])));
        assert_eq!(s.last(), Some(&Step::Keys(vec!["f10"])));
    }

    #[test]
    fn waits_chords_and_literal_lt() {
        let s = parse("c<wait><wait5><wait500ms><ctrl-x><lt>A").unwrap();
        assert_eq!(
            s,
            vec![
                Step::Keys(vec!["c"]),
                Step::Wait(Duration::from_secs(1)),
                Step::Wait(Duration::from_secs(5)),
                Step::Wait(Duration::from_millis(500)),
                Step::Keys(vec!["ctrl", "x"]),
                Step::Keys(vec!["shift", "comma"]),
                Step::Keys(vec!["shift", "a"]),
            ]
        );
        // a '<' that does not start a token is typed as is
        assert_eq!(parse("a < b").unwrap().len(), 5);
        assert!(parse("<bogus>").is_err());
        assert!(parse("é").is_err());
    }
}
