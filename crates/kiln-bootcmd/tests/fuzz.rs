//! Fuzz-ish property tests: random input never panics, and parsing is
//! consistent (each key chord only uses QEMU key names).

use kiln_bootcmd::gotmpl::{render, Data};
use kiln_bootcmd::{parse, parse_steps, Action};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const PIECES: &[&str] = &[
    "<",
    ">",
    "<wait",
    "wait",
    "<wait>",
    "<wait0>",
    "<wait05>",
    "<wait1m30s>",
    "<wait-1s>",
    "<wait1.5s>",
    "ms",
    "µs",
    "On",
    "Off",
    "on>",
    "off>",
    "<enter>",
    "<leftCtrlOn>",
    "<leftCtrlOff>",
    "<f1",
    "0>",
    "<del",
    "ete>",
    "a",
    "Z",
    "9",
    " ",
    "\\",
    "é",
    "日本",
    "\n",
    "\t",
    "{{",
    "}}",
    "{{ .HTTPIP }}",
    "{{-",
    "-}}",
    ".",
    "\"",
    "`",
    "/*",
    "*/",
    "|",
    "user",
    "isotime",
    " \"2006\" ",
    "{{ .Nope }}",
    "<leftShiftOn>",
    "x",
    "<pageUp>",
    "<bOn>",
    "<\u{0}",
    "\u{7f}",
    "99999999999999999999s",
    "<wait99999999999999999999>",
    "<wait1e9h>",
];

#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let data = Data::new()
        .with("HTTPIP", "10.0.2.2")
        .with("HTTPPort", 8888);
    for _ in 0..20_000 {
        let n = (rng.next() % 12) as usize;
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(rng.pick(PIECES));
        }
        // raw bytes mixed in as chars
        if rng.next() % 4 == 0 {
            s.push(char::from_u32((rng.next() % 0x3000) as u32).unwrap_or('?'));
        }
        if let Ok(steps) = parse_steps(&s) {
            for st in &steps {
                assert!(st.offset + st.len <= s.len(), "{s:?}");
                if let Action::Key(k) = &st.action {
                    for part in k.split('-') {
                        assert!(
                            kiln_bootcmd::qcodes::QKEYCODES.contains(&part),
                            "{s:?} → {k}"
                        );
                    }
                }
            }
        }
        let _ = render(&s, &data);
        let _ = parse(&s);
    }
}

#[test]
fn plain_ascii_text_always_parses() {
    let mut rng = Rng(42);
    for _ in 0..2_000 {
        let n = (rng.next() % 40) as usize;
        let s: String = (0..n)
            .map(|_| char::from(32 + (rng.next() % 95) as u8))
            .collect();
        let a = parse(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert!(a.len() <= s.len());
    }
}
