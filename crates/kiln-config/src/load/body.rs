//! The spanned source tree: hcl-edit's parse result reduced to what the loader needs
//! (attributes with their expression as `hcl::Expression`, blocks with labels), each with its
//! byte span and file, so every later error can point at file:line:col.

use super::prov::SpanTree;
use crate::diag::{Diag, SourceFile};
use hcl_edit::Span as _;
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct RawAttr {
    pub key: String,
    pub expr: hcl::Expression,
    /// Span of the whole attribute (`key = value`).
    pub span: Range<usize>,
    pub file: Arc<SourceFile>,
    /// Spans of the value expression and its parts (for errors at the exact sub-expression).
    pub spans: Arc<SpanTree>,
}

#[derive(Debug, Clone)]
pub struct RawBlock {
    pub ident: String,
    pub labels: Vec<String>,
    pub body: RawBody,
    /// Span of the block identifier (where errors about the block point).
    pub span: Range<usize>,
    pub file: Arc<SourceFile>,
}

/// Attributes and blocks in source order.
#[derive(Debug, Clone, Default)]
pub struct RawBody {
    pub items: Vec<RawItem>,
}

#[derive(Debug, Clone)]
pub enum RawItem {
    Attr(RawAttr),
    Block(RawBlock),
}

impl RawBody {
    pub fn attrs(&self) -> impl Iterator<Item = &RawAttr> {
        self.items.iter().filter_map(|i| match i {
            RawItem::Attr(a) => Some(a),
            RawItem::Block(_) => None,
        })
    }
    pub fn blocks(&self) -> impl Iterator<Item = &RawBlock> {
        self.items.iter().filter_map(|i| match i {
            RawItem::Block(b) => Some(b),
            RawItem::Attr(_) => None,
        })
    }
    pub fn attr(&self, key: &str) -> Option<&RawAttr> {
        self.attrs().find(|a| a.key == key)
    }
}

/// Parse a file into a [`RawBody`]; a syntax error becomes a diagnostic at its line/column.
pub fn parse_file(file: &Arc<SourceFile>) -> Result<RawBody, Diag> {
    match hcl_edit::parser::parse_body(&file.text) {
        Ok(body) => Ok(convert_body(&body, file)),
        Err(e) => {
            let loc = e.location();
            let offset = loc.offset().min(file.text.len());
            let end = file.text[offset..]
                .find('\n')
                .map(|n| offset + n)
                .unwrap_or(file.text.len());
            let end = if end == offset {
                (offset + 1).min(file.text.len())
            } else {
                end
            };
            // the parser reports some errors at the start of the attribute: point at its value
            let line = &file.text[offset..end];
            let offset = match line.find('=') {
                Some(eq)
                    if !line[..eq].contains(['"', '{', '(', '['])
                        && !line[eq + 1..].starts_with('=') =>
                {
                    let v = &line[eq + 1..];
                    offset + eq + 1 + (v.len() - v.trim_start().len())
                }
                _ => offset,
            };
            let end = end.max(offset + 1).min(file.text.len());
            let msg = first_line(e.message());
            Err(Diag::error(format!("syntax error: {msg}"))
                .at(file, Some(offset..end))
                .with_label("here")
                .with_help(syntax_help(&file.text[offset..end])))
        }
    }
}

fn first_line(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        "invalid expression".to_string()
    } else {
        s.lines().next().unwrap_or("invalid expression").to_string()
    }
}

fn syntax_help(rest: &str) -> String {
    let t = rest.trim_start();
    if t.starts_with("${") {
        "`${…}` is only valid inside a quoted string: write `\"${…}\"`, or drop the `${ }` and write the expression directly (e.g. `local.x`)".into()
    } else if t.starts_with('<') {
        "this looks like a placeholder: replace it with a quoted value such as \"…\"".into()
    } else {
        "check the HCL syntax on this line (quotes, brackets, `=` between key and value)".into()
    }
}

fn convert_body(body: &hcl_edit::structure::Body, file: &Arc<SourceFile>) -> RawBody {
    let mut items = Vec::new();
    for s in body.iter() {
        match s {
            hcl_edit::structure::Structure::Attribute(a) => {
                let span = a.span().unwrap_or(0..0);
                items.push(RawItem::Attr(RawAttr {
                    key: a.key.as_str().to_string(),
                    expr: hcl::Expression::from(a.value.clone()),
                    spans: Arc::new(SpanTree::of(&a.value, &span)),
                    span,
                    file: file.clone(),
                }));
            }
            hcl_edit::structure::Structure::Block(b) => {
                let span = b.ident.span().unwrap_or(0..0);
                items.push(RawItem::Block(RawBlock {
                    ident: b.ident.as_str().to_string(),
                    labels: b.labels.iter().map(|l| l.as_str().to_string()).collect(),
                    body: convert_body(&b.body, file),
                    span,
                    file: file.clone(),
                }));
            }
        }
    }
    RawBody { items }
}
