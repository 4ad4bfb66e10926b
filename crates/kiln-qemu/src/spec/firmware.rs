//! Firmware: SeaBIOS or OVMF (`bios`), the OVMF code/vars images for a config (`efidisk0`'s
//! `efitype` and `pre-enrolled-keys`, the machine type), the EFI vars pflash drive and the
//! secure-flash `-global` of Secure Boot images.

use super::drives::image_format;
use super::machine::machine_type;
use super::{esc, parse_bool, push, PropString, RunPaths, SpecError, VmSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// OVMF firmware directory of Debian's `ovmf` package.
pub const OVMF_DIR: &str = "/usr/share/OVMF";

/// The EFI vars template PVE copies into an `efidisk0` for this config (`efitype`,
/// `pre-enrolled-keys`), e.g. `/usr/share/OVMF/OVMF_VARS_4M.fd`.
pub fn efivars_template(config: &BTreeMap<String, String>) -> Result<PathBuf, SpecError> {
    let (_, vars) = ovmf_files(config)?;
    Ok(vars)
}

/// (code, vars template) for the config.
fn ovmf_files(config: &BTreeMap<String, String>) -> Result<(PathBuf, PathBuf), SpecError> {
    let efi = match config.get("efidisk0") {
        Some(v) => PropString::parse("efidisk0", v, Some("file"))?,
        None => PropString::default(),
    };
    let efitype = efi.get("efitype").unwrap_or("2m");
    let enrolled = efi
        .get("pre-enrolled-keys")
        .map(|v| parse_bool("efidisk0", v))
        .transpose()?
        .unwrap_or(false);
    let q35 = machine_type(config)?.0 == "q35";
    let dir = Path::new(OVMF_DIR);
    // qemu-server's table: 4m images use the SMM-protected (Secure Boot) build on q35 and the
    // plain build without SMM elsewhere ("4m-no-smm"), with Microsoft's keys in the vars when
    // pre-enrolled-keys=1 ("-ms"; on i440fx that is Secure Boot without SMM, as PVE does);
    // pre-enrolled-keys only applies to efitype=4m, 2m is always the plain pair.
    let (code, vars) = match efitype {
        "4m" => (
            if q35 {
                "OVMF_CODE_4M.secboot.fd"
            } else {
                "OVMF_CODE_4M.fd"
            },
            if enrolled {
                "OVMF_VARS_4M.ms.fd"
            } else {
                "OVMF_VARS_4M.fd"
            },
        ),
        "2m" => ("OVMF_CODE.fd", "OVMF_VARS.fd"),
        other => {
            return Err(SpecError::Invalid {
                key: "efidisk0".into(),
                msg: format!("efitype '{other}' (expected 2m or 4m)"),
            })
        }
    };
    Ok((dir.join(code), dir.join(vars)))
}

/// The firmware arguments for `bios` (none for SeaBIOS; the OVMF code and vars pflash drives).
pub(super) fn firmware_args(spec: &VmSpec, paths: &RunPaths) -> Result<Vec<String>, SpecError> {
    let c = &spec.config;
    let mut a: Vec<String> = Vec::new();
    let bios = c.get("bios").map(String::as_str).unwrap_or("seabios");
    match bios {
        "seabios" => {
            if c.contains_key("efidisk0") {
                tracing::debug!("efidisk0 ignored with bios=seabios");
            }
        }
        "ovmf" => {
            let (code, _) = ovmf_files(c)?;
            if !code.exists() {
                return Err(SpecError::MissingFile {
                    what: "OVMF firmware".into(),
                    path: code,
                    package: "ovmf".into(),
                });
            }
            push(
                &mut a,
                &[
                    "-drive",
                    &format!(
                        "if=pflash,unit=0,format=raw,readonly=on,file={}",
                        code.display()
                    ),
                ],
            );
            if code
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".secboot."))
            {
                // Secure Boot firmware keeps its variables in SMM-protected flash (qemu-server
                // does the same for these images)
                push(
                    &mut a,
                    &["-global", "driver=cfi.pflash01,property=secure,value=on"],
                );
            }
            let (vars, fmt) = match c.get("efidisk0") {
                Some(v) => {
                    let p = PropString::parse("efidisk0", v, Some("file"))?;
                    let file = p.get("file").unwrap_or("");
                    let path = super::state_volume_path(spec, "efidisk0", file)?;
                    let fmt = image_format(&path, p.get("format"));
                    (path, fmt)
                }
                None => (paths.efivars.clone(), "raw".to_string()),
            };
            push(
                &mut a,
                &[
                    "-drive",
                    &format!(
                        "if=pflash,unit=1,id=drive-efidisk0,format={fmt},file={}",
                        esc(&vars)
                    ),
                ],
            );
        }
        other => {
            return Err(SpecError::Invalid {
                key: "bios".into(),
                msg: format!("'{other}' (expected seabios or ovmf)"),
            })
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::qemu_args;
    use crate::spec::test_support::{args, spec, values};

    #[test]
    fn ovmf_and_efidisk() {
        if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists() {
            // qemu_args checks the firmware exists; without the package the error must say so
            let e = qemu_args(&spec(&[
                ("bios", "ovmf"),
                ("efidisk0", "local-lvm:vm-100-disk-1,efitype=4m"),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains("ovmf"), "{e}");
            return;
        }
        let a = args(&[
            ("bios", "ovmf"),
            (
                "efidisk0",
                "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=0,size=4M",
            ),
        ]);
        assert_eq!(
            values(&a, "-drive"),
            [
                "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,unit=1,id=drive-efidisk0,format=qcow2,file=/st/local-lvm/vm-100-disk-1.qcow2"
            ]
        );
        let a = args(&[("bios", "ovmf")]);
        assert_eq!(
            values(&a, "-drive")[1],
            "if=pflash,unit=1,id=drive-efidisk0,format=raw,file=/run/kiln/100/efivars.fd"
        );
        let cfg: BTreeMap<String, String> = [
            ("machine".to_string(), "q35".to_string()),
            (
                "efidisk0".to_string(),
                "local-lvm:1,efitype=4m,pre-enrolled-keys=1".to_string(),
            ),
        ]
        .into();
        assert_eq!(
            efivars_template(&cfg).unwrap(),
            PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        // i440fx with Microsoft's keys: Secure Boot without SMM (PVE's "4m-no-smm-ms"), as in
        // corpus row 28
        let a = qemu_args(&spec(&[
            ("bios", "ovmf"),
            ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1"),
        ]))
        .unwrap()
        .join(" ");
        assert!(a.contains("file=/usr/share/OVMF/OVMF_CODE_4M.fd"), "{a}");
        assert!(!a.contains("property=secure"), "{a}");
        // pre-enrolled-keys only applies to 4m; 2m is the plain pair
        let cfg2m: BTreeMap<String, String> = [(
            "efidisk0".to_string(),
            "local-lvm:1,pre-enrolled-keys=1".to_string(),
        )]
        .into();
        assert_eq!(
            efivars_template(&cfg2m).unwrap(),
            PathBuf::from("/usr/share/OVMF/OVMF_VARS.fd")
        );
    }

    #[test]
    fn secure_boot_firmware_gets_secure_flash() {
        let s = spec(&[
            ("bios", "ovmf"),
            ("machine", "q35"),
            (
                "efidisk0",
                "local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=1",
            ),
        ]);
        let args = qemu_args(&s).unwrap().join(" ");
        assert!(args.contains("OVMF_CODE_4M.secboot.fd"), "{args}");
        assert!(
            args.contains("-global driver=cfi.pflash01,property=secure,value=on"),
            "{args}"
        );
        let plain = spec(&[
            ("bios", "ovmf"),
            ("efidisk0", "local-lvm:vm-100-disk-1,efitype=4m"),
        ]);
        assert!(!qemu_args(&plain)
            .unwrap()
            .join(" ")
            .contains("property=secure"));
    }
}
