//! Helpers shared by the spec unit tests: a [`VmSpec`] whose volumes map to fake paths under
//! `/st/<storage>/`, and shortcuts to look at the generated arguments.

use super::{qemu_args, Accel, VmSpec};
use std::path::PathBuf;

pub(super) fn spec(pairs: &[(&str, &str)]) -> VmSpec {
    VmSpec {
        vmid: 100,
        name: "test".into(),
        config: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        volume_path: Box::new(|vol: &str| {
            let (store, name) = vol.split_once(':')?;
            if name.contains("missing") {
                return None;
            }
            let name = name.rsplit('/').next().unwrap_or(name);
            let name = if store == "local-lvm" && !name.contains('.') {
                format!("{name}.qcow2")
            } else {
                name.to_string()
            };
            Some(PathBuf::from(format!("/st/{store}/{name}")))
        }),
        run_dir: PathBuf::from("/run/kiln/100"),
        accel: Accel::Tcg,
    }
}

pub(super) fn args(pairs: &[(&str, &str)]) -> Vec<String> {
    qemu_args(&spec(pairs)).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
}

pub(super) fn joined(pairs: &[(&str, &str)]) -> String {
    args(pairs).join(" ")
}

/// value following `opt` for every occurrence
pub(super) fn values<'a>(a: &'a [String], opt: &str) -> Vec<&'a str> {
    a.windows(2)
        .filter(|w| w[0] == opt)
        .map(|w| w[1].as_str())
        .collect()
}
