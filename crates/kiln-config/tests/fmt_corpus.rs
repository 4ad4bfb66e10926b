//! `kiln fmt` over every HCL file of the corpus snapshot: the result parses to the same
//! structure (comments kept), and formatting is idempotent.

use std::path::Path;

fn hcl_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            hcl_files(&p, out);
        } else if p.to_string_lossy().ends_with(".hcl") {
            out.push(p);
        }
    }
}

fn comments(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| l.find('#').map(|i| l[i..].trim().to_string()))
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn fmt_is_stable_and_lossless_on_the_corpus() {
    let mut files = Vec::new();
    hcl_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus"),
        &mut files,
    );
    assert!(
        files.len() > 50,
        "corpus snapshot missing? found {} files",
        files.len()
    );
    let mut formatted = 0;
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let Ok(out) = kiln_config::fmt::format_hcl(&src) else {
            continue;
        }; // known-bad files
        formatted += 1;
        let a: hcl::Body = hcl::from_str(&src).unwrap();
        let b: hcl::Body = hcl::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "{}: formatted output does not parse: {e}\n{out}",
                f.display()
            )
        });
        assert_eq!(a, b, "{}: formatting changed the structure", f.display());
        assert_eq!(
            comments(&src),
            comments(&out),
            "{}: comments changed",
            f.display()
        );
        assert_eq!(
            kiln_config::fmt::format_hcl(&out).unwrap(),
            out,
            "{}: not idempotent",
            f.display()
        );
    }
    assert!(formatted > 50);
}
