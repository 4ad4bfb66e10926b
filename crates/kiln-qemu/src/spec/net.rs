//! NICs (`netN`): QEMU NIC models, MACs, MTU, a tap device on a bridge or user-mode networking,
//! bootindex, and what the VM runtime needs for them (tap names, bridges, links to set down).

use super::{is_indexed, parse_bool, parse_uint, push, PropString, SpecError, VmSpec};
use std::collections::BTreeMap;

/// Name of the tap device PVE uses for `net{n}` of VM `vmid`: `tap{vmid}i{n}`.
pub fn tap_name(vmid: u32, n: u32) -> String {
    format!("tap{vmid}i{n}")
}

/// The indexes of the `netN` keys, in numeric order.
pub(super) fn net_indexes(c: &BTreeMap<String, String>) -> Vec<u32> {
    let mut nets: Vec<u32> = c.keys().filter_map(|k| is_indexed(k, "net", 31)).collect();
    nets.sort_unstable();
    nets
}

/// `-netdev`/`-device` pairs for the NICs `nets` (from [`net_indexes`]).
pub(super) fn net_args(
    spec: &VmSpec,
    nets: &[u32],
    bootidx: &BTreeMap<String, u32>,
) -> Result<Vec<String>, SpecError> {
    let c = &spec.config;
    let mut a: Vec<String> = Vec::new();
    for n in nets {
        let key = format!("net{n}");
        let v = &c[&key];
        let p = PropString::parse(&key, v, None)
            .or_else(|_| PropString::parse(&key, v, Some("model")))?;
        let mut model: Option<String> = None;
        let mut mac: Option<String> = None;
        let mut bridge: Option<&str> = None;
        let mut link_down = false;
        let mut mtu: Option<u64> = None;
        for (k, val) in &p.parts {
            match k.as_str() {
                "model" => model = Some(val.clone()),
                "macaddr" => mac = Some(val.clone()),
                "bridge" => bridge = Some(val),
                "link_down" => link_down = parse_bool(&key, val)?,
                "mtu" => mtu = Some(parse_uint(&key, val)?),
                // host-side only: firewall bridge, VLAN tagging on the bridge, rate limit,
                // queues (multi-queue needs a multi-queue tap; the guest just sees one queue)
                "firewall" | "tag" | "trunks" | "rate" | "queues" => {}
                m if net_device(m).is_some() => {
                    model = Some(m.to_string());
                    mac = Some(val.clone());
                }
                _ => {
                    return Err(SpecError::Invalid {
                        key: key.clone(),
                        msg: format!("invalid key in comma-separated list property: {k}"),
                    })
                }
            }
        }
        let model = model.ok_or_else(|| SpecError::Invalid {
            key: key.clone(),
            msg: "no model".into(),
        })?;
        let dev = net_device(&model).ok_or_else(|| SpecError::Invalid {
            key: key.clone(),
            msg: format!("unknown model '{model}'"),
        })?;
        let netdev = match bridge {
            Some(_) => format!(
                "tap,id={key},ifname={},script=no,downscript=no",
                tap_name(spec.vmid, *n)
            ),
            None => format!("user,id={key}"),
        };
        let mut d = format!("{dev},netdev={key},id={key}");
        if let Some(m) = &mac {
            d.push_str(&format!(",mac={m}"));
        }
        if let (Some(m), "virtio-net-pci") = (mtu, dev) {
            if m > 1 {
                d.push_str(&format!(",host_mtu={m}"));
            }
        }
        if link_down {
            // no command-line switch for the carrier: the VM runtime sends QMP set_link
            tracing::debug!(%key, "link_down=1: link set down after start");
        }
        if let Some(b) = bootidx.get(&key) {
            d.push_str(&format!(",bootindex={b}"));
        }
        push(&mut a, &["-netdev", &netdev, "-device", &d]);
    }
    Ok(a)
}

/// QEMU device for a PVE NIC model.
fn net_device(model: &str) -> Option<&'static str> {
    Some(match model {
        "virtio" => "virtio-net-pci",
        "e1000" => "e1000",
        "e1000e" => "e1000e",
        "e1000-82540em" => "e1000-82540em",
        "e1000-82544gc" => "e1000-82544gc",
        "e1000-82545em" => "e1000-82545em",
        "rtl8139" => "rtl8139",
        "vmxnet3" => "vmxnet3",
        "i82551" => "i82551",
        "i82557b" => "i82557b",
        "i82559er" => "i82559er",
        "ne2k_pci" => "ne2k_pci",
        "ne2k_isa" => "ne2k_isa",
        "pcnet" => "pcnet",
        _ => return None,
    })
}

/// Which NICs have `link_down=1` (the runtime sets them down through QMP after start).
pub fn links_down(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .iter()
        .filter(|(k, _)| is_indexed(k, "net", 31).is_some())
        .filter(|(_, v)| {
            v.split(',').any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, v)| k == "link_down" && parse_bool("net", v).unwrap_or(false))
            })
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The `netN` keys with a `bridge=` and their bridge, e.g. `[(0, "vmbr0")]`.
pub fn bridged_nets(config: &BTreeMap<String, String>) -> Vec<(u32, String)> {
    config
        .iter()
        .filter_map(|(k, v)| {
            let n = is_indexed(k, "net", 31)?;
            let b = v
                .split(',')
                .find_map(|p| p.strip_prefix("bridge="))?
                .to_string();
            Some((n, b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::qemu_args;
    use crate::spec::test_support::{args, spec, values};

    #[test]
    fn nics() {
        let a = args(&[
            (
                "net0",
                "model=e1000,macaddr=BC:24:11:00:00:02,bridge=vmbr1,mtu=1400",
            ),
            ("net1", "rtl8139=BC:24:11:00:00:03"),
            ("net2", "vmxnet3,bridge=vmbr0,link_down=1"),
            ("net3", "virtio=BC:24:11:00:00:04,bridge=vmbr0,mtu=1400"),
        ]);
        assert_eq!(
            values(&a, "-netdev"),
            [
                "tap,id=net0,ifname=tap100i0,script=no,downscript=no",
                "user,id=net1",
                "tap,id=net2,ifname=tap100i2,script=no,downscript=no",
                "tap,id=net3,ifname=tap100i3,script=no,downscript=no"
            ]
        );
        let devs = values(&a, "-device");
        assert!(
            devs.contains(&"e1000,netdev=net0,id=net0,mac=BC:24:11:00:00:02,bootindex=300"),
            "{devs:?}"
        );
        assert!(devs.contains(&"rtl8139,netdev=net1,id=net1,mac=BC:24:11:00:00:03,bootindex=301"));
        assert!(devs.contains(&"vmxnet3,netdev=net2,id=net2,bootindex=302"));
        assert!(devs.contains(
            &"virtio-net-pci,netdev=net3,id=net3,mac=BC:24:11:00:00:04,host_mtu=1400,bootindex=303"
        ));
        let cfg: BTreeMap<String, String> = [(
            "net2".to_string(),
            "vmxnet3,bridge=vmbr0,link_down=1".to_string(),
        )]
        .into();
        assert_eq!(links_down(&cfg), ["net2"]);
        assert_eq!(bridged_nets(&cfg), [(2, "vmbr0".to_string())]);
        assert!(qemu_args(&spec(&[("net0", "foo=AA:BB:CC:DD:EE:FF")])).is_err());
    }
}
