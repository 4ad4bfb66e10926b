//! File and path functions: file, fileexists, filebase64, filesha256, filesha512, filemd5, filesha1, abspath,
//! basename, dirname, pathexpand. Relative paths resolve against [`FuncContext::cwd`] (Packer: the process cwd).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hcl::Value;

use super::{arg_str, arity, failed, Func, FuncContext, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("file", file),
    ("fileexists", fileexists),
    ("filebase64", filebase64),
    ("filemd5", filemd5),
    ("filesha1", filesha1),
    ("filesha256", filesha256),
    ("filesha512", filesha512),
    ("abspath", abspath),
    ("basename", basename),
    ("dirname", dirname),
    ("pathexpand", pathexpand),
    ("fileset", fileset),
];

/// A glob (`*`, `**`, `?`, `[...]`, `{a,b}`) as an anchored regex over `/`-separated relative paths.
fn glob_regex(name: &str, pat: &str) -> Result<regex::Regex, super::FuncError> {
    let mut re = String::from("^");
    let chars: Vec<char> = pat.chars().collect();
    let mut i = 0;
    let mut in_brace = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let end = chars[i..].iter().position(|c| *c == ']').map(|p| p + i);
                let Some(end) = end else {
                    return Err(failed(name, format!("unterminated [ in pattern \"{pat}\"")));
                };
                let mut class: String = chars[i + 1..end].iter().collect();
                if let Some(rest) = class.strip_prefix('!') {
                    class = format!("^{rest}");
                }
                re.push('[');
                re.push_str(&class);
                re.push(']');
                i = end + 1;
                continue;
            }
            '{' => {
                in_brace = true;
                re.push_str("(?:");
            }
            '}' if in_brace => {
                in_brace = false;
                re.push(')');
            }
            ',' if in_brace => re.push('|'),
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| failed(name, format!("invalid pattern \"{pat}\": {e}")))
}

/// `fileset(path, pattern)`: the sorted set of regular files under `path` matching the glob, relative to `path`.
fn fileset(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let base = arg_str(name, 0, &args[0])?;
    let re = glob_regex(name, &arg_str(name, 1, &args[1])?)?;
    let root = resolve(ctx, &base);
    let mut out = Vec::new();
    for (n, entry) in walkdir::WalkDir::new(&root)
        .follow_links(true)
        .min_depth(1)
        .into_iter()
        .enumerate()
    {
        if n >= super::MAX_FILESET_ENTRIES {
            return Err(failed(
                name,
                format!(
                    "\"{base}\" has more than {} entries, kiln's limit for fileset (see \"Limits on hostile templates\" in the README)",
                    super::MAX_FILESET_ENTRIES
                ),
            ));
        }
        let entry = entry.map_err(|e| failed(name, format!("cannot walk \"{base}\": {e}")))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&root)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        if re.is_match(&rel) {
            out.push(rel);
        }
    }
    out.sort();
    Ok(Value::Array(out.into_iter().map(Value::String).collect()))
}

/// `~` / `~/x` → the home directory.
fn expand_home(p: &str) -> String {
    if p == "~" || p.starts_with("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return format!("{}{}", home.to_string_lossy(), &p[1..]);
        }
    }
    p.to_string()
}

fn resolve(ctx: &FuncContext, p: &str) -> PathBuf {
    let p = expand_home(p);
    let path = Path::new(&p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        ctx.cwd.join(path)
    }
}

/// Open `p` for reading: only a regular file (after following links) — never a device, FIFO or
/// directory, which could block or never end (`file("/dev/urandom")`).
fn open_regular(
    name: &str,
    p: &str,
    ctx: &FuncContext,
) -> Result<(std::fs::File, u64, PathBuf), super::FuncError> {
    let full = resolve(ctx, p);
    let io_err = |e: std::io::Error| {
        match e.kind() {
        std::io::ErrorKind::NotFound if Path::new(p).is_relative() && !p.starts_with('~') => failed(
            name,
            format!("no file exists at \"{}\" (relative paths resolve against the current directory {})", p, ctx.cwd.display()),
        ),
        std::io::ErrorKind::NotFound => failed(name, format!("no file exists at \"{}\"", full.display())),
        _ => failed(name, format!("cannot read \"{}\": {e}", full.display())),
    }
    };
    // stat before open: opening a FIFO would block
    let meta = std::fs::metadata(&full).map_err(io_err)?;
    if !meta.is_file() {
        return Err(failed(
            name,
            format!(
                "\"{}\" is not a regular file (kiln reads only regular files)",
                full.display()
            ),
        ));
    }
    let f = std::fs::File::open(&full).map_err(io_err)?;
    Ok((f, meta.len(), full))
}

/// Read a regular file of at most [`super::MAX_FILE_BYTES`].
pub(crate) fn read_file_capped(
    name: &str,
    p: &str,
    ctx: &FuncContext,
) -> Result<Vec<u8>, super::FuncError> {
    use std::io::Read as _;
    let (f, len, full) = open_regular(name, p, ctx)?;
    let too_big = |n: u64| {
        failed(
            name,
            format!(
                "\"{}\" has {n} bytes or more, more than kiln's limit of {} bytes for file functions (see \"Limits on hostile templates\" in the README)",
                full.display(),
                super::MAX_FILE_BYTES
            ),
        )
    };
    if len > super::MAX_FILE_BYTES {
        return Err(too_big(len));
    }
    let mut out = Vec::with_capacity(len as usize);
    // the file may grow while we read it: never read more than the limit
    f.take(super::MAX_FILE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| failed(name, format!("cannot read \"{}\": {e}", full.display())))?;
    if out.len() as u64 > super::MAX_FILE_BYTES {
        return Err(too_big(out.len() as u64));
    }
    Ok(out)
}

fn read_bytes(name: &str, args: &[Value], ctx: &FuncContext) -> Result<Vec<u8>, super::FuncError> {
    arity(name, args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    read_file_capped(name, &p, ctx)
}

/// Hash a regular file without reading it into memory (ISOs may be hashed).
fn file_digest<D: md5::Digest>(
    name: &str,
    args: &[Value],
    ctx: &FuncContext,
) -> Result<Value, super::FuncError> {
    use std::io::Read as _;
    arity(name, args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    let (mut f, _, full) = open_regular(name, &p, ctx)?;
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| failed(name, format!("cannot read \"{}\": {e}", full.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Value::String(hex::encode(h.finalize())))
}

/// `file(path)`: the file's contents as a UTF-8 string.
fn file(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    let bytes = read_bytes(name, &args, ctx)?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| {
        failed(
            name,
            "the file contains invalid UTF-8; use filebase64 to read binary files",
        )
    })
}

fn fileexists(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    let full = resolve(ctx, &p);
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => Ok(Value::Bool(true)),
        Ok(_) => Err(failed(
            name,
            format!("\"{p}\" exists but is not a regular file"),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(failed(
            name,
            format!("cannot stat \"{}\": {e}", full.display()),
        )),
    }
}

fn filebase64(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    let bytes = read_bytes(name, &args, ctx)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

fn filemd5(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    file_digest::<md5::Md5>(name, &args, ctx)
}

fn filesha1(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    file_digest::<sha1::Sha1>(name, &args, ctx)
}

fn filesha256(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    file_digest::<sha2::Sha256>(name, &args, ctx)
}

fn filesha512(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    file_digest::<sha2::Sha512>(name, &args, ctx)
}

/// Go's `filepath.Clean` (lexical).
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `abspath(path)`: absolute and cleaned, relative to the cwd; symlinks are not resolved.
fn abspath(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    let joined = if p.starts_with('/') {
        p
    } else {
        format!("{}/{}", ctx.cwd.to_string_lossy(), p)
    };
    Ok(Value::String(clean(&joined)))
}

/// Go's `filepath.Base`.
fn basename(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    if p.is_empty() {
        return Ok(Value::String(".".to_string()));
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return Ok(Value::String("/".to_string()));
    }
    Ok(Value::String(t.rsplit('/').next().unwrap_or(t).to_string()))
}

/// Go's `filepath.Dir`.
fn dirname(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let p = arg_str(name, 0, &args[0])?;
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    Ok(Value::String(clean(dir)))
}

fn pathexpand(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::String(expand_home(&arg_str(name, 0, &args[0])?)))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{call, FuncContext};
    use hcl::Value;

    fn dir_ctx() -> (tempfile::TempDir, FuncContext) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("meta-data"), "instance-id: x\n").expect("write");
        std::fs::write(d.path().join("bin"), [0xffu8, 0xfe, 0x00]).expect("write");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        let mut cx = ctx();
        cx.cwd = d.path().to_path_buf();
        (d, cx)
    }

    #[test]
    fn file_reads_relative_to_cwd() {
        let (_d, cx) = dir_ctx();
        assert_eq!(
            call("file", vec![s("meta-data")], &cx).ok(),
            Some(s("instance-id: x\n"))
        );
        let e = call("file", vec![s("missing")], &cx).expect_err("missing");
        assert!(e.to_string().contains("no file exists"), "{e}");
        let e = call("file", vec![s("bin")], &cx).expect_err("binary");
        assert!(e.to_string().contains("filebase64"), "{e}");
        assert!(call("file", vec![], &cx).is_err());
        assert_eq!(
            call("filebase64", vec![s("bin")], &cx).ok(),
            Some(s("//4A"))
        );
        assert_eq!(
            call("filesha256", vec![s("meta-data")], &cx).ok(),
            call("sha256", vec![s("instance-id: x\n")], &cx).ok()
        );
        assert_eq!(
            call("filemd5", vec![s("meta-data")], &cx).ok(),
            call("md5", vec![s("instance-id: x\n")], &cx).ok()
        );
        assert_eq!(
            call("filesha1", vec![s("meta-data")], &cx).ok(),
            call("sha1", vec![s("instance-id: x\n")], &cx).ok()
        );
        assert_eq!(
            call("filesha512", vec![s("meta-data")], &cx).ok(),
            call("sha512", vec![s("instance-id: x\n")], &cx).ok()
        );
    }

    #[test]
    fn fileexists_cases() {
        let (_d, cx) = dir_ctx();
        assert_eq!(
            call("fileexists", vec![s("meta-data")], &cx).ok(),
            Some(Value::Bool(true))
        );
        assert_eq!(
            call("fileexists", vec![s("nope")], &cx).ok(),
            Some(Value::Bool(false))
        );
        assert!(call("fileexists", vec![s("sub")], &cx).is_err());
        assert!(call("fileexists", vec![v("[]")], &cx).is_err());
    }

    #[test]
    fn fileset_cases() {
        let (d, cx) = dir_ctx();
        std::fs::write(d.path().join("sub/a.yml"), "").expect("write");
        std::fs::create_dir(d.path().join("sub/deep")).expect("mkdir");
        std::fs::write(d.path().join("sub/deep/b.yaml"), "").expect("write");
        let f = |p: &str| call("fileset", vec![s("."), s(p)], &cx).map_err(|e| e.to_string());
        assert_eq!(f("*"), Ok(v("[\"bin\", \"meta-data\"]")));
        assert_eq!(
            f("**/*.{yml,yaml}"),
            Ok(v("[\"sub/a.yml\", \"sub/deep/b.yaml\"]"))
        );
        assert_eq!(f("sub/*.y?l"), Ok(v("[\"sub/a.yml\"]")));
        assert_eq!(f("m[a-e]ta-*"), Ok(v("[\"meta-data\"]")));
        assert_eq!(
            call("fileset", vec![s("sub"), s("*")], &cx).ok(),
            Some(v("[\"a.yml\"]"))
        );
        assert!(call("fileset", vec![s("."), s("[abc")], &cx).is_err());
        assert!(call("fileset", vec![s("missing-dir"), s("*")], &cx).is_err());
    }

    #[test]
    fn abspath_cases() {
        let mut cx = ctx();
        cx.cwd = "/work/proj".into();
        assert_eq!(
            call("abspath", vec![s(".")], &cx).ok(),
            Some(s("/work/proj"))
        );
        assert_eq!(
            call("abspath", vec![s("../x/./y/")], &cx).ok(),
            Some(s("/work/x/y"))
        );
        assert_eq!(
            call("abspath", vec![s("/a/../../b")], &cx).ok(),
            Some(s("/b"))
        );
        assert!(call("abspath", vec![v("{}")], &cx).is_err());
    }

    #[test]
    fn basename_dirname() {
        ok("basename", &["\"/foo/bar/baz.txt\""], "\"baz.txt\"");
        ok("basename", &["\"/foo/bar/\""], "\"bar\"");
        ok("basename", &["\"/\""], "\"/\"");
        ok("basename", &["\"\""], "\".\"");
        ok("dirname", &["\"/foo/bar/baz.txt\""], "\"/foo/bar\"");
        ok("dirname", &["\"foo\""], "\".\"");
        ok("dirname", &["\"/foo\""], "\"/\"");
        ok("dirname", &["\"a/b/\""], "\"a/b\"");
        err("basename", &["[]"]);
        err("dirname", &[]);
    }

    #[test]
    fn pathexpand_cases() {
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            ok(
                "pathexpand",
                &["\"~/.ssh/id\""],
                &format!("\"{home}/.ssh/id\""),
            );
        }
        ok("pathexpand", &["\"/etc/x\""], "\"/etc/x\"");
        ok("pathexpand", &["\"a~/b\""], "\"a~/b\"");
        err("pathexpand", &["[]"]);
    }
}
