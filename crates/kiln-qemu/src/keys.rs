//! PVE `sendkey` key names → QMP `send-key` key values.
//!
//! PVE passes the `key` parameter of `PUT /nodes/{node}/qemu/{vmid}/sendkey` unchanged to QEMU's HMP
//! command `sendkey <key>`. HMP splits the value on `-` and resolves every part to a `QKeyCode` name
//! (exact, case-sensitive match), a raw key code written `0x..` (hex), or the legacy alias `<` for
//! `less`; any other part fails with `invalid parameter: <part>` and PVE fails the API call with that
//! text. [`parse`] reproduces exactly that check, [`KeyChord::to_qmp`] gives the QMP `send-key`
//! arguments.

use serde_json::{json, Value};

use crate::keys_table::QKEYCODES;

/// One part of a key chord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A `QKeyCode` name (`ret`, `shift`, `a`, `kp_1`, …).
    QCode(&'static str),
    /// A raw key code given as `0x..`.
    Number(u32),
}

/// Keys pressed together (in order) and released together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChord(pub Vec<Key>);

/// A key name QEMU (and so PVE) does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameter: {part}")]
pub struct KeyError {
    /// The offending part, as QEMU prints it.
    pub part: String,
}

/// Every `QKeyCode` name this table knows, in QEMU enum order.
pub fn qcodes() -> &'static [&'static str] {
    QKEYCODES
}

/// Parse a PVE/HMP `sendkey` value (`ret`, `shift-a`, `ctrl-alt-delete`, `0x1c`, `<`).
///
/// Mirrors QEMU's `hmp_sendkey`: split on `-`; a part equal to `<` means `less`; a part starting
/// with `0x` must be entirely a number (`strtoul` base 0); otherwise it must be a `QKeyCode` name.
pub fn parse(value: &str) -> Result<KeyChord, KeyError> {
    let mut keys = Vec::new();
    for part in value.split('-') {
        keys.push(parse_part(part)?);
    }
    Ok(KeyChord(keys))
}

fn parse_part(part: &str) -> Result<Key, KeyError> {
    let err = || KeyError {
        part: part.to_string(),
    };
    if part == "<" {
        return Ok(Key::QCode("less"));
    }
    if let Some(hex) = part.strip_prefix("0x") {
        // strtoul(keys, &endp, 0) must consume the whole part: "0x" alone parses only "0".
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        // strtoul saturates; QEMU then truncates to int. Keep values that fit, refuse the rest.
        return u32::from_str_radix(hex, 16)
            .map(Key::Number)
            .map_err(|_| err());
    }
    QKEYCODES
        .iter()
        .find(|k| **k == part)
        .map(|k| Key::QCode(k))
        .ok_or_else(err)
}

/// `QKeyCode`s newer than QEMU 7.2 (Debian bookworm), sent as their XT scancode numbers
/// instead (the `number` key type of `send-key`), which every QEMU understands.
const NEWER_QCODES: &[(&str, u32)] = &[
    ("f13", 0x64),
    ("f14", 0x65),
    ("f15", 0x66),
    ("f16", 0x67),
    ("f17", 0x68),
    ("f18", 0x69),
    ("f19", 0x6a),
    ("f20", 0x6b),
    ("f21", 0x6c),
    ("f22", 0x6d),
    ("f23", 0x6e),
    ("f24", 0x76),
];

impl KeyChord {
    /// The `keys` array of QMP `send-key`.
    pub fn to_qmp(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|k| match k {
                    Key::QCode(q) => match NEWER_QCODES.iter().find(|(n, _)| n == q) {
                        Some((_, num)) => json!({"type": "number", "data": num}),
                        None => json!({"type": "qcode", "data": q}),
                    },
                    Key::Number(n) => json!({"type": "number", "data": n}),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE_JSON: &str = include_str!("../data/qemu-sendkey-keys.json");

    #[test]
    fn every_table_name_is_accepted_alone_and_in_a_chord() {
        let v: Value = serde_json::from_str(TABLE_JSON).unwrap();
        let names: Vec<&str> = v["qkeycode"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(names, QKEYCODES, "regenerate src/keys_table.rs");
        for n in &names {
            assert!(
                matches!(&parse(n).unwrap().0[..], [Key::QCode(q)] if q == n),
                "{n}"
            );
            let chord = format!("ctrl-alt-{n}");
            assert_eq!(parse(&chord).unwrap().0.len(), 3, "{chord}");
            // HMP matching is case-sensitive
            let upper = n.to_uppercase();
            if upper != *n {
                assert_eq!(parse(&upper).unwrap_err().part, upper);
            }
        }
    }

    #[test]
    fn common_boot_command_mappings_are_valid() {
        let v: Value = serde_json::from_str(TABLE_JSON).unwrap();
        for (what, key) in v["common_for_boot_commands"].as_object().unwrap() {
            parse(key.as_str().unwrap()).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }

    #[test]
    fn chords_and_aliases() {
        assert_eq!(
            parse("ctrl-alt-delete").unwrap().to_qmp(),
            json!([{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}])
        );
        assert_eq!(parse("<").unwrap(), KeyChord(vec![Key::QCode("less")]));
        assert_eq!(
            parse("shift-<").unwrap(),
            KeyChord(vec![Key::QCode("shift"), Key::QCode("less")])
        );
        assert_eq!(
            parse("0x1c").unwrap().to_qmp(),
            json!([{"type":"number","data":28}])
        );
        assert_eq!(
            parse("f13").unwrap().to_qmp(),
            json!([{"type":"number","data":0x64}]),
            "QEMU 7.2 has no f13 qcode"
        );
        assert_eq!(
            parse("shift-0x1E").unwrap().0[1],
            Key::Number(0x1e),
            "hex digits are case-insensitive"
        );
    }

    #[test]
    fn invalid_parts_name_the_part() {
        for (input, part) in [
            ("enter", "enter"),
            ("Ret", "Ret"),
            ("shift-foo", "foo"),
            ("", ""),
            ("ctrl-", ""),
            ("0x", "0x"),
            ("0xzz", "0xzz"),
            ("0x1g", "0x1g"),
            ("ret ", "ret "),
            ("<<", "<<"),
            ("kp-1", "kp"),
        ] {
            let e = parse(input).unwrap_err();
            assert_eq!(e.part, part, "{input:?}");
            assert_eq!(e.to_string(), format!("invalid parameter: {part}"));
        }
    }
}
