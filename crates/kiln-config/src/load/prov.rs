//! Where a value came from. The parser records the span of every part of an attribute's
//! expression ([`SpanTree`]); the evaluator turns it into a [`Prov`]: for the value and each
//! list element, object field and template part, the span of the innermost sub-expression that
//! produced it — a list or object constructor's element, a conditional's branch taken, a
//! function argument passed through, a template interpolation. A type error found later by the
//! decoder points there instead of at the whole attribute.

use hcl::Value;
use hcl_edit::expr::Expression as EExpr;
use hcl_edit::template::Element as EElement;
use hcl_edit::Span as _;
use std::ops::Range;

/// The spans of an expression and of the parts the evaluator tracks, in hcl-edit's structure
/// (which `hcl::Expression` mirrors).
#[derive(Debug, Clone)]
pub struct SpanTree {
    pub span: Range<usize>,
    pub kids: SpanKids,
}

#[derive(Debug, Clone)]
pub enum SpanKids {
    Leaf,
    /// `[a, b]`: the elements
    List(Vec<SpanTree>),
    /// `{ k = v }`: the values, in order
    Object(Vec<SpanTree>),
    /// `c ? t : f`: the two branches
    Cond(Box<(SpanTree, SpanTree)>),
    Paren(Box<SpanTree>),
    /// `f(a, b)`: the arguments
    Call(Vec<SpanTree>),
    /// `"…${x}…"`: per template element, a literal's span or the interpolated expression's
    /// tree (a directive is a leaf)
    Template(Vec<SpanTree>),
}

impl SpanTree {
    /// The tree of a parsed expression; `outer` is used where the parser kept no span.
    pub fn of(e: &EExpr, outer: &Range<usize>) -> SpanTree {
        let span = e.span().unwrap_or_else(|| outer.clone());
        let kids = match e {
            EExpr::Array(a) => SpanKids::List(a.iter().map(|x| SpanTree::of(x, &span)).collect()),
            EExpr::Object(o) => SpanKids::Object(
                o.iter()
                    .map(|(_, v)| SpanTree::of(v.expr(), &span))
                    .collect(),
            ),
            EExpr::Conditional(c) => SpanKids::Cond(Box::new((
                SpanTree::of(&c.true_expr, &span),
                SpanTree::of(&c.false_expr, &span),
            ))),
            EExpr::Parenthesis(p) => SpanKids::Paren(Box::new(SpanTree::of(p.inner(), &span))),
            EExpr::FuncCall(f) => {
                SpanKids::Call(f.args.iter().map(|x| SpanTree::of(x, &span)).collect())
            }
            EExpr::StringTemplate(t) => SpanKids::Template(
                t.iter()
                    .map(|el| match el {
                        EElement::Literal(l) => SpanTree::leaf(l.span().unwrap_or(span.clone())),
                        EElement::Interpolation(i) => SpanTree::of(&i.expr, &span),
                        EElement::Directive(d) => SpanTree::leaf(d.span().unwrap_or(span.clone())),
                    })
                    .collect(),
            ),
            _ => SpanKids::Leaf,
        };
        SpanTree { span, kids }
    }

    pub fn leaf(span: Range<usize>) -> SpanTree {
        SpanTree {
            span,
            kids: SpanKids::Leaf,
        }
    }
}

/// Where a value (and each of its parts) was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Prov {
    pub span: Range<usize>,
    pub kids: ProvKids,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProvKids {
    None,
    /// a list's elements
    Elems(Vec<Prov>),
    /// an object's fields
    Fields(Vec<(String, Prov)>),
    /// a string rendered from a template: each part and the text it contributed
    Parts(Vec<(Prov, String)>),
}

impl Prov {
    pub fn leaf(span: Range<usize>) -> Prov {
        Prov {
            span,
            kids: ProvKids::None,
        }
    }

    /// Where list element `i` came from (the whole value's span if unknown).
    pub fn elem(&self, i: usize) -> &Prov {
        match &self.kids {
            ProvKids::Elems(e) => e.get(i).unwrap_or(self),
            _ => self,
        }
    }

    /// Where object field `k` came from (the whole value's span if unknown).
    pub fn field(&self, k: &str) -> &Prov {
        match &self.kids {
            ProvKids::Fields(f) => f
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map_or(self, |(_, p)| p),
            _ => self,
        }
    }

    /// For a string that should have been a number or a bool: the first template part whose
    /// text holds a character `ok` refuses (`"${var.a}${local.b}x"` → the `x`), recursively;
    /// the whole value if no part stands out.
    pub fn culprit(&self, ok: &dyn Fn(char) -> bool) -> Range<usize> {
        if let ProvKids::Parts(parts) = &self.kids {
            if let Some((p, _)) = parts.iter().find(|(_, t)| !t.chars().all(ok)) {
                return p.culprit(ok);
            }
        }
        self.span.clone()
    }

    /// The provenance of a function's result `v`: a result equal to an argument (`coalesce`,
    /// `lookup`'s default, `try`) is that argument; a list's elements and an object's fields
    /// that equal an argument's element or field (`concat`, `merge`, `slice`, …) are that
    /// element or field; anything else (computed by the function) is the call itself.
    pub fn of_call(span: Range<usize>, v: &Value, args: &[(Value, Prov)]) -> Prov {
        if let Some((_, p)) = args.iter().find(|(a, _)| a == v) {
            return p.clone();
        }
        match v {
            Value::Array(items) => {
                let mut cands: Vec<(&Value, &Prov, bool)> = Vec::new();
                for (a, p) in args {
                    if let Value::Array(xs) = a {
                        for (i, x) in xs.iter().enumerate() {
                            cands.push((x, p.elem(i), false));
                        }
                    }
                }
                let elems = items
                    .iter()
                    .map(
                        |it| match cands.iter_mut().find(|(x, _, used)| !*used && *x == it) {
                            Some(c) => {
                                c.2 = true;
                                c.1.clone()
                            }
                            None => Prov::leaf(span.clone()),
                        },
                    )
                    .collect();
                Prov {
                    span,
                    kids: ProvKids::Elems(elems),
                }
            }
            Value::Object(m) => {
                let fields = m
                    .iter()
                    .map(|(k, x)| {
                        let from = args.iter().rev().find_map(|(a, p)| match a {
                            Value::Object(am) if am.get(k) == Some(x) => Some(p.field(k).clone()),
                            _ => None,
                        });
                        (k.clone(), from.unwrap_or_else(|| Prov::leaf(span.clone())))
                    })
                    .collect();
                Prov {
                    span,
                    kids: ProvKids::Fields(fields),
                }
            }
            _ => Prov::leaf(span),
        }
    }
}
