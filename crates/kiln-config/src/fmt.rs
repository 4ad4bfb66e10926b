//! `kiln fmt`: canonical HCL layout (two-space indentation by nesting, `=` aligned across runs of
//! consecutive attributes, single spaces around `=`, no trailing whitespace, one final newline),
//! keeping every comment and heredoc body exactly as written.

/// Format HCL source. Returns an error message with the line if the input does not parse.
pub fn format_hcl(src: &str) -> Result<String, String> {
    if let Err(e) = hcl_edit::parser::parse_body(src) {
        let l = e.location();
        return Err(format!(
            "line {}, column {}: {}",
            l.line(),
            l.column(),
            e.message().lines().next().unwrap_or("syntax error")
        ));
    }
    let lines: Vec<&str> = src.lines().collect();
    let mut out: Vec<Line> = Vec::with_capacity(lines.len());
    let mut stack: Vec<i64> = Vec::new();
    let mut heredoc: Option<(String, bool)> = None;
    let mut in_comment = false;
    for raw in lines {
        if let Some((delim, _)) = &heredoc {
            if raw.trim() == delim {
                heredoc = None;
            }
            let mut l = Line::verbatim(raw.trim_end_matches('\r'));
            l.heredoc_body = true;
            out.push(l);
            continue;
        }
        if in_comment {
            if raw.contains("*/") {
                in_comment = false;
            }
            out.push(Line::verbatim(raw.trim_end()));
            continue;
        }
        let t = raw.trim();
        if t.is_empty() {
            out.push(Line::verbatim(""));
            continue;
        }
        // hclwrite style: leading closers pop first (the line prints at the opener's level),
        // then the rest of the line's net openers push one level (remembering how many
        // brackets it stands for), net closers pop.
        let scan = scan_line(t);
        let leading = t
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ',')
            .take_while(|c| matches!(c, '}' | ']' | ')'))
            .count() as i64;
        close(&mut stack, leading);
        let line_depth = stack.len() as i64;
        let rest = scan.delta + leading;
        if rest > 0 {
            stack.push(rest);
        } else if rest < 0 {
            close(&mut stack, -rest);
        }
        if let Some(h) = scan.heredoc {
            heredoc = Some(h);
        }
        if scan.opens_comment {
            in_comment = true;
        }
        let indent = "  ".repeat(line_depth as usize);
        match split_attr(t) {
            Some((k, v)) if !scan.starts_comment => {
                out.push(Line {
                    text: String::new(),
                    indent,
                    key: Some(k.to_string()),
                    value: tidy(v),
                    depth: line_depth,
                    multiline: rest > 0,
                    heredoc_body: false,
                });
            }
            _ if scan.starts_comment => out.push(Line {
                text: format!("{indent}{t}"),
                indent,
                key: None,
                value: String::new(),
                depth: line_depth,
                multiline: false,
                heredoc_body: false,
            }),
            _ => out.push(Line {
                text: format!("{indent}{}", tidy(t)),
                indent,
                key: None,
                value: String::new(),
                depth: line_depth,
                multiline: false,
                heredoc_body: false,
            }),
        }
    }
    // align `=` across runs of attributes at the same depth
    let mut i = 0;
    while i < out.len() {
        if out[i].key.is_none() {
            i += 1;
            continue;
        }
        let d = out[i].depth;
        let mut j = i;
        let mut width = 0;
        while j < out.len()
            && ((out[j].key.is_some() && out[j].depth == d && !out[j].multiline)
                || (j > i && out[j].heredoc_body))
        {
            width = width.max(out[j].key.as_ref().map(|k| k.chars().count()).unwrap_or(0));
            j += 1;
        }
        if j == i {
            // a multi-line attribute: single space, and it ends any run
            j = i + 1;
            width = 0;
        }
        // trailing comments in the run line up one space after the longest code part
        let cwidth = out[i..j]
            .iter()
            .filter_map(|l| {
                split_comment(&l.value)
                    .1
                    .map(|_| split_comment(&l.value).0.chars().count())
            })
            .max()
            .unwrap_or(0);
        for l in &mut out[i..j] {
            if let (code, Some(comment)) = split_comment(&l.value) {
                if !l.multiline {
                    let pad = cwidth.saturating_sub(code.chars().count());
                    l.value = format!("{code}{} {comment}", " ".repeat(pad));
                }
            }
        }
        for l in &mut out[i..j] {
            if let Some(k) = &l.key {
                let pad = width.saturating_sub(k.chars().count());
                l.text = format!("{}{}{} = {}", l.indent, k, " ".repeat(pad), l.value);
            }
        }
        i = j;
    }
    let mut s = String::with_capacity(src.len());
    for l in &out {
        if l.depth == -1 {
            s.push_str(&l.text);
        } else {
            s.push_str(l.text.trim_end_matches([' ', '\t']));
        }
        s.push('\n');
    }
    while s.ends_with("\n\n") {
        s.pop();
    }
    if s == "\n" {
        s.clear();
    }
    Ok(s)
}

fn close(stack: &mut Vec<i64>, mut n: i64) {
    while n > 0 {
        let Some(top) = stack.last_mut() else { return };
        if n >= *top {
            n -= *top;
            stack.pop();
        } else {
            *top -= n;
            n = 0;
        }
    }
}

/// Collapse runs of spaces between tokens and drop spaces just inside `[ ]` and `( )`, outside
/// strings; a trailing comment is kept as written.
fn tidy(t: &str) -> String {
    let b: Vec<char> = t.chars().collect();
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    let mut in_str = false;
    let mut interp = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            match c {
                '\\' if i + 1 < b.len() => {
                    out.push(b[i + 1]);
                    i += 1;
                }
                '"' if interp == 0 => in_str = false,
                '{' if i > 0 && (b[i - 1] == '$' || b[i - 1] == '%') => interp += 1,
                '}' if interp > 0 => interp -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == '#' || (c == '/' && i + 1 < b.len() && (b[i + 1] == '/' || b[i + 1] == '*')) {
            // keep the comment and the spacing before it
            let rest: String = b[i..].iter().collect();
            let trimmed_len = out.trim_end().len();
            let gap = out.len() - trimmed_len;
            let _ = gap;
            out.push_str(&rest);
            return out;
        }
        if c == ' ' {
            let mut j = i;
            while j < b.len() && b[j] == ' ' {
                j += 1;
            }
            let prev = out.chars().last();
            let next = b.get(j).copied();
            let comment_next = next == Some('#')
                || (next == Some('/') && matches!(b.get(j + 1), Some('/') | Some('*')));
            if comment_next {
                out.extend(&b[i..j]);
            } else if !(matches!(prev, Some('[') | Some('('))
                || matches!(next, Some(']') | Some(')') | None))
            {
                out.push(' ');
            }
            i = j;
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        // `label"{` → `label" {`
        if c == '{' && out.ends_with('"') {
            out.push(' ');
        }
        out.push(c);
        // `a,b` → `a, b`
        if c == ',' && b.get(i + 1).is_some_and(|n| *n != ' ') {
            out.push(' ');
        }
        i += 1;
    }
    out
}

/// Split `code # comment` (comment outside strings) into the trimmed code and the comment.
fn split_comment(v: &str) -> (String, Option<String>) {
    let b = v.as_bytes();
    let mut in_str = false;
    let mut interp = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' if interp == 0 => in_str = false,
                b'{' if i > 0 && (b[i - 1] == b'$' || b[i - 1] == b'%') => interp += 1,
                b'}' if interp > 0 => interp -= 1,
                _ => {}
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'#' || (c == b'/' && i + 1 < b.len() && b[i + 1] == b'/') {
            return (v[..i].trim_end().to_string(), Some(v[i..].to_string()));
        }
        i += 1;
    }
    (v.to_string(), None)
}

struct Line {
    text: String,
    indent: String,
    key: Option<String>,
    value: String,
    depth: i64,
    multiline: bool,
    /// inside a heredoc (does not break an alignment run)
    heredoc_body: bool,
}

impl Line {
    fn verbatim(t: &str) -> Line {
        Line {
            text: t.to_string(),
            indent: String::new(),
            key: None,
            value: String::new(),
            depth: -1,
            multiline: false,
            heredoc_body: false,
        }
    }
}

struct Scan {
    delta: i64,
    heredoc: Option<(String, bool)>,
    opens_comment: bool,
    starts_comment: bool,
}

/// Bracket balance of a line outside strings and comments; heredoc starts; `/*` left open.
fn scan_line(t: &str) -> Scan {
    let b = t.as_bytes();
    let mut delta = 0i64;
    let mut i = 0;
    let mut in_str = false;
    let mut interp = 0i64; // nesting of ${ } inside strings
    let starts_comment = t.starts_with('#') || t.starts_with("//") || t.starts_with("/*");
    let mut opens_comment = false;
    let mut heredoc = None;
    while i < b.len() {
        let c = b[i];
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' if interp == 0 => in_str = false,
                b'$' | b'%' if i + 1 < b.len() && b[i + 1] == b'{' => {
                    interp += 1;
                    i += 1;
                }
                b'{' if interp > 0 => interp += 1,
                b'}' if interp > 0 => interp -= 1,
                b'"' => {
                    // a nested string inside an interpolation: skip it
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'#' => break,
            b'/' if i + 1 < b.len() && b[i + 1] == b'/' => break,
            b'/' if i + 1 < b.len() && b[i + 1] == b'*' => match t[i + 2..].find("*/") {
                Some(p) => {
                    i += 2 + p + 2;
                    continue;
                }
                None => {
                    opens_comment = true;
                    break;
                }
            },
            b'{' | b'[' | b'(' => delta += 1,
            b'}' | b']' | b')' => delta -= 1,
            b'<' if i + 1 < b.len() && b[i + 1] == b'<' => {
                let rest = &t[i + 2..];
                let (strip, rest) = match rest.strip_prefix('-') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() && rest[ident.len()..].trim().is_empty() {
                    heredoc = Some((ident, strip));
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Scan {
        delta,
        heredoc,
        opens_comment,
        starts_comment,
    }
}

/// `key = value` (not `==`), key an identifier or a quoted string.
fn split_attr(t: &str) -> Option<(&str, &str)> {
    let key_end = if t.starts_with('"') {
        let mut i = 1;
        let b = t.as_bytes();
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    } else {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(t.len())
    };
    if key_end == 0 || key_end > t.len() {
        return None;
    }
    let key = &t[..key_end];
    let rest = t[key_end..].trim_start();
    let v = rest.strip_prefix('=')?;
    if v.starts_with('=') || v.starts_with('>') {
        return None;
    }
    Some((key, v.trim()))
}

/// A unified diff (`--- a/… / +++ b/…`) of two texts, by lines.
pub fn unified_diff(name: &str, a: &str, b: &str) -> String {
    let x: Vec<&str> = a.lines().collect();
    let y: Vec<&str> = b.lines().collect();
    let (n, m) = (x.len(), y.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if x[i] == y[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // edit script
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            ops.push((' ', x[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', x[i]));
            i += 1;
        } else {
            ops.push(('+', y[j]));
            j += 1;
        }
    }
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    let ctx = 3;
    let mut k = 0;
    let (mut la, mut lb) = (1usize, 1usize);
    while k < ops.len() {
        if ops[k].0 == ' ' {
            la += 1;
            lb += 1;
            k += 1;
            continue;
        }
        // hunk from k-ctx to the next run of >2*ctx unchanged lines
        let start = k.saturating_sub(ctx);
        let mut end = k;
        let mut same = 0;
        while end < ops.len() {
            if ops[end].0 == ' ' {
                same += 1;
                if same > 2 * ctx {
                    break;
                }
            } else {
                same = 0;
            }
            end += 1;
        }
        let end = (end - same.min(end)).min(ops.len()) + same.min(ctx);
        let end = end.min(ops.len());
        let back = k - start;
        let (sa, sb) = (la - back, lb - back);
        let ca = ops[start..end].iter().filter(|o| o.0 != '+').count();
        let cb = ops[start..end].iter().filter(|o| o.0 != '-').count();
        out.push_str(&format!("@@ -{sa},{ca} +{sb},{cb} @@\n"));
        for o in &ops[start..end] {
            out.push(o.0);
            out.push_str(o.1);
            out.push('\n');
        }
        for o in &ops[k..end] {
            if o.0 != '+' {
                la += 1;
            }
            if o.0 != '-' {
                lb += 1;
            }
        }
        k = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_indents_and_keeps_comments() {
        let src = "# top comment\nsource \"proxmox-iso\" \"x\" {\n node = \"pve\" # trailing\n   memory=2048\n\n  // group two\n  cores    =   2\n  disks {\n  type = \"scsi\"\n  }\n  boot_command = [\n\"<esc>\",\n  ]\n}\n";
        let want = "# top comment\nsource \"proxmox-iso\" \"x\" {\n  node   = \"pve\" # trailing\n  memory = 2048\n\n  // group two\n  cores = 2\n  disks {\n    type = \"scsi\"\n  }\n  boot_command = [\n    \"<esc>\",\n  ]\n}\n";
        assert_eq!(format_hcl(src).unwrap(), want);
        // idempotent
        assert_eq!(format_hcl(want).unwrap(), want);
    }

    #[test]
    fn token_spacing_and_comment_alignment() {
        let src = "local \"x\"{\n  expression = contains([\"a\",\"b\"],   \"a\") # c1\n}\nv1 = \"long value\" # one\nvv2 = \"s\" # two\nv3 = [ \"x\" ]\n";
        let want = "local \"x\" {\n  expression = contains([\"a\", \"b\"], \"a\") # c1\n}\nv1  = \"long value\" # one\nvv2 = \"s\"          # two\nv3  = [\"x\"]\n";
        assert_eq!(format_hcl(src).unwrap(), want);
        assert_eq!(format_hcl(want).unwrap(), want);
    }

    #[test]
    fn heredocs_are_untouched() {
        let src = "locals {\n  x = <<-EOF\n      keep   this  \n    EOF\n  y = 1\n}\n";
        let out = format_hcl(src).unwrap();
        assert!(out.contains("      keep   this  \n    EOF\n"), "{out}");
        assert!(out.contains("  y = 1\n"));
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(format_hcl("a = ${x}\n").is_err());
    }

    #[test]
    fn diff_shows_changes() {
        let d = unified_diff("f.pkr.hcl", "a = 1\nb=2\n", "a = 1\nb = 2\n");
        assert!(d.contains("-b=2\n+b = 2\n"), "{d}");
    }
}
