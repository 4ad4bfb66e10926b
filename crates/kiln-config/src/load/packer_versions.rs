//! Glue to the version-constraint checker in [`crate::version`]: `required_version` and
//! `required_plugins` problems become diagnostics at the line that wrote the pin.

use crate::diag::{Diag, SourceFile};
use crate::model::Required;
use crate::version;
use std::ops::Range;
use std::sync::Arc;

pub fn check(
    req: &Required,
    version_at: Option<&(Arc<SourceFile>, Range<usize>)>,
    plugin_spans: &[(String, Arc<SourceFile>, Range<usize>)],
    errs: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) {
    if let (Some(raw), Some((f, s))) = (&req.required_version, version_at) {
        match version::check_required_version(raw) {
            Ok(pin) => {
                for w in pin.warnings {
                    warnings.push(
                        Diag::warning(format!("required_version: {w}")).at(f, Some(s.clone())),
                    );
                }
            }
            Err(e) => errs.push(Diag::error(e.to_string()).at(f, Some(s.clone()))),
        }
    }
    for (p, (_, f, s)) in req.plugins.iter().zip(plugin_spans) {
        let v = if p.version.trim().is_empty() {
            None
        } else {
            Some(p.version.as_str())
        };
        match version::check_required_plugin(&p.name, &p.source, v) {
            Ok(pin) => {
                for w in pin.warnings {
                    warnings.push(
                        Diag::warning(format!("required_plugins \"{}\": {w}", p.name))
                            .at(f, Some(s.clone())),
                    );
                }
            }
            Err(e) => errs.push(Diag::error(e.to_string()).at(f, Some(s.clone()))),
        }
    }
}
