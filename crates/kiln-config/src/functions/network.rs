//! IP network functions: cidrhost, cidrnetmask, cidrsubnet, cidrsubnets (IPv4 and IPv6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hcl::Value;

use super::{arg_int, arg_str, arity, failed, Func, FuncContext, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("cidrhost", cidrhost),
    ("cidrnetmask", cidrnetmask),
    ("cidrsubnet", cidrsubnet),
    ("cidrsubnets", cidrsubnets),
];

/// A parsed prefix: network address as an integer, prefix length, address width (32 or 128).
struct Prefix {
    net: u128,
    len: u32,
    bits: u32,
}

fn parse_prefix(name: &str, s: &str) -> Result<Prefix, super::FuncError> {
    let bad = || {
        failed(
            name,
            format!("invalid CIDR expression \"{s}\" (expected e.g. 10.0.0.0/16)"),
        )
    };
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    let (n, bits) = match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len > bits {
        return Err(bad());
    }
    Ok(Prefix {
        net: n & mask(len, bits),
        len,
        bits,
    })
}

fn mask(len: u32, bits: u32) -> u128 {
    if len == 0 {
        return 0;
    }
    let all: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    all & !((1u128 << (bits - len)) - 1).min(all)
}

fn to_ip(n: u128, bits: u32) -> String {
    if bits == 32 {
        Ipv4Addr::from(n as u32).to_string()
    } else {
        Ipv6Addr::from(n).to_string()
    }
}

fn host_span(p: &Prefix) -> u128 {
    let host_bits = p.bits - p.len;
    if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    }
}

/// `cidrhost(prefix, hostnum)`: negative numbers count from the end of the range.
fn cidrhost(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let p = parse_prefix(name, &arg_str(name, 0, &args[0])?)?;
    let host = arg_int(name, 1, &args[1])?;
    let span = host_span(&p);
    let off: u128 = if host >= 0 {
        host as u128
    } else {
        span.checked_sub(host.unsigned_abs() as u128)
            .ok_or_else(|| failed(name, "host number out of range"))?
    };
    if off >= span {
        return Err(failed(
            name,
            format!("prefix of {} bits has no host number {host}", p.len),
        ));
    }
    Ok(Value::String(to_ip(p.net + off, p.bits)))
}

fn cidrnetmask(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let p = parse_prefix(name, &arg_str(name, 0, &args[0])?)?;
    if p.bits != 32 {
        return Err(failed(name, "only IPv4 prefixes have a netmask"));
    }
    Ok(Value::String(to_ip(mask(p.len, 32), 32)))
}

fn subnet(
    name: &str,
    p: &Prefix,
    newbits: i64,
    netnum: u128,
) -> Result<(u128, u32), super::FuncError> {
    if newbits < 0 || p.len + newbits as u32 > p.bits {
        return Err(failed(
            name,
            format!(
                "insufficient address space to extend prefix of {} by {newbits}",
                p.len
            ),
        ));
    }
    let newlen = p.len + newbits as u32;
    if newbits < 128 && netnum >= (1u128 << newbits) {
        return Err(failed(
            name,
            format!(
                "prefix extension of {newbits} does not accommodate a subnet numbered {netnum}"
            ),
        ));
    }
    let shift = p.bits - newlen;
    let add = if shift >= 128 { 0 } else { netnum << shift };
    Ok((p.net | add, newlen))
}

fn cidrsubnet(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 3, Some(3))?;
    let p = parse_prefix(name, &arg_str(name, 0, &args[0])?)?;
    let newbits = arg_int(name, 1, &args[1])?;
    let netnum = arg_int(name, 2, &args[2])?;
    if netnum < 0 {
        return Err(failed(name, "the subnet number must not be negative"));
    }
    let (net, len) = subnet(name, &p, newbits, netnum as u128)?;
    Ok(Value::String(format!("{}/{len}", to_ip(net, p.bits))))
}

/// `cidrsubnets(prefix, newbits...)`: consecutive, non-overlapping subnets.
fn cidrsubnets(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let p = parse_prefix(name, &arg_str(name, 0, &args[0])?)?;
    let end = p.net.saturating_add(host_span(&p));
    let mut cur = p.net;
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate().skip(1) {
        let nb = arg_int(name, i, a)?;
        if nb < 1 || p.len + nb as u32 > p.bits {
            return Err(failed(
                name,
                format!("invalid new bits {nb} for a prefix of {}", p.len),
            ));
        }
        let newlen = p.len + nb as u32;
        let size = 1u128 << (p.bits - newlen);
        cur = cur.div_ceil(size) * size;
        if cur.saturating_add(size) > end {
            return Err(failed(
                name,
                "not enough remaining address space for the requested subnets",
            ));
        }
        out.push(Value::String(format!("{}/{newlen}", to_ip(cur, p.bits))));
        cur += size;
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn cidrhost_cases() {
        ok(
            "cidrhost",
            &["\"10.12.112.0/20\"", "16"],
            "\"10.12.112.16\"",
        );
        ok(
            "cidrhost",
            &["\"10.12.112.0/20\"", "268"],
            "\"10.12.113.12\"",
        );
        ok("cidrhost", &["\"10.0.0.0/24\"", "-2"], "\"10.0.0.254\"");
        ok(
            "cidrhost",
            &["\"fd00:fd12:3456:7890:00a2::/72\"", "34"],
            "\"fd00:fd12:3456:7890::22\"",
        );
        err("cidrhost", &["\"10.0.0.0/24\"", "256"]);
        err("cidrhost", &["\"10.0.0.0\"", "1"]);
        err("cidrhost", &["\"10.0.0.0/33\"", "1"]);
    }

    #[test]
    fn cidrnetmask_cases() {
        ok("cidrnetmask", &["\"172.16.0.0/12\""], "\"255.240.0.0\"");
        ok("cidrnetmask", &["\"10.0.0.0/0\""], "\"0.0.0.0\"");
        ok("cidrnetmask", &["\"10.0.0.1/32\""], "\"255.255.255.255\"");
        err("cidrnetmask", &["\"fd00::/8\""]);
    }

    #[test]
    fn cidrsubnet_cases() {
        ok(
            "cidrsubnet",
            &["\"172.16.0.0/12\"", "4", "2"],
            "\"172.18.0.0/16\"",
        );
        ok(
            "cidrsubnet",
            &["\"10.1.2.0/24\"", "4", "15"],
            "\"10.1.2.240/28\"",
        );
        ok(
            "cidrsubnet",
            &["\"fd00:fd12:3456:7890::/56\"", "16", "162"],
            "\"fd00:fd12:3456:7800:a200::/72\"",
        );
        err("cidrsubnet", &["\"10.1.2.0/24\"", "4", "16"]);
        err("cidrsubnet", &["\"10.1.2.0/24\"", "9", "0"]);
    }

    #[test]
    fn cidrsubnets_cases() {
        ok(
            "cidrsubnets",
            &["\"10.1.0.0/16\"", "4", "4", "8", "4"],
            "[\"10.1.0.0/20\", \"10.1.16.0/20\", \"10.1.32.0/24\", \"10.1.48.0/20\"]",
        );
        err("cidrsubnets", &["\"10.1.0.0/30\"", "1", "1", "1"]);
        err("cidrsubnets", &["\"10.1.0.0/16\"", "0"]);
    }
}
