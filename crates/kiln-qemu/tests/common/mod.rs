// shared helpers for the e2e tests (included with `mod common;`)
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_qemu::{Accel, VmSpec};

/// A short run directory (Unix socket paths must stay < 108 bytes).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kq")
        .tempdir_in("/tmp")
        .expect("tempdir in /tmp")
}

/// A spec whose volumes `store:name` live in `<dir>/<store>/<name>`.
pub fn spec_in(dir: &Path, vmid: u32, config: &[(&str, &str)]) -> VmSpec {
    let vol_root = dir.join("vols");
    VmSpec {
        vmid,
        name: format!("kiln-qemu-test-{vmid}"),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        volume_path: Box::new(move |vol: &str| {
            let (store, name) = vol.split_once(':')?;
            let p = vol_root.join(store).join(name);
            Some(p)
        }),
        run_dir: dir.join("run"),
        accel: Accel::Tcg,
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// The test-guest ISO (env KILN_TEST_GUEST_ISO or target/test-guest/guest.iso), if it exists.
pub fn test_guest_iso() -> Option<PathBuf> {
    kiln_testguest::iso_path().ok()
}
