//! Evaluated bodies (attributes → values, `dynamic` blocks expanded) and the typed decoder that
//! turns them into model structs, reporting type errors at the sub-expression that produced the
//! wrong value (see [`super::prov`]) and unknown keys with a "did you mean" suggestion.

use super::body::{RawBlock, RawBody, RawItem};
use super::eval::{iterate, to_bool, type_name, EvalError, Scope};
use super::prov::Prov;
use crate::diag::{Diag, SourceFile};
use hcl::expr::Expression;
use hcl::Value;
use indexmap::IndexMap;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EAttr {
    pub value: Value,
    /// Span of the whole attribute (`key = value`).
    pub span: Range<usize>,
    pub file: Arc<SourceFile>,
    /// Where the value and its parts were produced: type errors point there.
    pub prov: Prov,
}

impl EAttr {
    /// A type error in this attribute's value, at `span` (the sub-expression that produced the
    /// wrong part, from [`EAttr::prov`]).
    fn type_error(&self, span: Range<usize>, msg: impl Into<String>) -> Diag {
        Diag::error(msg).at(&self.file, Some(span))
    }
}

#[derive(Debug, Clone)]
pub struct EBlock {
    pub ident: String,
    pub labels: Vec<String>,
    pub body: EBody,
    pub span: Range<usize>,
    pub file: Arc<SourceFile>,
}

#[derive(Debug, Clone, Default)]
pub struct EBody {
    pub attrs: IndexMap<String, EAttr>,
    pub blocks: Vec<EBlock>,
    /// attributes whose evaluation failed (already reported)
    pub failed: HashSet<String>,
}

/// Report an evaluation error at an attribute.
pub fn report(errs: &mut Vec<Diag>, e: EvalError, file: &Arc<SourceFile>, span: Range<usize>) {
    if let EvalError::Msg(m) = e {
        errs.push(Diag::error(m).at(file, Some(span)));
    }
}

/// Evaluate every attribute of `raw` and expand its `dynamic` blocks. `skip` names attributes
/// left unevaluated (e.g. `only`/`except` handled by the caller).
pub fn eval_body(raw: &RawBody, scope: &Scope, errs: &mut Vec<Diag>) -> EBody {
    let mut out = EBody::default();
    for item in &raw.items {
        match item {
            RawItem::Attr(a) => {
                // a setting derived from a sensitive variable is masked in output
                let (r, tainted) = scope
                    .g
                    .eval_tainted(|| scope.eval_spanned(&a.expr, &a.spans));
                if let (Ok((v, _)), true) = (&r, tainted) {
                    scope.g.note_derived(v, &a.file.text);
                }
                match r {
                    Ok((v, prov)) => {
                        if out.attrs.contains_key(&a.key) {
                            errs.push(
                                Diag::error(format!("attribute \"{}\" is set twice", a.key))
                                    .at(&a.file, Some(a.span.clone())),
                            );
                        }
                        out.attrs.insert(
                            a.key.clone(),
                            EAttr {
                                value: v,
                                span: a.span.clone(),
                                file: a.file.clone(),
                                prov,
                            },
                        );
                    }
                    Err(e) => {
                        out.failed.insert(a.key.clone());
                        report(errs, e, &a.file, a.span.clone());
                    }
                }
            }
            RawItem::Block(b) if b.ident == "dynamic" => {
                expand_dynamic(b, scope, errs, &mut out.blocks)
            }
            RawItem::Block(b) => out.blocks.push(EBlock {
                ident: b.ident.clone(),
                labels: b.labels.clone(),
                body: eval_body(&b.body, scope, errs),
                span: b.span.clone(),
                file: b.file.clone(),
            }),
        }
    }
    out
}

/// Expand `dynamic "<type>" { for_each, iterator, labels, content {} }`.
pub fn expand_dynamic(b: &RawBlock, scope: &Scope, errs: &mut Vec<Diag>, out: &mut Vec<EBlock>) {
    let Some(content) = b.body.blocks().find(|c| c.ident == "content") else {
        errs.push(
            Diag::error(format!(
                "dynamic \"{}\": a content block is required",
                b.labels.first().map(String::as_str).unwrap_or("")
            ))
            .at(&b.file, Some(b.span.clone())),
        );
        return;
    };
    for (labels, (iter_name, iter_value)) in dynamic_items(b, scope, errs) {
        let mut s = scope.child();
        s.bind(iter_name, iter_value);
        let mut lbl = Vec::new();
        for l in &labels {
            match s.eval(l) {
                Ok(Value::String(x)) => lbl.push(x),
                Ok(other) => lbl.push(other.to_string()),
                Err(e) => report(errs, e, &b.file, b.span.clone()),
            }
        }
        out.push(EBlock {
            ident: b.labels.first().cloned().unwrap_or_default(),
            labels: lbl,
            body: eval_body(&content.body, &s, errs),
            span: content.span.clone(),
            file: b.file.clone(),
        });
    }
}

/// One iteration of a dynamic block: label expressions and the iterator binding.
type DynItem = (Vec<Expression>, (String, Value));

/// The iterations of a dynamic block.
pub fn dynamic_items(b: &RawBlock, scope: &Scope, errs: &mut Vec<Diag>) -> Vec<DynItem> {
    let mut out = Vec::new();
    if b.labels.len() != 1 {
        errs.push(
            Diag::error("a dynamic block needs exactly one label: the block type to generate")
                .at(&b.file, Some(b.span.clone())),
        );
        return out;
    }
    let Some(fe) = b.body.attr("for_each") else {
        errs.push(
            Diag::error(format!("dynamic \"{}\": for_each is required", b.labels[0]))
                .at(&b.file, Some(b.span.clone())),
        );
        return out;
    };
    let iter_name = match b.body.attr("iterator").map(|a| &a.expr) {
        Some(Expression::Variable(v)) => v.as_str().to_string(),
        Some(_) => {
            errs.push(
                Diag::error("dynamic: iterator must be a bare name")
                    .at(&b.file, Some(b.span.clone())),
            );
            return out;
        }
        None => b.labels[0].clone(),
    };
    let labels: Vec<Expression> = match b.body.attr("labels").map(|a| &a.expr) {
        Some(Expression::Array(items)) => items.clone(),
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    let coll = match scope.eval(&fe.expr) {
        Ok(v) => v,
        Err(e) => {
            report(errs, e, &fe.file, fe.span.clone());
            return out;
        }
    };
    let items = match iterate(&coll) {
        Ok(i) => i,
        Err(e) => {
            report(errs, e, &fe.file, fe.span.clone());
            return out;
        }
    };
    for (k, v) in items {
        let mut it = hcl::Map::new();
        it.insert("key".to_string(), k);
        it.insert("value".to_string(), v);
        out.push((labels.clone(), (iter_name.clone(), Value::Object(it))));
    }
    out
}

/// Typed reader over an [`EBody`]; remembers which keys were asked for so the rest can be
/// reported as unknown.
pub struct Dec<'a> {
    pub body: &'a EBody,
    pub known: Vec<&'static str>,
    pub known_blocks: Vec<&'static str>,
    pub errs: &'a mut Vec<Diag>,
    /// What the body belongs to, for messages ("source proxmox-iso.ubuntu").
    pub what: String,
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
    /// The block of [`crate::model::keys::KEYS`] this body is checked against: the table names
    /// the "did you mean" candidates, and reading a key it lacks is a bug (debug assertion).
    pub table: Option<&'static str>,
}

impl<'a> Dec<'a> {
    /// Check this body against the key table's `block` (`""` = the source body).
    pub fn with_table(mut self, block: &'static str) -> Self {
        self.table = Some(block);
        self
    }

    pub fn new(
        body: &'a EBody,
        errs: &'a mut Vec<Diag>,
        what: impl Into<String>,
        file: &Arc<SourceFile>,
        span: Range<usize>,
    ) -> Dec<'a> {
        Dec {
            body,
            known: Vec::new(),
            known_blocks: Vec::new(),
            errs,
            what: what.into(),
            file: file.clone(),
            span,
            table: None,
        }
    }

    pub fn for_block(b: &'a EBlock, errs: &'a mut Vec<Diag>, what: impl Into<String>) -> Dec<'a> {
        Dec::new(&b.body, errs, what, &b.file, b.span.clone())
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a EAttr> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.body.attrs.get(key)
    }

    /// Mark keys as accepted without reading them.
    pub fn accept(&mut self, keys: &[&'static str]) {
        for k in keys {
            self.raw(k);
        }
    }

    pub fn has(&mut self, key: &'static str) -> bool {
        self.raw(key).is_some_and(|a| !is_unset(&a.value))
    }

    pub fn failed(&self, key: &str) -> bool {
        self.body.failed.contains(key)
    }

    pub fn err_at(&mut self, key: &str, msg: impl Into<String>) {
        let d = match self.body.attrs.get(key) {
            Some(a) => Diag::error(msg).at(&a.file, Some(a.span.clone())),
            None => Diag::error(msg).at(&self.file, Some(self.span.clone())),
        };
        self.errs.push(d);
    }

    /// An error about the block as a whole ("x must be specified"). Suppressed when an attribute
    /// of the block already failed to evaluate: the missing value is most likely that one.
    pub fn err(&mut self, msg: impl Into<String>) {
        if !self.body.failed.is_empty() {
            return;
        }
        self.errs
            .push(Diag::error(msg).at(&self.file, Some(self.span.clone())));
    }

    pub fn str(&mut self, key: &'static str) -> Option<String> {
        let a = self.raw(key)?;
        match &a.value {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                let msg = format!("{key}: a string is required, got {}", type_name(other));
                self.errs.push(a.type_error(a.prov.span.clone(), msg));
                None
            }
        }
    }

    pub fn req_str(&mut self, key: &'static str, msg: &str) -> String {
        match self.str(key) {
            Some(s) => s,
            None => {
                if !self.failed(key)
                    && !matches!(
                        self.body.attrs.get(key).map(|a| &a.value),
                        Some(Value::Array(_) | Value::Object(_))
                    )
                {
                    self.err_at(key, msg.to_string());
                }
                String::new()
            }
        }
    }

    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        let a = self.raw(key)?;
        match &a.value {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            v => match to_bool(v) {
                Ok(b) => Some(b),
                Err(m) => {
                    let at = a.prov.culprit(&|c| "truefalseTRUEFALSE".contains(c));
                    self.errs.push(a.type_error(at, format!("{key}: {m}")));
                    None
                }
            },
        }
    }

    pub fn flag(&mut self, key: &'static str) -> bool {
        self.bool(key).unwrap_or(false)
    }

    pub fn int(&mut self, key: &'static str) -> Option<i64> {
        let a = self.raw(key)?;
        let r = match &a.value {
            Value::Null => return None,
            Value::String(s) if s.is_empty() => return None,
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| format!("{key}: a whole number is required, got {n}")),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{key}: a number is required, got \"{s}\"")),
            other => Err(format!(
                "{key}: a number is required, got {}",
                type_name(other)
            )),
        };
        match r {
            Ok(i) => Some(i),
            Err(m) => {
                // in a string built from parts, the part that is not a number
                let at = a
                    .prov
                    .culprit(&|c| c.is_ascii_digit() || c.is_whitespace() || "+-".contains(c));
                self.errs.push(a.type_error(at, m));
                None
            }
        }
    }

    pub fn uint<T: TryFrom<i64>>(&mut self, key: &'static str) -> Option<T> {
        let i = self.int(key)?;
        match T::try_from(i) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err_at(key, format!("{key}: {i} is out of range"));
                None
            }
        }
    }

    /// Go duration; returns nanoseconds (may be negative).
    pub fn dur_nanos(&mut self, key: &'static str) -> Option<i128> {
        let s = self.str(key)?;
        match parse_go_duration(&s) {
            Ok(n) => Some(n),
            Err(m) => {
                self.err_at(key, format!("{key}: {m}"));
                None
            }
        }
    }

    pub fn dur(&mut self, key: &'static str) -> Option<Duration> {
        let n = self.dur_nanos(key)?;
        if n < 0 {
            self.err_at(key, format!("{key}: a duration must not be negative"));
            return None;
        }
        Some(Duration::from_nanos(n as u64))
    }

    pub fn list(&mut self, key: &'static str) -> Option<Vec<String>> {
        let a = self.raw(key)?;
        match &a.value {
            Value::Null => None,
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(n) => out.push(n.to_string()),
                        Value::Bool(b) => out.push(b.to_string()),
                        other => {
                            let m = format!(
                                "{key}[{i}]: a string is required, got {}",
                                type_name(other)
                            );
                            self.errs.push(a.type_error(a.prov.elem(i).span.clone(), m));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                let m = format!(
                    "{key}: a list of strings is required, got {}",
                    type_name(other)
                );
                self.errs.push(a.type_error(a.prov.span.clone(), m));
                None
            }
        }
    }

    pub fn list_or_empty(&mut self, key: &'static str) -> Vec<String> {
        self.list(key).unwrap_or_default()
    }

    pub fn map(&mut self, key: &'static str) -> IndexMap<String, String> {
        let Some(a) = self.raw(key) else {
            return IndexMap::new();
        };
        match &a.value {
            Value::Null => IndexMap::new(),
            Value::Object(m) => {
                let mut out = IndexMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(n) => {
                            out.insert(k.clone(), n.to_string());
                        }
                        Value::Bool(b) => {
                            out.insert(k.clone(), b.to_string());
                        }
                        other => {
                            let m = format!(
                                "{key}[\"{k}\"]: a string is required, got {}",
                                type_name(other)
                            );
                            self.errs
                                .push(a.type_error(a.prov.field(k).span.clone(), m));
                        }
                    }
                }
                out
            }
            other => {
                let m = format!(
                    "{key}: a map of strings is required, got {}",
                    type_name(other)
                );
                self.errs.push(a.type_error(a.prov.span.clone(), m));
                IndexMap::new()
            }
        }
    }

    pub fn blocks(&mut self, ident: &'static str) -> Vec<&'a EBlock> {
        if !self.known_blocks.contains(&ident) {
            self.known_blocks.push(ident);
        }
        self.body
            .blocks
            .iter()
            .filter(|b| b.ident == ident)
            .collect()
    }

    pub fn block(&mut self, ident: &'static str) -> Option<&'a EBlock> {
        let bs = self.blocks(ident);
        if bs.len() > 1 {
            let b = bs[1];
            self.errs.push(
                Diag::error(format!("only one \"{ident}\" block is allowed here"))
                    .at(&b.file, Some(b.span.clone())),
            );
        }
        bs.into_iter().next()
    }

    /// Report every attribute and block that was not asked for.
    pub fn finish(self) {
        let mut known: Vec<&str> = self
            .known
            .iter()
            .chain(self.known_blocks.iter())
            .copied()
            .collect();
        if let Some(t) = self.table {
            let table: Vec<&str> = crate::model::keys::keys_of(t).map(|s| s.key).collect();
            debug_assert!(
                known.iter().all(|k| table.contains(k)),
                "the decoder of {t:?} reads keys missing from model::keys::KEYS: {:?}",
                known
                    .iter()
                    .filter(|k| !table.contains(k))
                    .collect::<Vec<_>>()
            );
            known = table;
        }
        for (k, a) in &self.body.attrs {
            if self.known.contains(&k.as_str()) {
                continue;
            }
            let mut d = Diag::error(format!("unknown key \"{k}\" in {}", self.what))
                .at(&a.file, Some(a.span.clone()));
            if self.known_blocks.contains(&k.as_str()) {
                d = d.with_help(format!(
                    "\"{k}\" is a block: write `{k} {{ … }}` without `=`"
                ));
            } else if let Some(s) = did_you_mean(k, &known) {
                d = d.with_help(format!("did you mean \"{s}\"?"));
            }
            self.errs.push(d);
        }
        for b in &self.body.blocks {
            if self.known_blocks.contains(&b.ident.as_str()) {
                continue;
            }
            let mut d = Diag::error(format!("unknown block \"{}\" in {}", b.ident, self.what))
                .at(&b.file, Some(b.span.clone()));
            if self.known.contains(&b.ident.as_str()) {
                d = d.with_help(format!(
                    "\"{}\" is an attribute: write `{} = …`",
                    b.ident, b.ident
                ));
            } else if let Some(s) = did_you_mean(&b.ident, &self.known_blocks)
                .or_else(|| did_you_mean(&b.ident, &known))
            {
                d = d.with_help(format!("did you mean \"{s}\"?"));
            }
            self.errs.push(d);
        }
    }
}

pub fn is_unset(v: &Value) -> bool {
    matches!(v, Value::Null) || matches!(v, Value::String(s) if s.is_empty())
}

/// "did you mean": the closest known key by edit distance, or a known key that ends with it
/// (`iso` → `boot_iso`).
pub fn did_you_mean(key: &str, known: &[&str]) -> Option<String> {
    if key.len() >= 3 {
        if let Some(k) = known
            .iter()
            .find(|k| k.ends_with(&format!("_{key}")) || k.starts_with(&format!("{key}_")))
        {
            return Some(k.to_string());
        }
    }
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = strsim::levenshtein(key, k);
        let limit = (key.len().max(k.len()) / 3).max(2);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k.to_string())
}

/// The one Go-duration parser (kiln-bootcmd's: `<wait1m30s>` in the boot command uses it too).
pub use kiln_bootcmd::duration::parse_go_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("iso", &["boot_iso", "disks"]).as_deref(),
            Some("boot_iso")
        );
        assert_eq!(
            did_you_mean("memroy", &["memory", "cores"]).as_deref(),
            Some("memory")
        );
        assert_eq!(did_you_mean("zzz", &["memory"]), None);
    }
}
