//! Proxmox task identifiers (UPIDs).

use std::fmt;
use std::str::FromStr;

/// A parsed PVE task id:
/// `UPID:<node>:<pid 8 hex>:<pstart 8-9 hex>:<starttime 8 hex>:<type>:<id>:<user>:`.
///
/// The original string is kept verbatim ([`Upid::as_str`]) because PVE wants
/// it back byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    /// Node that runs the task (poll this node, not the configured one).
    pub node: String,
    /// Worker process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot).
    pub pstart: u64,
    /// Task start time, Unix seconds.
    pub starttime: i64,
    /// Task type (`qmcreate`, `qmstart`, `imgcopy`, `download`, ...).
    pub task_type: String,
    /// Task object id (VM id, file name, may be empty).
    pub id: String,
    /// User (or `user@realm!token`) that started the task.
    pub user: String,
}

/// A string that is not a valid UPID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Proxmox task id (UPID): {input:?}: {reason}")]
pub struct UpidParseError {
    /// The rejected text.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Upid {
    /// The UPID exactly as PVE returned it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

fn hex_field(s: &str, min: usize, max: usize) -> Option<u64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn valid_part(s: &str) -> bool {
    !s.chars().any(|c| c == ':' || c == '/' || c.is_whitespace())
}

impl FromStr for Upid {
    type Err = UpidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| UpidParseError {
            input: s.to_string(),
            reason,
        };
        let rest = s
            .strip_prefix("UPID:")
            .ok_or_else(|| err("does not start with 'UPID:'"))?;
        let rest = rest
            .strip_suffix(':')
            .ok_or_else(|| err("does not end with ':'"))?;
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 7 {
            return Err(err("expected 8 ':'-separated fields"));
        }
        if !valid_node(parts[0]) {
            return Err(err("invalid node name"));
        }
        let pid = hex_field(parts[1], 8, 8).ok_or_else(|| err("pid is not 8 hex digits"))?;
        let pstart =
            hex_field(parts[2], 8, 9).ok_or_else(|| err("pstart is not 8-9 hex digits"))?;
        let starttime =
            hex_field(parts[3], 8, 8).ok_or_else(|| err("starttime is not 8 hex digits"))?;
        if parts[4].is_empty() || !valid_part(parts[4]) {
            return Err(err("invalid task type"));
        }
        if !valid_part(parts[5]) {
            return Err(err("invalid task id"));
        }
        if parts[6].is_empty() || !valid_part(parts[6]) {
            return Err(err("invalid user"));
        }
        Ok(Upid {
            raw: s.to_string(),
            node: parts[0].to_string(),
            pid: u32::try_from(pid).map_err(|_| err("pid out of range"))?,
            pstart,
            starttime: i64::try_from(starttime).map_err(|_| err("starttime out of range"))?,
            task_type: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
        })
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upid({})", self.raw)
    }
}

impl serde::Serialize for Upid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Upid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docs_example() {
        let u: Upid = "UPID:pve1:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0x10D94);
        assert_eq!(u.pstart, 0x1CA6EA);
        assert_eq!(u.starttime, 0x6124E1B9);
        assert_eq!(u.task_type, "vzdump");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "root@pam");
        assert_eq!(
            u.to_string(),
            "UPID:pve1:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:"
        );
    }

    #[test]
    fn empty_id_token_user_and_9_digit_pstart() {
        let u: Upid = "UPID:pve-node-2:000A1B81:10032F1CC:6745A1CA:imgcopy::root@pam!builder:"
            .parse()
            .unwrap();
        assert_eq!(u.node, "pve-node-2");
        assert_eq!(u.id, "");
        assert_eq!(u.user, "root@pam!builder");
        assert_eq!(u.pstart, 0x10032F1CC);
    }

    #[test]
    fn rejects_bad() {
        for bad in [
            "",
            "UPID:",
            "UPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam",
            "XPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:",
            "UPID:-pve:00010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:",
            "UPID:pve:0010D94:001CA6EA:6124E1B9:vzdump:100:root@pam:",
            "UPID:pve:00010D94:001CA6EA:6124E1B9::100:root@pam:",
            "UPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:100::",
            "UPID:pve:00010D94:001CA6EA:6124E1B9:vz dump:100:root@pam:",
            "UPID:pve:00010D94:001CA6EA:6124E1B9:vzdump:1/0:root@pam:",
            "UPID:pve:0001GD94:001CA6EA:6124E1B9:vzdump:100:root@pam:",
        ] {
            assert!(bad.parse::<Upid>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_roundtrip() {
        let s = "\"UPID:pve:000A1B2C:0032F1A0:6745A1C0:qmcreate:9000:root@pam!builder:\"";
        let u: Upid = serde_json::from_str(s).unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), s);
    }
}
