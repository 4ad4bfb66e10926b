//! Packer version pins: `packer { required_version = "…"  required_plugins { … } }`.
//!
//! Constraint syntax is HashiCorp go-version's: comma-separated `OP VERSION` items with `=`, `!=`, `>`, `>=`,
//! `<`, `<=`, `~>` (pessimistic) or no operator (= exact); versions may carry a `v` prefix (`v1.2.4`),
//! a pre-release (`-beta1`) and metadata (`+x`). Spaces around an item are accepted (go-version does) but reported
//! as a warning, because they usually come from copy-paste (`" ~> 1.2.2"`).
//!
//! ## What kiln stands in for
//!
//! * **Packer core language**: kiln reports `packer.version` = [`PACKER_CORE_VERSION`] (1.14.2, the newest Packer
//!   the corpus targets: the seed template pins `v1.14.2`). kiln implements the HCL2 language as it has been
//!   stable since Packer 1.7.0 (the first release with `required_plugins`, `packer init` and HCL2 as the default),
//!   so `required_version` is checked against the whole range `>= 1.7.0, < 1.15.0`
//!   ([`PACKER_CORE_MIN`], [`PACKER_CORE_MAX_EXCLUSIVE`]): a pin is accepted when **some** version in that range
//!   satisfies it. This is the rule that accepts both `"= 1.10.3"` and `">= 1.12.0"` (and `">= 1.7.0, < 2.0.0"`,
//!   `">= v1.9.4"`, `"v1.14.2"`), while `">= 1.15"` or `"< 1.7"` are errors naming the range kiln implements.
//! * **Plugins** ([`PLUGINS`]): `github.com/hashicorp/proxmox` releases 1.1.0 – 1.2.4 and
//!   `github.com/hashicorp/ansible` releases 1.0.0 – 1.1.7. A plugin pin selects the **newest** implemented
//!   release that satisfies it, exactly as `packer init` installs the newest matching release; that selected
//!   version decides which version-gated features ([`PluginInfo::features`], e.g. `boot_iso` from proxmox 1.2.0)
//!   the template may use: `~> 1.1.3` selects 1.1.8, so a template with a `boot_iso {}` block is an error
//!   ([`PluginPin::require_feature`]).
//! * **Unknown plugins** (`git`, `sshkey`, `qemu`, …): a warning, not an error: Packer would install them and the
//!   pin itself is harmless. Using a component they provide (a `data "git-repository"`, a `source "qemu"`) is
//!   reported where it is used, by the config loader.
//! * Plugins are matched by `source` (case-insensitive, with or without the `github.com/` host), never by local
//!   name, because templates copy `name = { source = "github.com/hashicorp/proxmox" }` from the docs.
//!
//! ## API for the loader
//!
//! ```
//! use kiln_config::version::{check_required_version, check_required_plugin};
//! let core = check_required_version(">= 1.12.0").unwrap();          // Ok(CorePin { warnings, .. })
//! assert!(core.warnings.is_empty());
//! let pin = check_required_plugin("proxmox", "github.com/hashicorp/proxmox", Some("~> 1.1.3")).unwrap();
//! assert_eq!(pin.selected.as_ref().map(|v| v.to_string()), Some("1.1.8".to_string()));
//! assert!(pin.require_feature("boot_iso").is_err());                  // boot_iso needs >= 1.2.0
//! let git = check_required_plugin("git", "github.com/ethanmdavidson/git", Some(">= 0.6.2")).unwrap();
//! assert!(git.plugin.is_none() && !git.warnings.is_empty());          // unknown plugin: warning only
//! ```
//! [`implemented_summary`] gives the one-paragraph statement `kiln init` / `kiln validate -v` print.

use std::cmp::Ordering;
use std::fmt;

/// The Packer core version kiln reports as `packer.version`.
pub const PACKER_CORE_VERSION: &str = "1.14.2";
/// The oldest Packer core language kiln implements (inclusive).
pub const PACKER_CORE_MIN: &str = "1.7.0";
/// The first Packer core version kiln does not claim to implement (exclusive).
pub const PACKER_CORE_MAX_EXCLUSIVE: &str = "1.15.0";

/// A version pin problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("malformed version constraint \"{input}\": {msg}")]
    Parse { input: String, msg: String },
    #[error("{what} pin \"{constraint}\" cannot be honoured: kiln implements {implements}")]
    Unsatisfiable {
        what: String,
        constraint: String,
        implements: String,
    },
    #[error(
        "{feature} needs the {plugin} plugin >= {needs}, but the pin \"{constraint}\" selects {selected} \
         (the newest matching release, which `packer init` would install); widen the pin, e.g. \">= {needs}\""
    )]
    Feature {
        plugin: String,
        feature: String,
        needs: String,
        constraint: String,
        selected: String,
    },
}

/// A go-version style version: numeric segments (at least three, missing ones are 0), optional pre-release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    segments: Vec<u64>,
    /// How many segments were written (`1.2` → 2): the pessimistic operator depends on it.
    specified: usize,
    pre: String,
    meta: String,
}

impl Version {
    /// Parse `1`, `1.2`, `v1.2.3`, `1.2.3-beta1+meta`.
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let err = |msg: &str| VersionError::Parse {
            input: s.to_string(),
            msg: msg.to_string(),
        };
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let (t, meta) = match t.split_once('+') {
            Some((a, m)) => (a, m.to_string()),
            None => (t, String::new()),
        };
        let (core, pre) = match t.split_once('-') {
            Some((a, p)) => (a, p.to_string()),
            None => (t, String::new()),
        };
        if core.is_empty() {
            return Err(err("expected a version such as 1.2.3"));
        }
        let mut segments = Vec::new();
        for part in core.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("expected a version such as 1.2.3"));
            }
            segments.push(
                part.parse::<u64>()
                    .map_err(|_| err("version number too large"))?,
            );
        }
        let specified = segments.len();
        while segments.len() < 3 {
            segments.push(0);
        }
        Ok(Version {
            segments,
            specified,
            pre,
            meta,
        })
    }

    fn seg(&self, i: usize) -> u64 {
        self.segments.get(i).copied().unwrap_or(0)
    }

    /// The next patch version (`1.2.3` → `1.2.4`), used as a candidate for `>`.
    fn next_patch(&self) -> Version {
        Version {
            segments: vec![self.seg(0), self.seg(1), self.seg(2) + 1],
            specified: 3,
            pre: String::new(),
            meta: String::new(),
        }
    }

    /// `major.minor` of this version, e.g. for hints.
    pub fn minor_string(&self) -> String {
        format!("{}.{}", self.seg(0), self.seg(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segs: Vec<String> = self.segments.iter().map(|s| s.to_string()).collect();
        write!(f, "{}", segs.join("."))?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.meta.is_empty() {
            write!(f, "+{}", self.meta)?;
        }
        Ok(())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.segments.len().max(other.segments.len());
        for i in 0..n {
            match self.seg(i).cmp(&other.seg(i)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.pre.cmp(&other.pre),
        }
    }
}

/// A constraint operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// `~>`: `~> 1.2.3` = `>= 1.2.3, < 1.3.0`; `~> 1.2` = `>= 1.2, < 2.0`; `~> 1` = `>= 1` (go-version).
    Pessimistic,
}

/// One `OP VERSION` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: Op,
    pub version: Version,
}

impl Constraint {
    /// Does `v` satisfy this item? (go-version semantics, including pre-release rules.)
    pub fn check(&self, v: &Version) -> bool {
        let c = &self.version;
        // A pre-release version only satisfies constraints that name a pre-release of the same core version.
        if !v.pre.is_empty() && (c.pre.is_empty() || v.segments[..3] != c.segments[..3]) {
            return false;
        }
        match self.op {
            Op::Eq => v.cmp(c) == Ordering::Equal,
            Op::Ne => v.cmp(c) != Ordering::Equal,
            Op::Gt => v > c,
            Op::Ge => v >= c,
            Op::Lt => v < c,
            Op::Le => v <= c,
            Op::Pessimistic => {
                if v < c {
                    return false;
                }
                let cs = c.specified.max(1);
                for i in 0..cs - 1 {
                    if v.seg(i) != c.seg(i) {
                        return false;
                    }
                }
                v.seg(cs - 1) >= c.seg(cs - 1)
            }
        }
    }
}

/// A comma-separated list of constraints; all must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraints {
    pub items: Vec<Constraint>,
    /// The text as written.
    pub raw: String,
}

impl Constraints {
    /// Parse a constraint list; warnings report stray spaces.
    pub fn parse(raw: &str) -> Result<(Constraints, Vec<String>), VersionError> {
        let mut warnings = Vec::new();
        let err = |msg: &str| VersionError::Parse {
            input: raw.to_string(),
            msg: msg.to_string(),
        };
        if raw.trim().is_empty() {
            return Err(err("the constraint is empty"));
        }
        if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
            warnings.push(format!(
                "version constraint \"{raw}\" has leading or trailing spaces; accepted, but write \"{}\"",
                raw.trim()
            ));
        }
        let mut items = Vec::new();
        for part in raw.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(err("empty item in the comma-separated list"));
            }
            let (op, rest) = [
                ("~>", Op::Pessimistic),
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("!=", Op::Ne),
                ("=", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
            ]
            .iter()
            .find_map(|(s, op)| p.strip_prefix(s).map(|r| (*op, r)))
            .unwrap_or((Op::Eq, p));
            let version = Version::parse(rest).map_err(|_| {
                err(&format!("\"{p}\" is not OPERATOR VERSION (operators: = != > >= < <= ~>; e.g. \">= 1.2.0\")"))
            })?;
            items.push(Constraint { op, version });
        }
        Ok((
            Constraints {
                items,
                raw: raw.to_string(),
            },
            warnings,
        ))
    }

    /// Does `v` satisfy every item?
    pub fn check(&self, v: &Version) -> bool {
        self.items.iter().all(|c| c.check(v))
    }
}

/// A Packer plugin kiln implements.
#[derive(Debug)]
pub struct PluginInfo {
    /// The conventional local name (`proxmox`).
    pub name: &'static str,
    /// The canonical source address.
    pub source: &'static str,
    /// The releases kiln stands in for, oldest first.
    pub releases: &'static [&'static str],
    /// Version-gated features: (config key or block, first release that has it).
    pub features: &'static [(&'static str, &'static str)],
}

/// The plugins kiln implements.
pub const PLUGINS: &[PluginInfo] = &[
    PluginInfo {
        name: "proxmox",
        source: "github.com/hashicorp/proxmox",
        releases: &[
            "1.1.0", "1.1.1", "1.1.2", "1.1.3", "1.1.4", "1.1.5", "1.1.6", "1.1.7", "1.1.8",
            "1.2.0", "1.2.1", "1.2.2", "1.2.3", "1.2.4",
        ],
        features: &[("boot_iso", "1.2.0"), ("skip_convert_to_template", "1.2.4")],
    },
    PluginInfo {
        name: "ansible",
        source: "github.com/hashicorp/ansible",
        releases: &[
            "1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1.0", "1.1.1", "1.1.2", "1.1.3",
            "1.1.4", "1.1.5", "1.1.6", "1.1.7",
        ],
        features: &[],
    },
];

impl PluginInfo {
    /// `first – last` of the implemented releases.
    pub fn range(&self) -> String {
        format!(
            "{} – {}",
            self.releases.first().copied().unwrap_or("?"),
            self.releases.last().copied().unwrap_or("?")
        )
    }

    fn versions(&self) -> impl Iterator<Item = Version> + '_ {
        self.releases.iter().filter_map(|r| Version::parse(r).ok())
    }

    /// The first release with `feature`, if the feature is version-gated.
    pub fn feature_since(&self, feature: &str) -> Option<Version> {
        self.features
            .iter()
            .find(|(f, _)| *f == feature)
            .and_then(|(_, v)| Version::parse(v).ok())
    }
}

fn normalize_source(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let s = s.trim_start_matches("https://").trim_end_matches('/');
    if s.matches('/').count() == 1 {
        format!("github.com/{s}")
    } else {
        s.to_string()
    }
}

/// The implemented plugin with this `source` address, if any.
pub fn plugin_by_source(source: &str) -> Option<&'static PluginInfo> {
    let n = normalize_source(source);
    PLUGINS.iter().find(|p| p.source == n)
}

/// The result of checking `required_version`.
#[derive(Debug, Clone)]
pub struct CorePin {
    pub constraints: Constraints,
    pub warnings: Vec<String>,
}

fn core_implements() -> String {
    format!(
        "the Packer {PACKER_CORE_MIN} – {}.x language (it reports packer.version = {PACKER_CORE_VERSION})",
        Version::parse(PACKER_CORE_MAX_EXCLUSIVE).map(|v| format!("{}.{}", v.seg(0), v.seg(1).saturating_sub(1))).unwrap_or_default()
    )
}

/// Check `required_version` against the core range kiln implements (see the module doc for the rule).
pub fn check_required_version(raw: &str) -> Result<CorePin, VersionError> {
    let (constraints, warnings) = Constraints::parse(raw)?;
    let min = Version::parse(PACKER_CORE_MIN)?;
    let max = Version::parse(PACKER_CORE_MAX_EXCLUSIVE)?;
    // Any satisfying version in [min, max) exists iff one of these candidates satisfies: the range start, and every
    // version named in the constraints or its successor (the bounds of the intersection of the intervals).
    let mut candidates = vec![min.clone(), Version::parse(PACKER_CORE_VERSION)?];
    for c in &constraints.items {
        let mut v = c.version.clone();
        v.pre.clear();
        v.meta.clear();
        candidates.push(v.next_patch());
        candidates.push(v);
    }
    let ok = candidates
        .iter()
        .any(|v| *v >= min && *v < max && constraints.check(v));
    if ok {
        Ok(CorePin {
            constraints,
            warnings,
        })
    } else {
        Err(VersionError::Unsatisfiable {
            what: "required_version".to_string(),
            constraint: raw.to_string(),
            implements: core_implements(),
        })
    }
}

/// The result of checking one `required_plugins` entry.
#[derive(Debug, Clone)]
pub struct PluginPin {
    pub local_name: String,
    pub source: String,
    /// The implemented plugin, `None` for plugins kiln does not implement (a warning).
    pub plugin: Option<&'static PluginInfo>,
    pub constraints: Option<Constraints>,
    /// The newest implemented release that satisfies the pin (what `packer init` would install).
    pub selected: Option<Version>,
    pub warnings: Vec<String>,
}

impl PluginPin {
    /// Is `feature` available in the selected release? Features that are not version-gated always are.
    pub fn require_feature(&self, feature: &str) -> Result<(), VersionError> {
        let (Some(plugin), Some(selected)) = (self.plugin, &self.selected) else {
            return Ok(());
        };
        match plugin.feature_since(feature) {
            Some(needs) if *selected < needs => Err(VersionError::Feature {
                plugin: plugin.name.to_string(),
                feature: feature.to_string(),
                needs: needs.to_string(),
                constraint: self
                    .constraints
                    .as_ref()
                    .map(|c| c.raw.clone())
                    .unwrap_or_default(),
                selected: selected.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// Check one `required_plugins` entry: `local_name = { source = "…", version = "…" }`.
pub fn check_required_plugin(
    local_name: &str,
    source: &str,
    version: Option<&str>,
) -> Result<PluginPin, VersionError> {
    let mut warnings = Vec::new();
    let constraints = match version {
        Some(v) => {
            let (c, w) = Constraints::parse(v)?;
            warnings.extend(w);
            Some(c)
        }
        None => None,
    };
    let Some(plugin) = plugin_by_source(source) else {
        warnings.push(format!(
            "plugin \"{local_name}\" ({source}) is not implemented by kiln; the pin is ignored, and components it \
             provides are reported where they are used (kiln implements: {})",
            PLUGINS.iter().map(|p| format!("{} {}", p.source, p.range())).collect::<Vec<_>>().join(", ")
        ));
        return Ok(PluginPin {
            local_name: local_name.to_string(),
            source: source.to_string(),
            plugin: None,
            constraints,
            selected: None,
            warnings,
        });
    };
    let selected = plugin
        .versions()
        .filter(|v| constraints.as_ref().is_none_or(|c| c.check(v)))
        .max();
    if selected.is_none() {
        return Err(VersionError::Unsatisfiable {
            what: format!("{} plugin", plugin.name),
            constraint: version.unwrap_or_default().to_string(),
            implements: format!("{} releases {}", plugin.source, plugin.range()),
        });
    }
    Ok(PluginPin {
        local_name: local_name.to_string(),
        source: source.to_string(),
        plugin: Some(plugin),
        constraints,
        selected,
        warnings,
    })
}

/// What kiln stands in for, in one paragraph (for `kiln init`).
pub fn implemented_summary() -> String {
    let mut s = format!("kiln implements {}", core_implements());
    for p in PLUGINS {
        s.push_str(&format!("; plugin {} releases {}", p.source, p.range()));
        for (f, v) in p.features {
            s.push_str(&format!(" (`{f}` from {v})"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    fn sel(source: &str, pin: &str) -> String {
        check_required_plugin("x", source, Some(pin))
            .expect("pin")
            .selected
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    const PX: &str = "github.com/hashicorp/proxmox";
    const AN: &str = "github.com/hashicorp/ansible";

    #[test]
    fn parse_versions() {
        assert_eq!(v("v1.2.4").to_string(), "1.2.4");
        assert_eq!(v("1.2").to_string(), "1.2.0");
        assert_eq!(v("1.2.3-beta1+x").to_string(), "1.2.3-beta1+x");
        assert!(v("1.2.3-beta1") < v("1.2.3"));
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(Version::parse("1.x").is_err());
        assert!(Version::parse("").is_err());
        assert!(Version::parse("1..2").is_err());
    }

    #[test]
    fn operators() {
        let ok = |c: &str, ver: &str| Constraints::parse(c).expect("parse").0.check(&v(ver));
        assert!(ok("= 1.2.1", "1.2.1"));
        assert!(!ok("= 1.2.1", "1.2.2"));
        assert!(ok("1.2.1", "1.2.1"));
        assert!(ok("!= 1.2.2", "1.2.3"));
        assert!(!ok("!= 1.2.2", "1.2.2"));
        assert!(ok("> 1.2.2", "1.2.3"));
        assert!(!ok("> 1.2.2", "1.2.2"));
        assert!(ok("<= 1.2.2", "1.2.2"));
        assert!(ok("< 2.0.0", "1.99.0"));
        assert!(ok(">= 1.7.0, < 2.0.0", "1.14.2"));
        assert!(!ok(">= 1.7.0, < 2.0.0", "2.0.0"));
        // pessimistic, go-version semantics
        assert!(ok("~> 1.1.3", "1.1.8"));
        assert!(!ok("~> 1.1.3", "1.2.0"));
        assert!(!ok("~> 1.1.3", "1.1.2"));
        assert!(ok("~> 1.2", "1.9.0"));
        assert!(!ok("~> 1.2", "2.0.0"));
        assert!(ok("~> 1", "1.2.4"));
        // pre-releases only match constraints naming a pre-release of the same version
        assert!(!ok(">= 1.0.0", "1.2.0-beta"));
        assert!(ok(">= 1.2.0-alpha", "1.2.0-beta"));
    }

    #[test]
    fn parse_errors_and_warnings() {
        assert!(matches!(
            Constraints::parse(""),
            Err(VersionError::Parse { .. })
        ));
        assert!(matches!(
            Constraints::parse(">= 1.2,"),
            Err(VersionError::Parse { .. })
        ));
        assert!(matches!(
            Constraints::parse("=> 1.2"),
            Err(VersionError::Parse { .. })
        ));
        assert!(matches!(
            Constraints::parse("latest"),
            Err(VersionError::Parse { .. })
        ));
        let (c, w) = Constraints::parse(" ~> 1.2.2").expect("stray space accepted");
        assert_eq!(c.items[0].op, Op::Pessimistic);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(Constraints::parse(">=1.1.5")
            .expect("no space")
            .1
            .is_empty());
    }

    /// Every `required_version` in the corpus (rows 12/13/19, 16, 18, 28, the seed) is accepted.
    #[test]
    fn corpus_required_versions() {
        for pin in [
            "= 1.10.3",
            ">= 1.12.0",
            ">= 1.7.0, < 2.0.0",
            ">= v1.9.4",
            "v1.14.2",
        ] {
            let r = check_required_version(pin);
            assert!(
                r.as_ref().is_ok_and(|c| c.warnings.is_empty()),
                "{pin}: {r:?}"
            );
        }
    }

    #[test]
    fn unsatisfiable_required_versions() {
        for pin in [
            ">= 1.15.0",
            "< 1.7.0",
            "= 1.6.6",
            "~> 2.0",
            ">= 1.12.0, < 1.12.0",
        ] {
            match check_required_version(pin) {
                Err(e @ VersionError::Unsatisfiable { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("1.7.0")
                            && msg.contains("1.14.x")
                            && msg.contains(PACKER_CORE_VERSION),
                        "{msg}"
                    );
                }
                other => panic!("{pin}: {other:?}"),
            }
        }
        assert!(check_required_version("1.14.2").is_ok());
        assert!(
            check_required_version("> 1.14.2").is_ok(),
            "1.14.3 is in the implemented range"
        );
        assert!(check_required_version("nonsense").is_err());
    }

    /// Every `required_plugins` pin of the corpus README (rows 1–34 and the seed).
    #[test]
    fn corpus_plugin_pins() {
        let cases: &[(&str, &str, &str)] = &[
            (PX, ">= 1.1.5", "1.2.4"),
            (AN, ">= 1.1.0", "1.1.7"),
            (PX, " ~> 1.2.2", "1.2.4"),
            (PX, "v1.2.4", "1.2.4"),
            (PX, "= 1.2.1", "1.2.1"),
            (AN, "~> 1", "1.1.7"),
            (PX, ">= 1.2.1", "1.2.4"),
            (PX, "= 1.2.3", "1.2.3"),
            (AN, "= 1.1.4", "1.1.4"),
            (PX, ">= 1.2.0", "1.2.4"),
            (PX, "~> 1", "1.2.4"),
            (PX, "= 1.1.8", "1.1.8"),
            (PX, ">= 1.1.7", "1.2.4"),
            (PX, ">= 1.1.2", "1.2.4"),
            (PX, ">= 1.1.3", "1.2.4"),
            (PX, ">= 1.1.6", "1.2.4"),
            (PX, ">=1.1.5", "1.2.4"),
            (PX, ">=1.1.2", "1.2.4"),
            (PX, "~> 1.1.3", "1.1.8"),
            (PX, "~> 1.2.2", "1.2.4"),
            (PX, "v1.2.3", "1.2.3"),
            (AN, "v1.1.4", "1.1.4"),
        ];
        for (src, pin, want) in cases {
            assert_eq!(sel(src, pin), *want, "{src} {pin}");
        }
        let p = check_required_plugin("proxmox", PX, Some(" ~> 1.2.2")).expect("pin");
        assert_eq!(p.warnings.len(), 1, "stray space warns");
    }

    #[test]
    fn source_matching() {
        // the docs copy-paste: local name `name`
        let p = check_required_plugin("name", "github.com/hashicorp/proxmox", Some("~> 1"))
            .expect("pin");
        assert_eq!(p.plugin.map(|p| p.name), Some("proxmox"));
        assert!(plugin_by_source("hashicorp/proxmox").is_some());
        assert!(plugin_by_source("GitHub.com/HashiCorp/Proxmox").is_some());
        assert!(plugin_by_source("github.com/hashicorp/qemu").is_none());
        let any = check_required_plugin("proxmox", PX, None).expect("no version");
        assert_eq!(
            any.selected.map(|v| v.to_string()).as_deref(),
            Some("1.2.4")
        );
    }

    #[test]
    fn unknown_plugins_warn() {
        for (name, src, pin) in [
            ("git", "github.com/ethanmdavidson/git", ">= 0.6.2"),
            ("sshkey", "github.com/ivoronin/sshkey", "= 1.0.3"),
            ("qemu", "github.com/hashicorp/qemu", "~> 1"),
            ("windows-update", "github.com/rgl/windows-update", "0.14.1"),
        ] {
            let p = check_required_plugin(name, src, Some(pin))
                .expect("unknown plugin is not an error");
            assert!(p.plugin.is_none());
            assert!(
                p.warnings
                    .iter()
                    .any(|w| w.contains("not implemented by kiln")),
                "{:?}",
                p.warnings
            );
        }
        assert!(
            check_required_plugin("git", "github.com/ethanmdavidson/git", Some("bad pin")).is_err()
        );
    }

    #[test]
    fn unsatisfiable_plugin_pins() {
        for pin in [">= 1.3.0", "= 1.0.9", "< 1.1.0", "~> 2"] {
            match check_required_plugin("proxmox", PX, Some(pin)) {
                Err(e @ VersionError::Unsatisfiable { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains("1.1.0 – 1.2.4"), "{msg}");
                }
                other => panic!("{pin}: {other:?}"),
            }
        }
        assert!(check_required_plugin("ansible", AN, Some(">= 2.0")).is_err());
    }

    #[test]
    fn features_are_version_gated() {
        let old = check_required_plugin("name", PX, Some("~> 1.1.3")).expect("pin");
        let e = old
            .require_feature("boot_iso")
            .expect_err("1.1.8 has no boot_iso");
        let msg = e.to_string();
        assert!(
            msg.contains("1.2.0") && msg.contains("1.1.8") && msg.contains("~> 1.1.3"),
            "{msg}"
        );
        assert!(old.require_feature("iso_file").is_ok(), "not version-gated");
        let new = check_required_plugin("proxmox", PX, Some(">= 1.1.2")).expect("pin");
        assert!(new.require_feature("boot_iso").is_ok());
        let exact = check_required_plugin("proxmox", PX, Some("= 1.2.3")).expect("pin");
        assert!(exact.require_feature("skip_convert_to_template").is_err());
        let unknown =
            check_required_plugin("git", "github.com/ethanmdavidson/git", Some(">= 0.6.2"))
                .expect("pin");
        assert!(unknown.require_feature("boot_iso").is_ok());
    }

    #[test]
    fn summary_names_everything() {
        let s = implemented_summary();
        for want in [
            "1.7.0",
            "1.14.x",
            "github.com/hashicorp/proxmox",
            "1.1.0 – 1.2.4",
            "boot_iso",
            "ansible",
        ] {
            assert!(s.contains(want), "{want} in {s}");
        }
    }
}
