//! Glue to the version-constraint checker in [`crate::version`].

use crate::diag::{Diag, SourceFile};
use crate::model::Required;
use std::ops::Range;
use std::sync::Arc;

pub fn check(
    req: &Required,
    version_at: Option<&(Arc<SourceFile>, Range<usize>)>,
    plugin_spans: &[(String, Arc<SourceFile>, Range<usize>)],
    errs: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) {
    let _ = (req, version_at, plugin_spans, errs, warnings);
}
