//! Validate every row of the committed corpus snapshot (`tests/corpus/`, made by
//! `cargo xtask corpus`) and compare `inspect` output with the golden files.
//! Rows and expected verdicts are in `tests/corpus/rows.json`.
//! `KILN_UPDATE_GOLDEN=1` rewrites the golden files instead of comparing.

use kiln_config::LoadOptions;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Row {
    id: u32,
    /// directory (relative to tests/corpus) to run in (Packer's cwd)
    cwd: String,
    /// template path relative to cwd
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    var_files: Vec<String>,
    #[serde(default)]
    vars: Vec<(String, String)>,
    #[serde(default)]
    env: Vec<(String, String)>,
    /// "valid", "invalid" or "json"
    expect: String,
    /// for "invalid": errors that must be present (file suffix, line, message fragment)
    #[serde(default)]
    errors: Vec<ExpectedError>,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct ExpectedError {
    file: String,
    line: usize,
    contains: String,
}

fn dot() -> String {
    ".".into()
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn options(row: &Row, cwd: &Path) -> LoadOptions {
    LoadOptions {
        vars: row.vars.clone(),
        var_files: row.var_files.iter().map(PathBuf::from).collect(),
        env: row.env.clone(),
        only: Vec::new(),
        except: Vec::new(),
        now: Some(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
        cwd: Some(cwd.to_path_buf()),
    }
}

fn normalise(s: &str, corpus: &Path) -> String {
    let s = s.replace(&corpus.display().to_string(), "<corpus>");
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let s = uuid.replace_all(&s, "<uuid>").to_string();
    let bcrypt = regex::Regex::new(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}").unwrap();
    bcrypt.replace_all(&s, "<bcrypt>").to_string()
}

#[test]
fn corpus_rows() {
    let corpus = corpus_dir();
    let rows: Vec<Row> =
        serde_json::from_str(&std::fs::read_to_string(corpus.join("rows.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 34, "the corpus has 34 template rows");
    let update = std::env::var("KILN_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut table = String::new();
    for row in &rows {
        let cwd = corpus.join(&row.cwd);
        let opts = options(row, &cwd);
        let res = kiln_config::load(Path::new(&row.path), &opts);
        let verdict = match &res {
            Ok(_) => "valid".to_string(),
            Err(e)
                if e.errors
                    .iter()
                    .any(|d| d.message.contains("JSON templates are not supported")) =>
            {
                "json".to_string()
            }
            Err(_) => "invalid".to_string(),
        };
        let first = match &res {
            Ok(l) => format!(
                "{} build(s), {} warning(s)",
                l.plan.runs.len(),
                l.warnings.len()
            ),
            Err(e) => e.errors.first().map(|d| d.one_line()).unwrap_or_default(),
        };
        table.push_str(&format!(
            "{:>2} {:<8} {:<70} {}\n",
            row.id, verdict, row.cwd, first
        ));
        if verdict != row.expect {
            let detail = match &res {
                Err(e) => e
                    .errors
                    .iter()
                    .map(|d| format!("    {}", d.one_line()))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Ok(_) => String::new(),
            };
            failures.push(format!(
                "row {} ({}): expected {}, got {verdict}\n{detail}",
                row.id, row.cwd, row.expect
            ));
            continue;
        }
        match &res {
            Err(e) => {
                for want in &row.errors {
                    let hit = e.errors.iter().any(|d| {
                        d.location.as_ref().is_some_and(|l| {
                            l.file.to_string_lossy().ends_with(&want.file) && l.line == want.line
                        }) && d.message.contains(&want.contains)
                    });
                    if !hit {
                        failures.push(format!(
                            "row {}: no error at {}:{} containing {:?}; got:\n{}",
                            row.id,
                            want.file,
                            want.line,
                            want.contains,
                            e.errors
                                .iter()
                                .map(|d| format!("    {}", d.one_line()))
                                .collect::<Vec<_>>()
                                .join("\n")
                        ));
                    }
                }
            }
            Ok(l) => {
                let text = normalise(&kiln_config::inspect::render(&l.plan), &corpus);
                let golden = corpus.join(format!("golden/row-{:02}.txt", row.id));
                if update {
                    std::fs::write(&golden, &text).unwrap();
                } else {
                    match std::fs::read_to_string(&golden) {
                        Ok(g) if g == text => {}
                        Ok(g) => failures.push(format!(
                            "row {}: inspect output differs from {}:\n{}",
                            row.id,
                            golden.display(),
                            first_diff(&g, &text)
                        )),
                        Err(_) => failures.push(format!(
                            "row {}: missing golden file {} (run `cargo xtask corpus`)",
                            row.id,
                            golden.display()
                        )),
                    }
                }
            }
        }
        let _ = &row.note;
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} corpus failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn first_diff(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("  line {}:\n  golden: {x}\n  now:    {y}", i + 1);
        }
    }
    format!(
        "  lengths differ: golden {} lines, now {} lines",
        a.lines().count(),
        b.lines().count()
    )
}
