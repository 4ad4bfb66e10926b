//! Upload an ISO the way `kiln build` does (`Client::upload`, streamed multipart) and print the UPID
//! of PVE's import task, like `curl -F filename=@FILE` would: `upload URL NODE STORAGE FILE`, password in `PROXMOX_PASSWORD` (user `root@pam`),
//! TLS not verified (a local sandbox). Used by `cargo xtask bench` to compare with `curl`.

use kiln_pve::{Auth, Client, ConnectOptions, Secret, Tls, UploadContent, UploadRequest};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [url, node, storage, file] = a.as_slice() else {
        eprintln!("usage: upload URL NODE STORAGE FILE (password in PROXMOX_PASSWORD)");
        return ExitCode::from(2);
    };
    let Ok(password) = std::env::var("PROXMOX_PASSWORD") else {
        eprintln!("PROXMOX_PASSWORD is not set");
        return ExitCode::from(2);
    };
    let path = PathBuf::from(file);
    let filename = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut opts = ConnectOptions::new(
        url.clone(),
        Auth::Password {
            username: "root@pam".into(),
            password: Secret::new(password),
        },
    );
    opts.tls = Tls::Insecure;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(async {
        let client = Client::connect(opts).await?;
        let req = UploadRequest {
            path,
            filename,
            content: UploadContent::Iso,
            checksum: None,
        };
        client.upload(node, storage, &req, None).await
    });
    match r {
        Ok(upid) => {
            println!("{upid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upload failed: {e}");
            ExitCode::from(1)
        }
    }
}
