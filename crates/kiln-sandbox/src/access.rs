//! Privileges: PVE's permission model, reduced to what a template build touches.
//!
//! By default every authenticated user or token has every privilege on every path (as `root@pam`
//! on PVE). [`SandboxConfig::privileges`](crate::SandboxConfig) restricts an identity (a user
//! `user@realm` or a token `user@realm!id`) to a set of privileges on every path (`/`, propagated);
//! a token without its own entry has its user's. `GET /access/permissions` answers as PVE does
//! (a map path → privilege → propagate flag) and the endpoints a build uses refuse with PVE's 403
//! `Permission check failed (/vms/100, VM.Allocate)` when the privilege is missing. The checks
//! are those of PVE 9.1's API schema (`permissions.check` of each endpoint, listed in [`required`]).

use crate::api::{ApiError, Params};
use crate::auth::Identity;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Every privilege of PVE 9.1 (`pveum role list` of the built-in `Administrator` role).
pub const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Restricted identities → the privileges they hold (on `/`, propagated).
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    restricted: BTreeMap<String, BTreeSet<String>>,
}

/// One privilege check: `privs` on `path`, all of them or (`any`) one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub path: String,
    pub privs: Vec<&'static str>,
    pub any: bool,
}

impl Check {
    fn all(path: impl Into<String>, privs: &[&'static str]) -> Check {
        Check {
            path: path.into(),
            privs: privs.to_vec(),
            any: false,
        }
    }
    fn any(path: impl Into<String>, privs: &[&'static str]) -> Check {
        Check {
            any: true,
            ..Check::all(path, privs)
        }
    }
}

impl Privileges {
    /// Parse `ID=PRIV,PRIV,…` (an empty list: no privileges at all). Unknown privilege names are
    /// an error naming them (PVE refuses them in a role too).
    pub fn parse_entry(s: &str) -> Result<(String, BTreeSet<String>), String> {
        let (id, list) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected USER@REALM[!TOKEN]=PRIV,PRIV,… (e.g. kiln@pve!ci=VM.Allocate,VM.Audit)")
        })?;
        let id = id.trim();
        if !id.contains('@') {
            return Err(format!(
                "{id:?} is not a user (user@realm) or token (user@realm!id)"
            ));
        }
        let mut set = BTreeSet::new();
        for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !ALL_PRIVILEGES.contains(&p) {
                return Err(format!(
                    "unknown privilege {p:?} for {id}; PVE's privileges are: {}",
                    ALL_PRIVILEGES.join(", ")
                ));
            }
            set.insert(p.to_string());
        }
        Ok((id.to_string(), set))
    }

    /// Restrict `id` (user or token) to `privs`.
    pub fn restrict(&mut self, id: impl Into<String>, privs: BTreeSet<String>) {
        self.restricted.insert(id.into(), privs);
    }

    /// The privileges `ident` holds.
    pub fn of(&self, ident: &Identity) -> BTreeSet<String> {
        let full = ident.upid_user();
        self.restricted
            .get(&full)
            .or_else(|| self.restricted.get(&ident.user))
            .cloned()
            .unwrap_or_else(|| ALL_PRIVILEGES.iter().map(|s| s.to_string()).collect())
    }

    /// `GET /access/permissions[?path=…]` for `ident`: `{path: {priv: 1}}` (PVE's propagate flag).
    /// Asking for another user's permissions needs Sys.Audit on /access (as on PVE).
    pub fn permissions_reply(&self, ident: &Identity, p: &Params) -> Result<Value, ApiError> {
        let target = match p.str("userid") {
            Some(u) if u != ident.upid_user() => {
                let owns_token = u
                    .split_once('!')
                    .is_some_and(|(user, _)| user == ident.user && ident.tokenid.is_none());
                if !owns_token {
                    self.check(ident, &[Check::all("/access", &["Sys.Audit"])])?;
                }
                let (user, tokenid) = match u.split_once('!') {
                    Some((a, b)) => (a.to_string(), Some(b.to_string())),
                    None => (u.to_string(), None),
                };
                Identity {
                    user,
                    tokenid,
                    ticket: false,
                }
            }
            _ => ident.clone(),
        };
        let privs: Map<String, Value> = self
            .of(&target)
            .into_iter()
            .map(|p| (p, json!(1)))
            .collect();
        let path = p.str("path").unwrap_or("/").to_string();
        Ok(json!({ path: privs }))
    }

    /// Run `checks`; the first failing one is PVE's 403.
    pub fn check(&self, ident: &Identity, checks: &[Check]) -> Result<(), ApiError> {
        if checks.is_empty() {
            return Ok(());
        }
        let have = self.of(ident);
        for c in checks {
            let ok = if c.any {
                c.privs.iter().any(|p| have.contains(*p))
            } else {
                c.privs.iter().all(|p| have.contains(*p))
            };
            if !ok {
                let missing = if c.any {
                    c.privs.join("|")
                } else {
                    c.privs
                        .iter()
                        .find(|p| !have.contains(**p))
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                };
                return Err(ApiError::Status(
                    403,
                    format!("Permission check failed ({}, {missing})", c.path),
                ));
            }
        }
        Ok(())
    }
}

/// The storage of a `STORAGE:…` drive value that allocates a new volume (`local-lvm:32`,
/// `local-lvm:0,efitype=4m`), or of an existing volume (`local:iso/x.iso`).
fn drive_storage(v: &str) -> Option<(&str, bool)> {
    let first = v.split(',').next()?;
    if first.contains('=') {
        return None;
    }
    let (stor, rest) = first.split_once(':')?;
    let new = rest.parse::<f64>().is_ok();
    Some((stor, new))
}

fn is_drive_key(k: &str) -> bool {
    let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
    base != k
        && matches!(
            base,
            "scsi" | "sata" | "ide" | "virtio" | "efidisk" | "tpmstate"
        )
}

/// The privilege checks PVE 9.1 makes for an endpoint (its schema's `permissions.check`, and the
/// documented checks of `POST /nodes/{node}/qemu` and `/clone`). Endpoints open to every user
/// (`"user": "all"`) have none.
pub fn required(method: &str, ep: &str, p: &Params) -> Vec<Check> {
    let vms = || format!("/vms/{}", p.string("vmid"));
    let storage = || format!("/storage/{}", p.string("storage"));
    const CONFIG: &[&str] = &[
        "VM.Config.Disk",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.HWType",
        "VM.Config.Options",
        "VM.Config.Cloudinit",
    ];
    match (method, ep) {
        ("POST", "/nodes/{node}/qemu") => {
            let mut v = vec![match p.str("pool") {
                Some(pool) => Check::all(format!("/pool/{pool}"), &["VM.Allocate"]),
                None => Check::all(vms(), &["VM.Allocate"]),
            }];
            let mut stores = BTreeSet::new();
            for (k, val) in &p.0 {
                if is_drive_key(k) {
                    if let Some((s, true)) = val.as_str().and_then(drive_storage) {
                        stores.insert(s.to_string());
                    }
                }
            }
            for s in stores {
                v.push(Check::all(
                    format!("/storage/{s}"),
                    &["Datastore.AllocateSpace"],
                ));
            }
            v
        }
        ("DELETE", "/nodes/{node}/qemu/{vmid}")
        | ("POST", "/nodes/{node}/qemu/{vmid}/template") => {
            vec![Check::all(vms(), &["VM.Allocate"])]
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => vec![
            Check::all(vms(), &["VM.Clone"]),
            Check::all(format!("/vms/{}", p.string("newid")), &["VM.Allocate"]),
        ],
        ("GET", "/nodes/{node}/qemu/{vmid}/config")
        | ("GET", "/nodes/{node}/qemu/{vmid}/pending")
        | ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => {
            vec![Check::all(vms(), &["VM.Audit"])]
        }
        ("POST" | "PUT", "/nodes/{node}/qemu/{vmid}/config") => vec![Check::any(vms(), CONFIG)],
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => {
            vec![Check::all(vms(), &["VM.Config.Disk"])]
        }
        ("POST", e) if e.starts_with("/nodes/{node}/qemu/{vmid}/status/") => {
            vec![Check::all(vms(), &["VM.PowerMgmt"])]
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/sendkey") => vec![Check::all(vms(), &["VM.Console"])],
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping")
        | ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-osinfo")
        | ("GET", "/nodes/{node}/qemu/{vmid}/agent/info")
        | ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") => vec![Check::any(
            vms(),
            &["VM.GuestAgent.Audit", "VM.GuestAgent.Unrestricted"],
        )],
        ("POST", "/nodes/{node}/qemu/{vmid}/agent")
        | ("POST", "/nodes/{node}/qemu/{vmid}/agent/exec")
        | ("GET", "/nodes/{node}/qemu/{vmid}/agent/exec-status") => {
            vec![Check::all(vms(), &["VM.GuestAgent.Unrestricted"])]
        }
        ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read") => vec![Check::any(
            vms(),
            &["VM.GuestAgent.FileRead", "VM.GuestAgent.Unrestricted"],
        )],
        ("POST", "/nodes/{node}/qemu/{vmid}/agent/file-write") => vec![Check::any(
            vms(),
            &["VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted"],
        )],
        ("GET", "/nodes/{node}/storage/{storage}/content")
        | ("GET", "/nodes/{node}/storage/{storage}/status") => vec![Check::any(
            storage(),
            &["Datastore.Audit", "Datastore.AllocateSpace"],
        )],
        ("POST", "/nodes/{node}/storage/{storage}/content") => {
            vec![Check::all(storage(), &["Datastore.AllocateSpace"])]
        }
        ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => {
            vec![Check::all(storage(), &["Datastore.Allocate"])]
        }
        ("POST", "/nodes/{node}/storage/{storage}/upload") => {
            vec![Check::all(storage(), &["Datastore.AllocateTemplate"])]
        }
        ("POST", "/nodes/{node}/storage/{storage}/download-url") => vec![
            Check::all(storage(), &["Datastore.AllocateTemplate"]),
            Check::any("/", &["Sys.Audit", "Sys.Modify"]),
        ],
        ("GET", "/nodes/{node}/status") => {
            vec![Check::all(
                format!("/nodes/{}", p.string("node")),
                &["Sys.Audit"],
            )]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(user: &str, token: Option<&str>) -> Identity {
        Identity {
            user: user.into(),
            tokenid: token.map(str::to_string),
            ticket: token.is_none(),
        }
    }

    fn params(kv: &[(&str, &str)]) -> Params {
        Params(kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
    }

    #[test]
    fn unrestricted_identities_hold_every_privilege_and_restricted_ones_only_theirs() {
        let mut p = Privileges::default();
        let (id, set) = Privileges::parse_entry("kiln@pve!ci=VM.Audit, Datastore.Audit").unwrap();
        p.restrict(id, set);
        let root = ident("root@pam", None);
        let tok = ident("kiln@pve", Some("ci"));
        assert_eq!(p.of(&root).len(), ALL_PRIVILEGES.len());
        assert_eq!(
            p.of(&tok).into_iter().collect::<Vec<_>>(),
            vec!["Datastore.Audit", "VM.Audit"]
        );
        // the user behind the token is not restricted by the token's entry
        assert_eq!(p.of(&ident("kiln@pve", None)).len(), ALL_PRIVILEGES.len());
        assert!(Privileges::parse_entry("kiln@pve=VM.Allocat")
            .unwrap_err()
            .contains("unknown privilege \"VM.Allocat\""));
        assert!(Privileges::parse_entry("kiln=VM.Audit").is_err());
    }

    #[test]
    fn vm_create_needs_vm_allocate_and_space_on_each_new_disk_storage() {
        let mut p = Privileges::default();
        p.restrict("u@pve", ["VM.Allocate".to_string()].into());
        let u = ident("u@pve", None);
        let create = params(&[
            ("vmid", "100"),
            ("scsi0", "local-lvm:8,format=raw"),
            ("ide2", "local:iso/x.iso,media=cdrom"),
        ]);
        let checks = required("POST", "/nodes/{node}/qemu", &create);
        assert_eq!(checks.len(), 2, "{checks:?}");
        let e = p.check(&u, &checks).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            e.message(),
            "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)"
        );
        let none = Privileges::default();
        assert!(none.check(&u, &checks).is_ok());
        let up = params(&[("storage", "local")]);
        let e = p
            .check(
                &u,
                &required("POST", "/nodes/{node}/storage/{storage}/upload", &up),
            )
            .unwrap_err();
        assert_eq!(
            e.message(),
            "Permission check failed (/storage/local, Datastore.AllocateTemplate)"
        );
    }

    #[test]
    fn permissions_reply_has_pve_shape() {
        let mut p = Privileges::default();
        p.restrict("u@pve", ["VM.Audit".to_string()].into());
        let r = p
            .permissions_reply(&ident("u@pve", None), &params(&[]))
            .unwrap();
        assert_eq!(r, json!({"/": {"VM.Audit": 1}}));
        // another user's permissions need Sys.Audit on /access
        let e = p
            .permissions_reply(&ident("u@pve", None), &params(&[("userid", "root@pam")]))
            .unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.message(), "Permission check failed (/access, Sys.Audit)");
    }
}
