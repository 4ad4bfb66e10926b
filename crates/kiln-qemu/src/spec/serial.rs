//! Serial ports (`serialN: socket`; serial0 is always present and logged to
//! [`RunPaths::serial_log`]) and the guest-agent channel (`agent`).

use super::{esc, push, unsupported, PropString, RunPaths, SpecError};
use std::collections::BTreeMap;

/// `-chardev`/`-device isa-serial` pairs for serial0..serial3.
pub(super) fn serial_args(
    c: &BTreeMap<String, String>,
    paths: &RunPaths,
) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let mut serial0_done = false;
    for n in 0..=3u32 {
        let key = format!("serial{n}");
        let Some(v) = c.get(&key) else { continue };
        if v != "socket" {
            return Err(unsupported(&key, format!("host serial device '{v}'")));
        }
        let log = if n == 0 {
            serial0_done = true;
            format!(",logfile={},logappend=on", esc(&paths.serial_log))
        } else {
            String::new()
        };
        push(
            &mut a,
            &[
                "-chardev",
                &format!(
                    "socket,id={key},path={},server=on,wait=off{log}",
                    esc(&paths.serial_socket(n))
                ),
                "-device",
                &format!("isa-serial,chardev={key}"),
            ],
        );
    }
    if !serial0_done {
        push(
            &mut a,
            &[
                "-chardev",
                &format!(
                    "null,id=serial0,logfile={},logappend=on",
                    esc(&paths.serial_log)
                ),
                "-device",
                "isa-serial,chardev=serial0",
            ],
        );
    }
    Ok(a)
}

/// The guest-agent socket and its virtio-serial (or ISA serial) port, when `agent` is enabled.
pub(super) fn agent_args(
    c: &BTreeMap<String, String>,
    paths: &RunPaths,
) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    if let Some(v) = c.get("agent") {
        let p = PropString::parse("agent", v, Some("enabled"))?;
        for (k, _) in &p.parts {
            if ![
                "enabled",
                "fstrim_cloned_disks",
                "type",
                "freeze-fs-on-backup",
                "freeze-fs",
            ]
            .contains(&k.as_str())
            {
                return Err(SpecError::Invalid {
                    key: "agent".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                });
            }
        }
        if p.bool("agent", "enabled")?.unwrap_or(false) {
            push(
                &mut a,
                &[
                    "-chardev",
                    &format!("socket,path={},server=on,wait=off,id=qga0", esc(&paths.qga)),
                ],
            );
            match p.get("type").unwrap_or("virtio") {
                "virtio" => push(
                    &mut a,
                    &[
                        "-device",
                        "virtio-serial,id=qga0",
                        "-device",
                        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                    ],
                ),
                "isa" => push(&mut a, &["-device", "isa-serial,chardev=qga0"]),
                t => {
                    return Err(SpecError::Invalid {
                        key: "agent".into(),
                        msg: format!("type '{t}' (expected virtio or isa)"),
                    })
                }
            }
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use crate::spec::test_support::joined;

    #[test]
    fn agent_variants() {
        assert!(joined(&[("agent", "1")])
            .contains("virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"));
        assert!(joined(&[("agent", "enabled=1,fstrim_cloned_disks=1")])
            .contains("org.qemu.guest_agent.0"));
        assert!(!joined(&[("agent", "0")]).contains("qga0"));
        assert!(!joined(&[("agent", "enabled=0,type=virtio")]).contains("qga0"));
        assert!(joined(&[("agent", "1,type=isa")]).contains("isa-serial,chardev=qga0"));
    }
}
