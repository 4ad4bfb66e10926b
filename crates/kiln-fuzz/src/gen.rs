//! Input generation: a small deterministic RNG, byte-level mutations and a generator of HCL
//! expressions that calls every function with hostile arguments.

/// xorshift64*: deterministic per seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// 0..n (n > 0)
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Byte-level mutations of `data`, with tokens from `dict` and splices from `others`.
pub fn mutate(rng: &mut Rng, data: &[u8], dict: &[&str], others: &[Vec<u8>]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = d.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                d.drain(i..i + n);
            }
            2 if len > 0 => {
                // duplicate a range
                let i = rng.below(len);
                let n = rng.below((len - i).min(256)) + 1;
                let chunk: Vec<u8> = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            3 | 4 => {
                let tok = rng.pick(dict).as_bytes();
                let at = rng.below(len + 1);
                d.splice(at..at, tok.iter().copied());
            }
            5 if !others.is_empty() => {
                let o = rng.pick(others);
                if !o.is_empty() {
                    let i = rng.below(o.len());
                    let n = rng.below((o.len() - i).min(512)) + 1;
                    let at = rng.below(len + 1);
                    d.splice(at..at, o[i..i + n].iter().copied());
                }
            }
            6 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next_u64() as u8;
            }
            _ if len > 1 => {
                // swap two lines
                let text = String::from_utf8_lossy(&d).into_owned();
                let mut lines: Vec<&str> = text.split('\n').collect();
                if lines.len() > 1 {
                    let a = rng.below(lines.len());
                    let b = rng.below(lines.len());
                    lines.swap(a, b);
                    d = lines.join("\n").into_bytes();
                }
            }
            _ => {}
        }
    }
    if d.len() > 256 << 10 {
        d.truncate(256 << 10);
    }
    d
}

/// Numbers a hostile template would use.
pub const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "64",
    "1024",
    "99999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "1e308",
    "-1e308",
    "0.5",
    "1e-300",
    "4294967296",
];

/// Strings a hostile template would use.
pub const STRINGS: &[&str] = &[
    "",
    "a",
    "abc",
    "a\\nb\\nc",
    "%99999999999d",
    "%.99999999999f",
    "%[99999999999]d",
    "%[0]d",
    "%-*d",
    "%",
    "%v%v%v",
    "%#v",
    "/dev/urandom",
    "/dev/zero",
    "/proc/self/status",
    "/etc/hostname",
    "self.tpl",
    "t.pkr.hcl",
    ".",
    "/",
    "**",
    "*",
    "{a,b}",
    "[",
    "99999999999999999h",
    "-99999999999999999h",
    "1h30m",
    "1e309s",
    "2026-01-02T03:04:05Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "YYYY-MM-DD hh:mm:ss ZZZ",
    "10.0.0.0/8",
    "::/0",
    "10.0.0.0/33",
    "192.168.1.1",
    "/(a+)+$/",
    "/[/",
    "$${x}",
    "${",
    "%{ if true }x%{ endif }",
    "true",
    "false",
    "null",
    "\\u0000",
    "é🦀",
    "{\\\"a\\\": [1, 2, {\\\"b\\\": null}]}",
    "a: [1, 2]\\nb: *x",
    "&a [*a, *a, *a]",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "aGVsbG8=",
    "====",
    "~/x",
    "../../../../etc/passwd",
];

/// A random HCL expression over `funcs`, at most `depth` deep.
pub fn expr(rng: &mut Rng, funcs: &[&str], depth: usize) -> String {
    if depth == 0 || rng.chance(3) {
        return match rng.below(7) {
            0 | 1 => rng.pick(NUMBERS).to_string(),
            2 | 3 => format!("\"{}\"", rng.pick(STRINGS)),
            4 => format!("local.l{}", rng.below(6)),
            5 => format!("var.v{}", rng.below(3)),
            _ => rng
                .pick(&["true", "false", "null", "[]", "{}", "path.root"])
                .to_string(),
        };
    }
    let d = depth - 1;
    match rng.below(12) {
        0..=4 => {
            let f = rng.pick(funcs);
            let n = rng.below(4);
            let args: Vec<String> = (0..n).map(|_| expr(rng, funcs, d)).collect();
            let spread = if n > 0 && rng.chance(8) { "..." } else { "" };
            format!("{f}({}{spread})", args.join(", "))
        }
        5 => {
            let n = rng.below(4);
            let items: Vec<String> = (0..n).map(|_| expr(rng, funcs, d)).collect();
            format!("[{}]", items.join(", "))
        }
        6 => format!(
            "{{ k = {}, \"x\" = {} }}",
            expr(rng, funcs, d),
            expr(rng, funcs, d)
        ),
        7 => format!(
            "{} {} {}",
            expr(rng, funcs, d),
            rng.pick(&["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||"]),
            expr(rng, funcs, d)
        ),
        8 => format!(
            "{} ? {} : {}",
            expr(rng, funcs, d),
            expr(rng, funcs, d),
            expr(rng, funcs, d)
        ),
        9 => format!(
            "[for i, x in {} : {} if {}]",
            expr(rng, funcs, d),
            expr(rng, funcs, d),
            rng.pick(&["true", "i < 3", "x != null"])
        ),
        10 => format!("\"pre-${{{}}}-post\"", expr(rng, funcs, d)),
        _ => format!("({})[{}]", expr(rng, funcs, d), expr(rng, funcs, d)),
    }
}

/// A template made of random variables and locals (locals may refer to each other).
pub fn template(rng: &mut Rng, funcs: &[&str]) -> String {
    let mut t = String::new();
    for i in 0..3 {
        let sensitive = if rng.chance(2) { "true" } else { "false" };
        let default = expr(rng, funcs, 2);
        t.push_str(&format!(
            "variable \"v{i}\" {{\n  default   = {default}\n  sensitive = {sensitive}\n}}\n"
        ));
    }
    t.push_str("locals {\n");
    for i in 0..6 {
        t.push_str(&format!("  l{i} = {}\n", expr(rng, funcs, 4)));
    }
    t.push_str("}\n");
    if rng.chance(2) {
        t.push_str(&format!(
            "source \"proxmox-iso\" \"x\" {{\n  proxmox_url = \"https://127.0.0.1:8006/api2/json\"\n  username = \"root@pam\"\n  password = var.v0\n  node = \"pve\"\n  ssh_username = \"u\"\n  ssh_password = {}\n  boot_command = [{}]\n  boot_iso {{\n    iso_file = \"local:iso/x.iso\"\n  }}\n}}\nbuild {{\n  sources = [\"source.proxmox-iso.x\"]\n}}\n",
            expr(rng, funcs, 2),
            expr(rng, funcs, 2)
        ));
    }
    t
}
