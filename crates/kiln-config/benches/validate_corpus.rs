//! Time `load()` (= `kiln validate`) over every template row of the committed corpus snapshot.
//! Run with `cargo bench -p kiln-config --bench validate_corpus` (release profile).
//! Prints the time for one pass over all 34 rows (best and median of the repetitions).

use kiln_config::LoadOptions;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Row {
    cwd: String,
    #[serde(default = "dot")]
    path: String,
    #[serde(default)]
    var_files: Vec<String>,
    #[serde(default)]
    vars: Vec<(String, String)>,
    #[serde(default)]
    env: Vec<(String, String)>,
}

fn dot() -> String {
    ".".into()
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let rows: Vec<Row> =
        match std::fs::read_to_string(corpus.join("rows.json")).map(|t| serde_json::from_str(&t)) {
            Ok(Ok(r)) => r,
            _ => {
                eprintln!("cannot read tests/corpus/rows.json");
                std::process::exit(1);
            }
        };
    let reps: usize = std::env::var("KILN_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let pass = || {
        let mut valid = 0;
        for row in &rows {
            let cwd = corpus.join(&row.cwd);
            let opts = LoadOptions {
                vars: row.vars.clone(),
                var_files: row.var_files.iter().map(PathBuf::from).collect(),
                env: row.env.clone(),
                cwd: Some(cwd),
                ..LoadOptions::isolated()
            };
            if kiln_config::load(Path::new(&row.path), &opts).is_ok() {
                valid += 1;
            }
        }
        valid
    };
    let valid = pass(); // warm-up (file cache)
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        std::hint::black_box(pass());
        times.push(t.elapsed());
    }
    times.sort();
    // per-row breakdown: the slowest rows
    let mut per_row: Vec<(f64, &str)> = rows
        .iter()
        .map(|row| {
            let opts = LoadOptions {
                vars: row.vars.clone(),
                var_files: row.var_files.iter().map(PathBuf::from).collect(),
                env: row.env.clone(),
                cwd: Some(corpus.join(&row.cwd)),
                ..LoadOptions::isolated()
            };
            let t = Instant::now();
            let _ = kiln_config::load(Path::new(&row.path), &opts);
            (t.elapsed().as_secs_f64() * 1e3, row.cwd.as_str())
        })
        .collect();
    per_row.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, name) in per_row.iter().take(3) {
        println!("  slowest: {ms:.2} ms  {name}");
    }
    let best = times[0];
    let median = times[times.len() / 2];
    println!(
        "validate over {} corpus rows ({valid} valid): best {:.2} ms, median {:.2} ms per pass ({reps} passes)",
        rows.len(),
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3
    );
}
