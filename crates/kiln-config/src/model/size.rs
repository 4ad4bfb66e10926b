//! `disk_size`: one rule for validate and the build (kiln-build allocates `<pool>:<GiB>`).

/// A size written as a whole number and a unit `K`, `M`, `G` or `T` (binary: KiB … TiB), as the
/// proxmox plugin documents `disk_size` (`"20G"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize {
    bytes: u64,
}

impl ByteSize {
    /// Parse `"20G"`, `"1536M"`, `"1T"`; the message says what to write instead.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let hint = "must be a whole number followed by K, M, G or T (e.g. \"20G\")";
        let t = s.trim();
        let Some(unit) = t.chars().last() else {
            return Err(hint.to_string());
        };
        let shift = match unit {
            'K' => 10,
            'M' => 20,
            'G' => 30,
            'T' => 40,
            _ => return Err(hint.to_string()),
        };
        let num = &t[..t.len() - 1];
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(hint.to_string());
        }
        let n: u64 = num.parse().map_err(|_| format!("is too large ({hint})"))?;
        if n == 0 {
            return Err("must not be zero".to_string());
        }
        let bytes = n
            .checked_mul(1u64 << shift)
            .ok_or_else(|| "is too large (more than 16 EiB)".to_string())?;
        Ok(ByteSize { bytes })
    }

    pub fn bytes(self) -> u64 {
        self.bytes
    }

    /// In GiB, rounded up (PVE allocates new volumes as `<pool>:<GiB>`).
    pub fn gib_ceil(self) -> u64 {
        self.bytes.div_ceil(1 << 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("20G").map(ByteSize::gib_ceil), Ok(20));
        assert_eq!(ByteSize::parse("1T").map(ByteSize::gib_ceil), Ok(1024));
        assert_eq!(ByteSize::parse("1536M").map(ByteSize::gib_ceil), Ok(2));
        assert_eq!(ByteSize::parse("1K").map(ByteSize::gib_ceil), Ok(1));
        for bad in [
            "",
            "20",
            "20GB",
            "G",
            "-1G",
            "0G",
            "1.5G",
            "99999999999999999999G",
            "99999999T",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }
}
