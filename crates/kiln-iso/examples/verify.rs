//! Hash a file the way `kiln build` verifies a cached ISO (`kiln_iso::hash_file`, streamed in 1 MiB
//! reads): `cargo run --release -p kiln-iso --example verify -- FILE [sha256|sha512|sha1|md5]`.
//! Prints `<hex digest>  FILE` like `sha256sum`. Used by `cargo xtask bench`.

use kiln_iso::Algo;
use std::path::PathBuf;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: verify FILE [sha256|sha512|sha1|md5]");
        return std::process::ExitCode::from(2);
    };
    let algo = match args.next().and_then(|a| a.into_string().ok()).as_deref() {
        None | Some("sha256") => Algo::Sha256,
        Some("sha512") => Algo::Sha512,
        Some("sha1") => Algo::Sha1,
        Some("md5") => Algo::Md5,
        Some(other) => {
            eprintln!("unknown algorithm {other:?}: use sha256, sha512, sha1 or md5");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let url = format!("file://{}", file.display());
    match rt.block_on(kiln_iso::hash_file(&file, algo, &url, &|_| {})) {
        Ok(hex) => {
            println!("{hex}  {}", file.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(1)
        }
    }
}
