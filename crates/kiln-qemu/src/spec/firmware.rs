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
    let (code, vars) = match (efitype, enrolled) {
        ("4m", true) if q35 => ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
        ("4m", true) => {
            return Err(SpecError::Unsupported {
                key: "efidisk0".into(),
                msg: "pre-enrolled-keys=1 (Secure Boot) needs machine q35 (SMM)".into(),
            })
        }
        ("4m", false) => ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("2m", true) => ("OVMF_CODE.secboot.fd", "OVMF_VARS.ms.fd"),
        ("2m", false) => ("OVMF_CODE.fd", "OVMF_VARS.fd"),
        (other, _) => {
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
                    let path = if file.starts_with('/') {
                        PathBuf::from(file)
                    } else {
                        (spec.volume_path)(file).ok_or_else(|| SpecError::MissingVolume {
                            key: "efidisk0".into(),
                            volume: file.into(),
                        })?
                    };
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
    use crate::spec::test_support::{args, spec, values};
    use crate::spec::{qemu_args, SpecError};

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
        assert!(matches!(
            qemu_args(&spec(&[
                ("bios", "ovmf"),
                ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=1")
            ])),
            Err(SpecError::Unsupported { .. })
        ));
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
