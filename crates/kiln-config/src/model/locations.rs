//! Where each key of a source was written (`file:line:col`), so that a check made later — against
//! the Proxmox server, say — can point at the line to change.

use crate::diag::Location;
use crate::load::ebody::{EBlock, EBody};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Key path → where it was written. Paths: `node`, `vm_id`, `iso_file` (deprecated top-level),
/// `boot_iso.iso_storage_pool`, `disks[0].storage_pool`, `network_adapters[1].bridge`,
/// `additional_iso_files[0].iso_file`, `efi_config.efi_storage_pool`, … Blocks themselves are
/// recorded too (`disks[0]`), and the source block as the empty path.
///
/// Not part of the configuration's value: two configurations that differ only in where keys were
/// written are equal, and the locations are not serialised (`kiln inspect` shows values).
#[derive(Debug, Clone, Default)]
pub struct KeyLocations(BTreeMap<String, Location>);

impl PartialEq for KeyLocations {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl serde::Serialize for KeyLocations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
}

impl KeyLocations {
    /// Where `path` was written.
    pub fn get(&self, path: &str) -> Option<&Location> {
        self.0.get(path)
    }

    /// Where `path` was written, else where the nearest enclosing block was (`disks[0].storage_pool`
    /// → `disks[0]` → the source block), so a defaulted key still points at its block.
    pub fn nearest(&self, path: &str) -> Option<&Location> {
        let mut p = path;
        loop {
            if let Some(l) = self.0.get(p) {
                return Some(l);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None if !p.is_empty() => p = "",
                None => return None,
            }
        }
    }

    /// Record a location (tests, or callers building a config by hand).
    pub fn insert(&mut self, path: impl Into<String>, loc: Location) {
        self.0.insert(path.into(), loc);
    }

    /// Every attribute and block of a source body.
    pub(crate) fn of_body(body: &EBody, source: Option<Location>) -> KeyLocations {
        let mut out = KeyLocations::default();
        if let Some(l) = source {
            out.0.insert(String::new(), l);
        }
        out.walk("", body);
        out
    }

    fn walk(&mut self, prefix: &str, body: &EBody) {
        for (k, a) in &body.attrs {
            self.0
                .insert(format!("{prefix}{k}"), loc(&a.file, a.span.start));
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for b in &body.blocks {
            let i = seen.entry(b.ident.as_str()).or_insert(0);
            let indexed = format!("{prefix}{}[{i}]", b.ident);
            *i += 1;
            self.block(&indexed, b);
            // single blocks (efi_config, boot_iso, …) are also reachable without an index
            let plain = format!("{prefix}{}", b.ident);
            if !self.0.contains_key(&plain) {
                self.block(&plain, b);
            }
        }
    }

    fn block(&mut self, path: &str, b: &EBlock) {
        self.0.insert(path.to_string(), loc(&b.file, b.span.start));
        self.walk(&format!("{path}."), &b.body);
    }
}

fn loc(file: &crate::diag::SourceFile, offset: usize) -> Location {
    let (line, column) = file.line_col(offset);
    Location {
        file: PathBuf::from(&file.name),
        line,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(line: usize) -> Location {
        Location {
            file: "a.pkr.hcl".into(),
            line,
            column: 1,
        }
    }

    #[test]
    fn nearest_falls_back_to_the_enclosing_block_then_the_source() {
        let mut k = KeyLocations::default();
        k.insert("", l(1));
        k.insert("disks[0]", l(5));
        k.insert("disks[0].storage_pool", l(6));
        assert_eq!(k.nearest("disks[0].storage_pool"), Some(&l(6)));
        k.0.remove("disks[0].storage_pool");
        assert_eq!(k.nearest("disks[0].storage_pool"), Some(&l(5)));
        assert_eq!(k.nearest("efi_config.efi_storage_pool"), Some(&l(1)));
        assert_eq!(KeyLocations::default().nearest("node"), None);
    }
}
