//! Machine type and accelerator (`machine`, `acpi`, `kvm`), CPU model and flags (`cpu`), SMP
//! topology (`sockets`, `cores`, `vcpus`), memory (`memory`) and the RTC (`localtime`,
//! `startdate`, `freeze`).

use super::kvm::kvm_usable;
use super::{parse_bool, parse_uint, push, unsupported, Accel, PropString, SpecError, VmSpec};
use std::collections::BTreeMap;

/// QEMU 7.2 (Debian bookworm) is the newest versioned machine type we can rely on.
const NEWEST_MACHINE_VERSION: (u32, u32) = (7, 2);

/// (base type `pc`|`q35`, QEMU machine name)
pub(super) fn machine_type(
    config: &BTreeMap<String, String>,
) -> Result<(&'static str, String), SpecError> {
    let Some(v) = config.get("machine") else {
        return Ok(("pc", "pc".into()));
    };
    let p = PropString::parse("machine", v, Some("type"))?;
    for (k, _) in &p.parts {
        match k.as_str() {
            "type" | "enable-s3" | "enable-s4" => {}
            "viommu" | "aw-bits" => {
                return Err(unsupported("machine", format!("'{k}' (virtual IOMMU)")))
            }
            _ => {
                return Err(SpecError::Invalid {
                    key: "machine".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                })
            }
        }
    }
    let t = p.get("type").unwrap_or("pc");
    // strip +pveN and .pxe
    let t = t.split('+').next().unwrap_or(t);
    let t = t.strip_suffix(".pxe").unwrap_or(t);
    let (base, version) = if t == "pc" || t == "q35" {
        (if t == "pc" { "pc" } else { "q35" }, None)
    } else if let Some(ver) = t
        .strip_prefix("pc-i440fx-")
        .or_else(|| t.strip_prefix("pc-").filter(|r| !r.starts_with("q35")))
    {
        ("pc", Some(ver))
    } else if let Some(ver) = t.strip_prefix("pc-q35-") {
        ("q35", Some(ver))
    } else if t.starts_with("virt") {
        return Err(unsupported(
            "machine",
            format!("'{t}' is an ARM machine type"),
        ));
    } else {
        return Err(SpecError::Invalid {
            key: "machine".into(),
            msg: format!("unknown machine type '{t}'"),
        });
    };
    let name = match version {
        None => base.to_string(),
        Some(ver) => {
            let mut it = ver.split('.').map(|x| x.parse::<u32>());
            let (Some(Ok(ma)), Some(Ok(mi))) = (it.next(), it.next()) else {
                return Err(SpecError::Invalid {
                    key: "machine".into(),
                    msg: format!("bad machine version in '{t}'"),
                });
            };
            if (ma, mi) > NEWEST_MACHINE_VERSION {
                // the host QEMU is older than the PVE machine version: use its newest one
                base.to_string()
            } else if base == "pc" {
                format!("pc-i440fx-{ma}.{mi}")
            } else {
                format!("pc-q35-{ma}.{mi}")
            }
        }
    };
    Ok((base, name))
}

/// PVE's own x86-64 ABI models: QEMU base model + flags.
fn pve_cpu_model(name: &str) -> Option<(&'static str, &'static str)> {
    const V2: &str = "+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3";
    Some(match name {
        "x86-64-v2" => ("qemu64", V2),
        "x86-64-v2-AES" => ("qemu64", "+aes,+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3"),
        "x86-64-v3" => ("qemu64", "+aes,+avx,+avx2,+bmi1,+bmi2,+cx16,+f16c,+fma,+lahf_lm,+abm,+movbe,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3,+xsave"),
        "x86-64-v4" => ("qemu64", "+aes,+avx,+avx2,+avx512bw,+avx512cd,+avx512dq,+avx512f,+avx512vl,+bmi1,+bmi2,+cx16,+f16c,+fma,+lahf_lm,+abm,+movbe,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3,+xsave"),
        _ => return None,
    })
}

/// `-cpu` value for the config.
fn cpu_arg(config: &BTreeMap<String, String>, kvm: bool) -> Result<String, SpecError> {
    let p = match config.get("cpu") {
        Some(v) => PropString::parse("cpu", v, Some("cputype"))?,
        None => PropString::default(),
    };
    for (k, _) in &p.parts {
        match k.as_str() {
            "cputype" | "flags" | "hidden" | "hv-vendor-id" | "phys-bits" | "guest-phys-bits"
            | "reported-model" | "level" => {}
            _ => {
                return Err(SpecError::Invalid {
                    key: "cpu".into(),
                    msg: format!("invalid key in comma-separated list property: {k}"),
                })
            }
        }
    }
    // PVE 8+ default
    let model = p.get("cputype").unwrap_or("x86-64-v2-AES");
    if model.starts_with("custom-") {
        return Err(unsupported(
            "cpu",
            format!("custom CPU model '{model}' (cpu-models.conf)"),
        ));
    }
    let mut out = match (model, kvm) {
        ("host", true) => "host".to_string(),
        // `host` needs KVM; `max` is TCG's everything-it-can-emulate equivalent
        ("host", false) | ("max", _) => "max".to_string(),
        _ => match pve_cpu_model(model) {
            Some((base, flags)) if kvm => format!("{base},{flags}"),
            // under TCG the ABI models map to `max` (a superset; TCG cannot emulate every
            // v3/v4 extension individually without warnings)
            Some(_) => "max".to_string(),
            None => model.to_string(),
        },
    };
    if kvm && matches!(model, "kvm64" | "kvm32" | "qemu64" | "qemu32") {
        out.push_str(",+lahf_lm,+sep");
    }
    if let Some(flags) = p.get("flags") {
        for f in flags.split(';').filter(|f| !f.is_empty()) {
            if !(f.starts_with('+') || f.starts_with('-')) {
                return Err(SpecError::Invalid {
                    key: "cpu".into(),
                    msg: format!("flag '{f}' must start with + or -"),
                });
            }
            out.push(',');
            out.push_str(f);
        }
    }
    if let Some(bits) = p.get("phys-bits") {
        if bits == "host" {
            out.push_str(",host-phys-bits=true");
        } else {
            out.push_str(&format!(",phys-bits={}", parse_uint("cpu", bits)?));
        }
    }
    if p.bool("cpu", "hidden")?.unwrap_or(false) {
        out.push_str(",kvm=off");
    }
    Ok(out)
}

/// Whether QEMU runs with KVM: `kvm: 0` forbids it, otherwise the spec's [`Accel`] decides (for
/// [`Accel::Auto`], the KVM probe).
pub(super) fn kvm_enabled(spec: &VmSpec) -> Result<bool, SpecError> {
    let c = &spec.config;
    let kvm_allowed = c
        .get("kvm")
        .map(|v| parse_bool("kvm", v))
        .transpose()?
        .unwrap_or(true);
    let kvm = kvm_allowed
        && match spec.accel {
            Accel::Kvm => true,
            Accel::Tcg => false,
            Accel::Auto => kvm_usable(),
        };
    Ok(kvm)
}

/// `-machine` and `-accel`, and whether the machine is a q35.
pub(super) fn machine_args(
    c: &BTreeMap<String, String>,
    kvm: bool,
) -> Result<(Vec<String>, bool), SpecError> {
    let mut a: Vec<String> = Vec::new();
    let (base, machine) = machine_type(c)?;
    let q35 = base == "q35";
    let mut machine_arg = format!("type={machine}");
    if c.get("acpi").map(|v| parse_bool("acpi", v)).transpose()? == Some(false) {
        machine_arg.push_str(",acpi=off");
    }
    push(&mut a, &["-machine", &machine_arg]);
    push(&mut a, &["-accel", if kvm { "kvm" } else { "tcg" }]);
    Ok((a, q35))
}

/// `-smp`, `-cpu` and `-m`.
pub(super) fn cpu_memory_args(
    c: &BTreeMap<String, String>,
    kvm: bool,
) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let sockets = c
        .get("sockets")
        .map(|v| parse_uint("sockets", v))
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let cores = c
        .get("cores")
        .map(|v| parse_uint("cores", v))
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let maxcpus = sockets * cores;
    let vcpus = c
        .get("vcpus")
        .map(|v| parse_uint("vcpus", v))
        .transpose()?
        .filter(|v| *v > 0)
        .unwrap_or(maxcpus)
        .min(maxcpus);
    push(
        &mut a,
        &[
            "-smp",
            &format!("{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}"),
        ],
    );
    push(&mut a, &["-cpu", &cpu_arg(c, kvm)?]);
    let memory = match c.get("memory") {
        Some(v) => {
            let p = PropString::parse("memory", v, Some("current"))?;
            parse_uint("memory", p.get("current").unwrap_or("512"))?
        }
        None => 512,
    };
    push(&mut a, &["-m", &memory.to_string()]);
    Ok(a)
}

/// `-rtc` (`localtime`, `startdate`) and `-S` (`freeze`).
pub(super) fn rtc_args(c: &BTreeMap<String, String>) -> Result<Vec<String>, SpecError> {
    let mut a: Vec<String> = Vec::new();
    let localtime = c
        .get("localtime")
        .map(|v| parse_bool("localtime", v))
        .transpose()?
        .unwrap_or(false);
    match c.get("startdate").map(String::as_str) {
        None | Some("now") => {
            if localtime {
                push(&mut a, &["-rtc", "base=localtime"]);
            }
        }
        Some(d) => push(&mut a, &["-rtc", &format!("base={d}")]),
    }
    if c.get("freeze")
        .map(|v| parse_bool("freeze", v))
        .transpose()?
        .unwrap_or(false)
    {
        push(&mut a, &["-S"]);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use crate::spec::test_support::{joined, spec, values};
    use crate::spec::{qemu_args, Accel};

    #[test]
    fn cpu_memory_machine_table() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("cores", "2"), ("sockets", "2")], "-smp 4,sockets=2,cores=2,maxcpus=4"),
            (&[("cores", "2"), ("vcpus", "1")], "-smp 1,sockets=1,cores=2,maxcpus=2"),
            (&[("memory", "2048")], "-m 2048"),
            (&[("memory", "current=1024")], "-m 1024"),
            (&[("cpu", "host")], "-cpu max"),
            (&[("cpu", "x86-64-v2-AES")], "-cpu max"),
            (&[("cpu", "kvm64")], "-cpu kvm64"),
            (&[("cpu", "qemu64,flags=+aes;-pcid")], "-cpu qemu64,+aes,-pcid"),
            (&[("cpu", "cputype=max")], "-cpu max"),
            (&[("cpu", "Haswell")], "-cpu Haswell"),
            (&[("machine", "q35")], "-machine type=q35"),
            (&[("machine", "pc-i440fx-6.2")], "-machine type=pc-i440fx-6.2"),
            (&[("machine", "pc-i440fx-9.2+pve1")], "-machine type=pc "),
            (&[("machine", "pc-q35-7.1")], "-machine type=pc-q35-7.1"),
            (&[("machine", "type=q35,enable-s3=1")], "-machine type=q35"),
            (&[("acpi", "0")], "-machine type=pc,acpi=off"),
            (&[("kvm", "0")], "-accel tcg"),
            (&[("freeze", "1")], " -S "),
            (&[("startdate", "2020-01-01")], "-rtc base=2020-01-01"),
            (&[("localtime", "1")], "-rtc base=localtime"),
            (
                &[("smbios1", "uuid=5b0b1a2c-1111-2222-3333-444455556666")],
                "-uuid 5b0b1a2c-1111-2222-3333-444455556666 -smbios type=1,uuid=5b0b1a2c-1111-2222-3333-444455556666",
            ),
            (
                &[("smbios1", "base64=1,manufacturer=a2lsbg==,uuid=5b0b1a2c-1111-2222-3333-444455556666")],
                ",manufacturer=kiln",
            ),
            (&[("vga", "serial0"), ("serial0", "socket")], "isa-serial,chardev=serial0"),
            (&[("vga", "qxl")], "-device qxl-vga,id=vga"),
            (&[("vga", "virtio")], "-device virtio-vga,id=vga"),
            (&[("vga", "std,memory=32")], "-device VGA,id=vga,vgamem_mb=32"),
            (&[("balloon", "0"), ("watchdog", "model=i6300esb,action=reset")], "-device i6300esb -watchdog-action reset"),
            (&[("rng0", "source=/dev/urandom")], "-object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0,id=rng0"),
        ];
        for (cfg, frag) in table {
            let s = format!("{} ", joined(cfg));
            assert!(s.contains(frag), "{cfg:?}: missing {frag:?} in {s}");
        }
        // extras: vga none has no display device, balloon 0 has no balloon
        assert!(!joined(&[("vga", "none")]).contains("id=vga"));
        assert!(!joined(&[("balloon", "0")]).contains("balloon"));
        assert!(!joined(&[("vga", "serial0")]).contains("id=vga"));
    }

    #[test]
    fn kvm_keeps_host_and_pve_models() {
        let mut s = spec(&[("cpu", "host")]);
        s.accel = Accel::Kvm;
        let a = qemu_args(&s).unwrap();
        assert_eq!(values(&a, "-cpu"), ["host"]);
        assert_eq!(values(&a, "-accel"), ["kvm"]);
        let mut s = spec(&[("cpu", "x86-64-v2-AES")]);
        s.accel = Accel::Kvm;
        assert_eq!(
            values(&qemu_args(&s).unwrap(), "-cpu"),
            ["qemu64,+aes,+cx16,+lahf_lm,+popcnt,+pni,+sse4.1,+sse4.2,+ssse3"]
        );
        // kvm: 0 wins over Accel::Kvm
        let mut s = spec(&[("kvm", "0")]);
        s.accel = Accel::Kvm;
        assert_eq!(values(&qemu_args(&s).unwrap(), "-accel"), ["tcg"]);
    }
}
