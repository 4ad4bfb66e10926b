//! What the running builds have created and not yet removed, with the command that removes each
//! by hand. Steps add an entry *before* they create something and remove it once it is gone; a
//! second Ctrl-C (which stops waiting for the cleanup) prints what is still listed.

use std::collections::BTreeMap;
use std::sync::Mutex;

static LEFT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Record `key` (e.g. `vm:pve:100`) with a line saying what it is and how to remove it.
pub fn add(key: &str, how_to_remove: String) {
    if let Ok(mut m) = LEFT.lock() {
        m.insert(key.to_string(), how_to_remove);
    }
}

/// `key` is gone (or is the artifact).
pub fn remove(key: &str) {
    if let Ok(mut m) = LEFT.lock() {
        m.remove(key);
    }
}

/// Everything still recorded, one line each.
pub fn list() -> Vec<String> {
    LEFT.lock()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

/// Entries whose key starts with `prefix` (tests use their own prefix).
pub fn list_prefixed(prefix: &str) -> Vec<String> {
    LEFT.lock()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove() {
        add("test-left:a", "VM 1: qm destroy 1".into());
        add("test-left:b", "ISO x: pvesm free x".into());
        assert_eq!(
            list_prefixed("test-left:"),
            ["VM 1: qm destroy 1", "ISO x: pvesm free x"]
        );
        remove("test-left:a");
        assert_eq!(list_prefixed("test-left:"), ["ISO x: pvesm free x"]);
        remove("test-left:b");
        assert!(list_prefixed("test-left:").is_empty());
    }
}
