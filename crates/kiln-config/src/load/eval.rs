//! The expression evaluator: HCL2 semantics over `hcl::Expression`, with Packer's roots
//! (`var`, `local`, `path`, `packer`, `source`, `build`), lazy locals with cycle detection and the
//! special forms `can`, `try` and `templatefile`. Ordinary functions come from
//! [`crate::functions`].

use super::prov::{Prov, ProvKids, SpanKids, SpanTree};
use crate::functions::{self, FuncContext};
use hcl::expr::{
    BinaryOperator, Expression, ForExpr, FuncCall, Heredoc, HeredocStripMode, ObjectKey, Operation,
    TemplateExpr, Traversal, TraversalOperator, UnaryOperator,
};
use hcl::template::{Directive, Element, Strip, Template};
use hcl::{Number, Value};
use indexmap::IndexMap;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;

pub type Map = hcl::Map<String, Value>;

/// An evaluation failure. `Reported` means the cause was already reported elsewhere (a failed
/// local, an unsupported data source): the caller must not add a second error.
#[derive(Debug, Clone)]
pub enum EvalError {
    Msg(String),
    Reported,
}

impl EvalError {
    pub fn msg(s: impl Into<String>) -> EvalError {
        EvalError::Msg(s.into())
    }
}

type R<T> = Result<T, EvalError>;

// Limits a real template never meets but a hostile one does (README "Limits on hostile
// templates"). The depths keep the recursive evaluator well inside a 2 MiB thread stack (the
// test harness's; kiln's main thread has 8 MiB) — the `deepest_allowed_*` tests check that.

/// Most locals one local may depend on through a chain (`a` uses `b` uses `c` …).
pub const MAX_LOCAL_DEPTH: usize = 64;
/// Deepest nesting of expressions being evaluated (calls, operators, templates, locals).
pub const MAX_EVAL_DEPTH: usize = 128;
/// Deepest nesting of `templatefile` calls (a template that includes itself stops here).
pub const MAX_TEMPLATEFILE_DEPTH: usize = 16;
/// Most expression evaluations in one load: bounds the time of nested for-expressions.
pub const MAX_EVAL_STEPS: u64 = 5_000_000;
/// Largest value one expression may produce, in bytes: string lengths plus 64 per value (about
/// what a value costs in memory), so 128 MiB of text or about 2 million list elements.
pub const MAX_VALUE_WEIGHT: u64 = 128 << 20;

fn limit_hint() -> &'static str {
    "(kiln's limit for hostile templates; see \"Limits on hostile templates\" in the README)"
}

/// Approximate memory weight of a value, stopping early once it passes `limit`.
pub fn value_weight(v: &Value, limit: u64) -> u64 {
    fn go(v: &Value, acc: &mut u64, limit: u64) {
        if *acc > limit {
            return;
        }
        *acc += 64;
        match v {
            Value::String(s) => *acc += s.len() as u64,
            Value::Array(a) => a.iter().for_each(|x| go(x, acc, limit)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                *acc += k.len() as u64;
                go(x, acc, limit)
            }),
            _ => {}
        }
    }
    let mut acc = 0;
    go(v, &mut acc, limit);
    acc
}

fn check_weight(total: u64) -> R<()> {
    if total > MAX_VALUE_WEIGHT {
        return Err(EvalError::msg(format!(
            "the value is larger than {} MiB {}",
            MAX_VALUE_WEIGHT >> 20,
            limit_hint()
        )));
    }
    Ok(())
}

/// A local's definition.
#[derive(Debug, Clone)]
pub struct LocalDef {
    pub expr: Expression,
    /// index into the loader's list of local attributes (for error reporting)
    pub index: usize,
}

#[derive(Debug, Clone)]
enum LocalState {
    InProgress,
    Done(Value),
    Failed,
}

/// What every expression in one load can see.
pub struct Globals {
    pub vars: Map,
    pub unset_vars: HashSet<String>,
    pub locals: IndexMap<String, LocalDef>,
    local_state: RefCell<IndexMap<String, LocalState>>,
    /// (local index, message) of locals that failed, in evaluation order.
    pub local_errors: RefCell<Vec<(usize, String)>>,
    pub data_blocks: HashSet<String>,
    pub path: Value,
    pub packer: Value,
    pub func: FuncContext,
    pub cwd: PathBuf,
    /// environment for env() (LoadOptions.env)
    pub env: Vec<(String, String)>,
    /// a variables file failed to parse: unset variables are probably set there, so using
    /// one is not reported again
    pub quiet_unset: bool,
    /// evaluation nesting right now / locals being evaluated right now / templatefile nesting
    depth: Cell<usize>,
    local_depth: Cell<usize>,
    depth_reported: Cell<bool>,
    template_depth: Cell<usize>,
    /// evaluations so far (bounded by MAX_EVAL_STEPS)
    steps: Cell<u64>,
    /// variables declared `sensitive = true`
    pub sensitive_vars: HashSet<String>,
    /// taint tracking: set when the expression being evaluated read a sensitive variable or a
    /// local derived from one (see [`Globals::eval_tainted`])
    taint: Cell<bool>,
    /// locals whose value derives from a sensitive variable
    tainted_locals: RefCell<HashSet<String>>,
    /// strings of values derived from sensitive variables that are not literally in the
    /// template (e.g. `base64encode(var.password)`): masked in output like the variables
    pub derived_sensitive: RefCell<Vec<String>>,
}

impl Globals {
    pub fn new(func: FuncContext, path: Value, packer: Value) -> Globals {
        let cwd = func.cwd.clone();
        Globals {
            vars: Map::new(),
            unset_vars: HashSet::new(),
            locals: IndexMap::new(),
            local_state: RefCell::new(IndexMap::new()),
            local_errors: RefCell::new(Vec::new()),
            data_blocks: HashSet::new(),
            path,
            packer,
            func,
            cwd,
            env: Vec::new(),
            quiet_unset: false,
            depth: Cell::new(0),
            local_depth: Cell::new(0),
            depth_reported: Cell::new(false),
            template_depth: Cell::new(0),
            steps: Cell::new(0),
            sensitive_vars: HashSet::new(),
            taint: Cell::new(false),
            tainted_locals: RefCell::new(HashSet::new()),
            derived_sensitive: RefCell::new(Vec::new()),
        }
    }

    /// Evaluate with taint tracking: the result, and whether it derives from a sensitive
    /// variable (read directly, through a local, or through `var` as a whole).
    pub fn eval_tainted<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let outer = self.taint.replace(false);
        let r = f();
        let tainted = self.taint.get();
        self.taint.set(outer || tainted);
        (r, tainted)
    }

    /// Does `local.<name>` derive from a sensitive variable? (after it was evaluated)
    pub fn local_tainted(&self, name: &str) -> bool {
        self.tainted_locals.borrow().contains(name)
    }

    /// Remember the strings of a value derived from a sensitive variable, except those already
    /// masked (they contain a sensitive value) and those written literally in the template
    /// (`"<enter>"` next to a password in a boot command is no secret). `literal` is the text of
    /// the template file(s); `known` the sensitive values.
    pub fn note_derived(&self, v: &Value, literal: &str) {
        let mut strings = Vec::new();
        collect_leaf_strings(v, &mut strings);
        let known: Vec<String> = self
            .sensitive_vars
            .iter()
            .filter_map(|n| self.vars.get(n))
            .flat_map(|v| {
                let mut x = Vec::new();
                collect_leaf_strings(v, &mut x);
                x
            })
            .filter(|s| !s.is_empty())
            .collect();
        let mut out = self.derived_sensitive.borrow_mut();
        for s in strings {
            if s.len() < 4
                || literal.contains(s.as_str())
                || known.iter().any(|k| s.contains(k.as_str()))
            {
                continue;
            }
            out.push(s);
        }
    }

    /// Value of `local.<name>`, evaluating it on first use.
    pub fn local(&self, name: &str) -> R<Value> {
        let state = self.local_state.borrow().get(name).cloned();
        if self.tainted_locals.borrow().contains(name) {
            self.taint.set(true);
        }
        match state {
            Some(LocalState::Done(v)) => return Ok(v),
            Some(LocalState::Failed) => return Err(EvalError::Reported),
            Some(LocalState::InProgress) => {
                return Err(EvalError::msg(format!(
                    "cycle between locals: local.{name} depends on itself"
                )))
            }
            None => {}
        }
        let Some(def) = self.locals.get(name) else {
            let mut msg = format!("reference to undefined local value \"{name}\"");
            if let Some(s) = suggest(name, self.locals.keys().map(|k| k.as_str())) {
                msg.push_str(&format!(" (did you mean \"{s}\"?)"));
            }
            return Err(EvalError::msg(msg));
        };
        if self.local_depth.get() >= MAX_LOCAL_DEPTH {
            // reported once, at the innermost local; the outer ones (and any further chain
            // that hits the limit) fail quietly
            if self.depth_reported.replace(true) {
                return Err(EvalError::Reported);
            }
            return Err(EvalError::msg(format!(
                "local.{name}: locals depend on each other more than {MAX_LOCAL_DEPTH} deep {}",
                limit_hint()
            )));
        }
        self.local_state
            .borrow_mut()
            .insert(name.to_string(), LocalState::InProgress);
        self.local_depth.set(self.local_depth.get() + 1);
        let root = Scope::root(self);
        let (res, tainted) = self.eval_tainted(|| {
            root.eval(&def.expr)
                .and_then(|v| check_weight(value_weight(&v, MAX_VALUE_WEIGHT)).map(|_| v))
        });
        if tainted {
            self.tainted_locals.borrow_mut().insert(name.to_string());
        }
        self.local_depth.set(self.local_depth.get() - 1);
        match res {
            Ok(v) => {
                self.local_state
                    .borrow_mut()
                    .insert(name.to_string(), LocalState::Done(v.clone()));
                Ok(v)
            }
            Err(EvalError::Msg(m)) => {
                self.local_state
                    .borrow_mut()
                    .insert(name.to_string(), LocalState::Failed);
                self.local_errors.borrow_mut().push((def.index, m));
                Err(EvalError::Reported)
            }
            Err(EvalError::Reported) => {
                self.local_state
                    .borrow_mut()
                    .insert(name.to_string(), LocalState::Failed);
                Err(EvalError::Reported)
            }
        }
    }

    fn var(&self, name: &str) -> R<Value> {
        if self.sensitive_vars.contains(name) {
            self.taint.set(true);
        }
        if let Some(v) = self.vars.get(name) {
            return Ok(v.clone());
        }
        if self.unset_vars.contains(name) {
            if self.quiet_unset {
                return Err(EvalError::Reported);
            }
            return Err(EvalError::msg(format!(
                "unset variable \"{name}\": a used variable must be set or have a default value (use -var, -var-file or PKR_VAR_{name})"
            )));
        }
        let mut msg = format!("reference to undeclared input variable \"{name}\"");
        let names: Vec<&str> = self
            .vars
            .keys()
            .map(|k| k.as_str())
            .chain(self.unset_vars.iter().map(|k| k.as_str()))
            .collect();
        if let Some(s) = suggest(name, names.into_iter()) {
            msg.push_str(&format!(" (did you mean \"{s}\"?)"));
        }
        Err(EvalError::msg(msg))
    }
}

/// Every string (and number) inside a value.
fn collect_leaf_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| collect_leaf_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_leaf_strings(x, out)),
        _ => {}
    }
}

/// Closest candidate for "did you mean".
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// A lexical scope: globals plus local bindings (for-expression variables, iterators,
/// `source`, `build`, template variables).
pub struct Scope<'a> {
    pub g: &'a Globals,
    parent: Option<&'a Scope<'a>>,
    names: Vec<(String, Value)>,
    /// inside `templatefile`: only the given vars (and functions) are visible
    template_only: bool,
}

impl<'a> Scope<'a> {
    pub fn root(g: &'a Globals) -> Scope<'a> {
        Scope {
            g,
            parent: None,
            names: Vec::new(),
            template_only: false,
        }
    }

    pub fn child(&'a self) -> Scope<'a> {
        Scope {
            g: self.g,
            parent: Some(self),
            names: Vec::new(),
            template_only: self.template_only,
        }
    }

    pub fn bind(&mut self, name: impl Into<String>, v: Value) {
        self.names.push((name.into(), v));
    }

    fn lookup(&self, name: &str) -> Option<&Value> {
        if let Some((_, v)) = self.names.iter().rev().find(|(n, _)| n == name) {
            return Some(v);
        }
        self.parent.and_then(|p| p.lookup(name))
    }

    fn root_var(&self, name: &str) -> R<Value> {
        if let Some(v) = self.lookup(name) {
            return Ok(v.clone());
        }
        if self.template_only {
            return Err(EvalError::msg(format!(
                "template variable \"{name}\" is not defined: pass it in the templatefile() vars map"
            )));
        }
        match name {
            "var" => {
                if !self.g.sensitive_vars.is_empty() {
                    self.g.taint.set(true);
                }
                Ok(Value::Object(self.g.vars.clone()))
            }
            "local" => {
                let mut m = Map::new();
                for k in self.g.locals.keys() {
                    m.insert(k.clone(), self.g.local(k)?);
                }
                Ok(Value::Object(m))
            }
            "path" => Ok(self.g.path.clone()),
            "packer" => Ok(self.g.packer.clone()),
            "data" => Err(EvalError::Reported),
            "source" | "build" => Err(EvalError::msg(format!(
                "\"{name}\" is only available inside a build block (provisioners, post-processors, build-level source overrides)"
            ))),
            _ => Err(EvalError::msg(format!("unknown variable \"{name}\""))),
        }
    }

    /// Evaluate an expression (depth- and step-limited).
    pub fn eval(&self, e: &Expression) -> R<Value> {
        self.counted(|| self.eval_inner(e))
    }

    /// One evaluation step: counted against the step budget and the depth limit.
    fn counted<T>(&self, f: impl FnOnce() -> R<T>) -> R<T> {
        let g = self.g;
        let steps = g.steps.get() + 1;
        g.steps.set(steps);
        if steps > MAX_EVAL_STEPS {
            // once over the budget every evaluation fails: `try`/`can` cannot loop on
            return Err(EvalError::msg(format!(
                "evaluation takes more than {MAX_EVAL_STEPS} steps {}",
                limit_hint()
            )));
        }
        let depth = g.depth.get();
        if depth >= MAX_EVAL_DEPTH {
            return Err(EvalError::msg(format!(
                "expressions are nested more than {MAX_EVAL_DEPTH} deep {}",
                limit_hint()
            )));
        }
        g.depth.set(depth + 1);
        let r = f();
        g.depth.set(depth);
        r
    }

    /// Evaluate an attribute's expression and say where each part of its value came from
    /// (`st` is the expression's span tree, see [`super::prov`]). The value is the one
    /// [`Scope::eval`] gives; the structural forms (list and object constructors, conditionals,
    /// parentheses, function calls, templates) are followed, anything else is a leaf.
    pub fn eval_spanned(&self, e: &Expression, st: &SpanTree) -> R<(Value, Prov)> {
        let span = st.span.clone();
        match (e, &st.kids) {
            (Expression::Parenthesis(inner), SpanKids::Paren(ist)) => {
                self.counted(|| self.eval_spanned(inner, ist))
            }
            (Expression::Array(items), SpanKids::List(sts)) if items.len() == sts.len() => self
                .counted(|| {
                    let mut out = Vec::with_capacity(items.len());
                    let mut provs = Vec::with_capacity(items.len());
                    let mut weight = 0;
                    for (i, ist) in items.iter().zip(sts) {
                        let (v, p) = self.eval_spanned(i, ist)?;
                        weight += value_weight(&v, MAX_VALUE_WEIGHT);
                        check_weight(weight)?;
                        out.push(v);
                        provs.push(p);
                    }
                    let kids = ProvKids::Elems(provs);
                    Ok((Value::Array(out), Prov { span, kids }))
                }),
            (Expression::Object(obj), SpanKids::Object(sts)) if obj.len() == sts.len() => self
                .counted(|| {
                    let mut out = Map::new();
                    let mut fields = Vec::with_capacity(obj.len());
                    let mut weight = 0;
                    for ((k, v), vst) in obj.iter().zip(sts) {
                        let key = self.object_key(k)?;
                        let (v, p) = self.eval_spanned(v, vst)?;
                        weight += value_weight(&v, MAX_VALUE_WEIGHT) + key.len() as u64;
                        check_weight(weight)?;
                        fields.push((key.clone(), p));
                        out.insert(key, v);
                    }
                    let kids = ProvKids::Fields(fields);
                    Ok((Value::Object(out), Prov { span, kids }))
                }),
            (Expression::Conditional(c), SpanKids::Cond(branches)) => self.counted(|| {
                if self.condition(&c.cond_expr)? {
                    self.eval_spanned(&c.true_expr, &branches.0)
                } else {
                    self.eval_spanned(&c.false_expr, &branches.1)
                }
            }),
            (Expression::FuncCall(f), SpanKids::Call(sts))
                if f.args.len() == sts.len() && f.name.namespace.is_empty() =>
            {
                self.counted(|| self.eval_call_spanned(f, sts, span))
            }
            (Expression::TemplateExpr(t), SpanKids::Template(sts))
                if matches!(t.as_ref(), TemplateExpr::QuotedString(_)) =>
            {
                self.counted(|| self.eval_template_spanned(t, sts, span))
            }
            _ => Ok((self.eval(e)?, Prov::leaf(span))),
        }
    }

    fn eval_call_spanned(
        &self,
        f: &FuncCall,
        sts: &[SpanTree],
        span: std::ops::Range<usize>,
    ) -> R<(Value, Prov)> {
        let name = f.name.name.as_str();
        match name {
            "can" => Ok((self.eval_call(f)?, Prov::leaf(span))),
            "try" => {
                if f.args.is_empty() {
                    return Err(EvalError::msg("try() needs at least one argument"));
                }
                let mut last = EvalError::msg("no argument of try() could be evaluated");
                for (a, ast) in f.args.iter().zip(sts) {
                    match self.eval_spanned(a, ast) {
                        Ok(r) => return Ok(r),
                        Err(e) => last = e,
                    }
                }
                Err(try_failed(last))
            }
            _ => {
                let mut args = Vec::with_capacity(f.args.len());
                for (a, ast) in f.args.iter().zip(sts) {
                    args.push(self.eval_spanned(a, ast)?);
                }
                let values = args.iter().map(|(v, _)| v.clone()).collect();
                let v = self.apply_call(name, f.expand_final, values)?;
                if f.expand_final {
                    // the spread list's elements are arguments: not followed
                    return Ok((v, Prov::leaf(span)));
                }
                let p = Prov::of_call(span, &v, &args);
                Ok((v, p))
            }
        }
    }

    /// A quoted template: a lone interpolation passes its value (and provenance) through; a
    /// template of literals and interpolations records each part's text; one with directives
    /// is a leaf.
    fn eval_template_spanned(
        &self,
        t: &TemplateExpr,
        sts: &[SpanTree],
        span: std::ops::Range<usize>,
    ) -> R<(Value, Prov)> {
        let template = parse_template_expr(t)?;
        let elems = template.elements();
        if elems.len() != sts.len() || elems.iter().any(|e| matches!(e, Element::Directive(_))) {
            return Ok((self.eval_template_value(&template)?, Prov::leaf(span)));
        }
        if let [Element::Interpolation(i)] = elems {
            return self.eval_spanned(&i.expr, &sts[0]);
        }
        let mut out = String::new();
        let mut parts = Vec::with_capacity(elems.len());
        for (i, (el, est)) in elems.iter().zip(sts).enumerate() {
            let p = if i == 0 {
                Strip::None
            } else {
                elem_strip(&elems[i - 1])
            };
            let n = elems.get(i + 1).map_or(Strip::None, elem_strip);
            match el {
                Element::Literal(l) => {
                    let text = strip_literal(l, p, n);
                    out.push_str(text);
                    parts.push((Prov::leaf(est.span.clone()), text.to_string()));
                }
                Element::Interpolation(interp) => {
                    let (v, prov) = self.eval_spanned(&interp.expr, est)?;
                    let text = template_string(&v)?;
                    out.push_str(&text);
                    check_weight(out.len() as u64)?;
                    parts.push((prov, text));
                }
                Element::Directive(_) => unreachable_directive(),
            }
        }
        let kids = ProvKids::Parts(parts);
        Ok((Value::String(out), Prov { span, kids }))
    }

    /// An object constructor's key.
    fn object_key(&self, k: &ObjectKey) -> R<String> {
        Ok(match k {
            ObjectKey::Identifier(id) => id.as_str().to_string(),
            ObjectKey::Expression(e) => match self.eval(e)? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(EvalError::msg(format!(
                        "object key must be a string, got {}",
                        type_name(&other)
                    )))
                }
            },
            _ => return Err(EvalError::msg("unsupported object key")),
        })
    }

    /// A conditional's condition.
    fn condition(&self, e: &Expression) -> R<bool> {
        let cond = self.eval(e)?;
        to_bool(&cond).map_err(|m| EvalError::msg(format!("condition: {m}")))
    }

    fn eval_inner(&self, e: &Expression) -> R<Value> {
        match e {
            Expression::Null => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b)),
            Expression::Number(n) => Ok(Value::Number(*n)),
            Expression::String(s) => Ok(Value::String(s.clone())),
            Expression::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut weight = 0;
                for i in items {
                    let v = self.eval(i)?;
                    weight += value_weight(&v, MAX_VALUE_WEIGHT);
                    check_weight(weight)?;
                    out.push(v);
                }
                Ok(Value::Array(out))
            }
            Expression::Object(obj) => {
                let mut out = Map::new();
                let mut weight = 0;
                for (k, v) in obj {
                    let key = self.object_key(k)?;
                    let v = self.eval(v)?;
                    weight += value_weight(&v, MAX_VALUE_WEIGHT) + key.len() as u64;
                    check_weight(weight)?;
                    out.insert(key, v);
                }
                Ok(Value::Object(out))
            }
            Expression::TemplateExpr(t) => self.eval_template_expr(t),
            Expression::Variable(v) => self.root_var(v.as_str()),
            Expression::Traversal(t) => self.eval_traversal(t),
            Expression::FuncCall(f) => self.eval_call(f),
            Expression::Parenthesis(inner) => self.eval(inner),
            Expression::Conditional(c) => {
                if self.condition(&c.cond_expr)? {
                    self.eval(&c.true_expr)
                } else {
                    self.eval(&c.false_expr)
                }
            }
            Expression::Operation(op) => self.eval_op(op),
            Expression::ForExpr(f) => self.eval_for(f),
            other => Err(EvalError::msg(format!("unsupported expression: {other:?}"))),
        }
    }

    fn eval_template_expr(&self, t: &TemplateExpr) -> R<Value> {
        self.eval_template_value(&parse_template_expr(t)?)
    }

    /// Evaluate a template, unwrapping a lone interpolation (`"${var.list}"` yields the list).
    pub fn eval_template_value(&self, template: &Template) -> R<Value> {
        let elems = template.elements();
        if let [Element::Interpolation(i)] = elems {
            return self.eval(&i.expr);
        }
        let mut out = String::new();
        self.render(&mut out, template, Strip::None, Strip::None)?;
        Ok(Value::String(out))
    }

    fn render(&self, out: &mut String, t: &Template, prev: Strip, next: Strip) -> R<()> {
        let elems = t.elements();
        let len = elems.len();
        for (i, el) in elems.iter().enumerate() {
            let p = if i == 0 {
                prev
            } else {
                elem_strip(&elems[i - 1])
            };
            let n = if i + 1 == len {
                next
            } else {
                elem_strip(&elems[i + 1])
            };
            match el {
                Element::Literal(l) => out.push_str(strip_literal(l, p, n)),
                Element::Interpolation(interp) => {
                    let v = self.eval(&interp.expr)?;
                    out.push_str(&template_string(&v)?);
                    check_weight(out.len() as u64)?;
                }
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(d) => {
                        let c = to_bool(&self.eval(&d.cond_expr)?)
                            .map_err(|m| EvalError::msg(format!("%{{ if }} condition: {m}")))?;
                        if c {
                            let nx = if d.false_template.is_some() {
                                d.else_strip
                            } else {
                                d.endif_strip
                            };
                            self.render(out, &d.true_template, d.if_strip, nx)?;
                        } else if let Some(f) = &d.false_template {
                            self.render(out, f, d.else_strip, d.endif_strip)?;
                        }
                    }
                    Directive::For(d) => {
                        let coll = self.eval(&d.collection_expr)?;
                        for (k, v) in iterate(&coll)? {
                            let mut s = self.child();
                            if let Some(kv) = &d.key_var {
                                s.bind(kv.as_str(), k);
                            }
                            s.bind(d.value_var.as_str(), v);
                            s.render(out, &d.template, d.for_strip, d.endfor_strip)?;
                            check_weight(out.len() as u64)?;
                        }
                    }
                },
            }
        }
        Ok(())
    }

    fn eval_traversal(&self, t: &Traversal) -> R<Value> {
        let ops = &t.operators;
        // Packer roots with lazy members
        if let Expression::Variable(root) = &t.expr {
            if self.lookup(root.as_str()).is_none() && !self.template_only {
                if let Some(TraversalOperator::GetAttr(name)) = ops.first() {
                    match root.as_str() {
                        "var" => return self.apply_ops(self.g.var(name.as_str())?, &ops[1..]),
                        "local" => return self.apply_ops(self.g.local(name.as_str())?, &ops[1..]),
                        "data" => {
                            return Err(if self.g.data_blocks.contains(name.as_str()) {
                                EvalError::Reported
                            } else {
                                EvalError::msg(format!(
                                    "not supported: data source \"{}\" (kiln does not run Packer data sources)",
                                    name.as_str()
                                ))
                            })
                        }
                        _ => {}
                    }
                }
            }
        }
        let base = self.eval(&t.expr)?;
        self.apply_ops(base, ops)
    }

    fn apply_ops(&self, mut v: Value, ops: &[TraversalOperator]) -> R<Value> {
        for (i, op) in ops.iter().enumerate() {
            match op {
                TraversalOperator::GetAttr(name) => v = get_attr(&v, name.as_str())?,
                TraversalOperator::Index(e) => {
                    let idx = self.eval(e)?;
                    v = index(&v, &idx)?;
                }
                TraversalOperator::LegacyIndex(n) => {
                    v = index(&v, &Value::Number(Number::from(*n)))?
                }
                TraversalOperator::FullSplat | TraversalOperator::AttrSplat => {
                    let items = match v {
                        Value::Array(a) => a,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    let rest = &ops[i + 1..];
                    let (now, later) = if matches!(op, TraversalOperator::AttrSplat) {
                        let n = rest
                            .iter()
                            .take_while(|o| matches!(o, TraversalOperator::GetAttr(_)))
                            .count();
                        (&rest[..n], &rest[n..])
                    } else {
                        (rest, &rest[rest.len()..])
                    };
                    let mut out = Vec::with_capacity(items.len());
                    for it in items {
                        out.push(self.apply_ops(it, now)?);
                    }
                    return self.apply_ops(Value::Array(out), later);
                }
            }
        }
        Ok(v)
    }

    fn eval_call(&self, f: &FuncCall) -> R<Value> {
        let name = f.name.name.as_str();
        if !f.name.namespace.is_empty() {
            return Err(EvalError::msg(format!(
                "not supported: namespaced function {}::{name}",
                f.name
                    .namespace
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join("::")
            )));
        }
        match name {
            "can" => {
                if f.args.len() != 1 {
                    return Err(EvalError::msg("can() takes exactly one argument"));
                }
                return Ok(Value::Bool(self.eval(&f.args[0]).is_ok()));
            }
            "try" => {
                if f.args.is_empty() {
                    return Err(EvalError::msg("try() needs at least one argument"));
                }
                let mut last = EvalError::msg("no argument of try() could be evaluated");
                for a in &f.args {
                    match self.eval(a) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = e,
                    }
                }
                return Err(try_failed(last));
            }
            _ => {}
        }
        let mut args = Vec::with_capacity(f.args.len());
        for a in &f.args {
            args.push(self.eval(a)?);
        }
        self.apply_call(name, f.expand_final, args)
    }

    /// Call function `name` on evaluated arguments (`expand_final`: the last one is a list
    /// spread with `...`).
    fn apply_call(&self, name: &str, expand_final: bool, mut args: Vec<Value>) -> R<Value> {
        if expand_final {
            match args.pop() {
                Some(Value::Array(list)) => args.extend(list),
                Some(other) => {
                    return Err(EvalError::msg(format!(
                        "the last argument of {name}(…) with `...` must be a list, got {}",
                        type_name(&other)
                    )))
                }
                None => {}
            }
        }
        if name == "templatefile" {
            return self.templatefile(args);
        }
        if name == "env" && self.g.func.allow_env && args.len() == 1 {
            if let Value::String(k) = &args[0] {
                let v = self
                    .g
                    .env
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                return Ok(Value::String(v));
            }
        }
        let ctx = &self.g.func;
        let v = functions::call(name, args, ctx).map_err(|e| EvalError::msg(e.to_string()))?;
        check_weight(value_weight(&v, MAX_VALUE_WEIGHT)).map_err(|e| match e {
            EvalError::Msg(m) => EvalError::msg(format!("{name}(): {m}")),
            r => r,
        })?;
        Ok(v)
    }

    fn templatefile(&self, args: Vec<Value>) -> R<Value> {
        if args.len() != 2 {
            return Err(EvalError::msg(format!(
                "templatefile() takes 2 arguments (path, vars), got {}",
                args.len()
            )));
        }
        let path = match &args[0] {
            Value::String(s) => s.clone(),
            other => {
                return Err(EvalError::msg(format!(
                    "templatefile(): path must be a string, got {}",
                    type_name(other)
                )))
            }
        };
        let vars = match &args[1] {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(EvalError::msg(format!(
                    "templatefile(): vars must be an object, got {}",
                    type_name(other)
                )))
            }
        };
        let full = if std::path::Path::new(&path).is_absolute() {
            PathBuf::from(&path)
        } else {
            self.g.cwd.join(&path)
        };
        let depth = self.g.template_depth.get();
        if depth >= MAX_TEMPLATEFILE_DEPTH {
            return Err(EvalError::msg(format!(
                "templatefile(\"{path}\"): templatefile calls are nested more than {MAX_TEMPLATEFILE_DEPTH} deep (does the template include itself?) {}",
                limit_hint()
            )));
        }
        let bytes =
            functions::read_file_capped("templatefile", &full.to_string_lossy(), &self.g.func)
                .map_err(|e| EvalError::msg(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            EvalError::msg(format!("templatefile(): \"{path}\" is not valid UTF-8"))
        })?;
        let template = Template::from_str(&text).map_err(|e| {
            EvalError::msg(format!(
                "templatefile(): \"{path}\" is not a valid template: {}",
                first_line(&e.to_string())
            ))
        })?;
        let mut s = Scope {
            g: self.g,
            parent: None,
            names: Vec::new(),
            template_only: true,
        };
        for (k, v) in vars {
            s.bind(k, v);
        }
        let mut out = String::new();
        self.g.template_depth.set(depth + 1);
        let r = s.render(&mut out, &template, Strip::None, Strip::None);
        self.g.template_depth.set(depth);
        r.map_err(|e| match e {
            EvalError::Msg(m) => EvalError::msg(format!("templatefile(\"{path}\"): {m}")),
            r => r,
        })?;
        Ok(Value::String(out))
    }

    fn eval_op(&self, op: &Operation) -> R<Value> {
        match op {
            Operation::Unary(u) => {
                let v = self.eval(&u.expr)?;
                match u.operator {
                    UnaryOperator::Neg => Ok(num_value(-to_f64(&v)?, is_int(&v))),
                    UnaryOperator::Not => Ok(Value::Bool(!to_bool(&v).map_err(EvalError::Msg)?)),
                }
            }
            Operation::Binary(b) => {
                use BinaryOperator::*;
                // short-circuit logic
                if matches!(b.operator, And | Or) {
                    let l = to_bool(&self.eval(&b.lhs_expr)?).map_err(EvalError::Msg)?;
                    if b.operator == And && !l {
                        return Ok(Value::Bool(false));
                    }
                    if b.operator == Or && l {
                        return Ok(Value::Bool(true));
                    }
                    return Ok(Value::Bool(
                        to_bool(&self.eval(&b.rhs_expr)?).map_err(EvalError::Msg)?,
                    ));
                }
                let l = self.eval(&b.lhs_expr)?;
                let r = self.eval(&b.rhs_expr)?;
                match b.operator {
                    Eq => Ok(Value::Bool(values_equal(&l, &r))),
                    NotEq => Ok(Value::Bool(!values_equal(&l, &r))),
                    Less => Ok(Value::Bool(to_f64(&l)? < to_f64(&r)?)),
                    LessEq => Ok(Value::Bool(to_f64(&l)? <= to_f64(&r)?)),
                    Greater => Ok(Value::Bool(to_f64(&l)? > to_f64(&r)?)),
                    GreaterEq => Ok(Value::Bool(to_f64(&l)? >= to_f64(&r)?)),
                    Plus | Minus | Mul | Div | Mod => {
                        let (a, c) = (to_f64(&l)?, to_f64(&r)?);
                        let ints = is_int(&l) && is_int(&r);
                        let res = match b.operator {
                            Plus => a + c,
                            Minus => a - c,
                            Mul => a * c,
                            Div => {
                                if c == 0.0 {
                                    return Err(EvalError::msg("division by zero"));
                                }
                                a / c
                            }
                            _ => {
                                if c == 0.0 {
                                    return Err(EvalError::msg("modulo by zero"));
                                }
                                a % c
                            }
                        };
                        Ok(num_value(res, ints && res.fract() == 0.0))
                    }
                    And | Or => unreachable_logic(),
                }
            }
        }
    }

    fn eval_for(&self, f: &ForExpr) -> R<Value> {
        let coll = self.eval(&f.collection_expr)?;
        let items = iterate(&coll)?;
        let mut weight = 0;
        if let Some(key_expr) = &f.key_expr {
            let mut out = Map::new();
            let mut groups: IndexMap<String, Vec<Value>> = IndexMap::new();
            for (k, v) in items {
                let mut s = self.child();
                if let Some(kv) = &f.key_var {
                    s.bind(kv.as_str(), k);
                }
                s.bind(f.value_var.as_str(), v);
                if let Some(c) = &f.cond_expr {
                    if !to_bool(&s.eval(c)?).map_err(EvalError::Msg)? {
                        continue;
                    }
                }
                let key = match s.eval(key_expr)? {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(EvalError::msg(format!(
                            "for-expression key must be a string, got {}",
                            type_name(&other)
                        )))
                    }
                };
                let val = s.eval(&f.value_expr)?;
                weight += value_weight(&val, MAX_VALUE_WEIGHT) + key.len() as u64;
                check_weight(weight)?;
                if f.grouping {
                    groups.entry(key).or_default().push(val);
                } else {
                    if out.contains_key(&key) {
                        return Err(EvalError::msg(format!(
                            "duplicate object key \"{key}\" in for-expression (use `...` after the value to group)"
                        )));
                    }
                    out.insert(key, val);
                }
            }
            if f.grouping {
                for (k, v) in groups {
                    out.insert(k, Value::Array(v));
                }
            }
            Ok(Value::Object(out))
        } else {
            let mut out = Vec::new();
            for (k, v) in items {
                let mut s = self.child();
                if let Some(kv) = &f.key_var {
                    s.bind(kv.as_str(), k);
                }
                s.bind(f.value_var.as_str(), v);
                if let Some(c) = &f.cond_expr {
                    if !to_bool(&s.eval(c)?).map_err(EvalError::Msg)? {
                        continue;
                    }
                }
                let val = s.eval(&f.value_expr)?;
                weight += value_weight(&val, MAX_VALUE_WEIGHT);
                check_weight(weight)?;
                out.push(val);
            }
            Ok(Value::Array(out))
        }
    }
}

/// `try()` when no argument could be evaluated.
fn try_failed(last: EvalError) -> EvalError {
    match last {
        EvalError::Msg(m) => EvalError::msg(format!(
            "no argument of try() could be evaluated; the last failed with: {m}"
        )),
        r => r,
    }
}

fn unreachable_directive() {
    debug_assert!(false, "templates with directives are evaluated as leaves");
}

/// A template expression parsed into its elements.
fn parse_template_expr(t: &TemplateExpr) -> R<Template> {
    match t {
        TemplateExpr::QuotedString(_) => Template::from_expr(t).map_err(|e| {
            EvalError::msg(format!("invalid template: {}", first_line(&e.to_string())))
        }),
        TemplateExpr::Heredoc(h) => parse_heredoc(h),
    }
}

fn unreachable_logic() -> R<Value> {
    Err(EvalError::msg("internal: logical operator"))
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

fn parse_heredoc(h: &Heredoc) -> R<Template> {
    let text = if h.strip == HeredocStripMode::Indent {
        dedent(&h.template)
    } else {
        h.template.clone()
    };
    Template::from_str(&text).map_err(|e| {
        EvalError::msg(format!(
            "invalid heredoc template: {}",
            first_line(&e.to_string())
        ))
    })
}

/// `<<-` heredocs: remove the smallest common leading whitespace of non-blank lines.
pub fn dedent(s: &str) -> String {
    let min = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    if min == 0 {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let cut = line
            .len()
            .min(min)
            .min(line.len() - line.trim_start_matches([' ', '\t']).len());
        out.push_str(&line[cut..]);
    }
    out
}

fn elem_strip(e: &Element) -> Strip {
    match e {
        Element::Literal(_) => Strip::None,
        Element::Interpolation(i) => i.strip,
        Element::Directive(d) => {
            let (start, end) = match d.as_ref() {
                Directive::If(d) => (d.if_strip, d.endif_strip),
                Directive::For(d) => (d.for_strip, d.endfor_strip),
            };
            Strip::from((start.strip_start(), end.strip_end()))
        }
    }
}

fn strip_literal(mut literal: &str, prev: Strip, next: Strip) -> &str {
    fn is_space(c: char) -> bool {
        c.is_whitespace() && c != '\r' && c != '\n'
    }
    if prev.strip_end() {
        let s = literal.trim_start_matches(is_space);
        literal = s
            .strip_prefix("\r\n")
            .or_else(|| s.strip_prefix('\n'))
            .unwrap_or(s);
    }
    if next.strip_start() {
        let s = literal.trim_end_matches(is_space);
        literal = s
            .strip_suffix("\r\n")
            .or_else(|| s.strip_suffix('\n'))
            .unwrap_or(s);
    }
    literal
}

/// (key, value) pairs of a list (index keys) or a map (string keys).
pub fn iterate(v: &Value) -> R<Vec<(Value, Value)>> {
    match v {
        Value::Array(a) => Ok(a
            .iter()
            .enumerate()
            .map(|(i, x)| (Value::Number(Number::from(i as u64)), x.clone()))
            .collect()),
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, x)| (Value::String(k.clone()), x.clone()))
            .collect()),
        Value::Null => Err(EvalError::msg("cannot iterate over a null value")),
        other => Err(EvalError::msg(format!(
            "cannot iterate over a {}: a list, set or map is required",
            type_name(other)
        ))),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map/object",
    }
}

/// A value inside `"…${x}…"`.
pub fn template_string(v: &Value) -> R<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(EvalError::msg(
            "invalid template interpolation value: the expression result is null",
        )),
        other => Err(EvalError::msg(format!(
            "cannot include a {} in a string template: a string is required",
            type_name(other)
        ))),
    }
}

fn get_attr(v: &Value, name: &str) -> R<Value> {
    match v {
        Value::Object(m) => match m.get(name) {
            Some(x) => Ok(x.clone()),
            None => {
                let mut msg = format!("this object does not have an attribute named \"{name}\"");
                if let Some(s) = suggest(name, m.keys().map(|k| k.as_str())) {
                    msg.push_str(&format!(" (did you mean \"{s}\"?)"));
                }
                Err(EvalError::msg(msg))
            }
        },
        Value::Null => Err(EvalError::msg(format!(
            "attempt to get attribute \"{name}\" from a null value"
        ))),
        other => Err(EvalError::msg(format!(
            "cannot get attribute \"{name}\" of a {}",
            type_name(other)
        ))),
    }
}

fn index(v: &Value, idx: &Value) -> R<Value> {
    match v {
        Value::Array(a) => {
            let i = to_f64(idx)?;
            if i < 0.0 || i.fract() != 0.0 || i as usize >= a.len() {
                return Err(EvalError::msg(format!(
                    "invalid index {i}: the list has {} element(s)",
                    a.len()
                )));
            }
            Ok(a[i as usize].clone())
        }
        Value::Object(m) => {
            let k = template_string(idx)?;
            m.get(&k).cloned().ok_or_else(|| {
                let mut msg =
                    format!("the given key \"{k}\" does not identify an element in this map");
                if let Some(s) = suggest(&k, m.keys().map(|k| k.as_str())) {
                    msg.push_str(&format!(" (did you mean \"{s}\"?)"));
                }
                EvalError::msg(msg)
            })
        }
        Value::Null => Err(EvalError::msg("cannot index a null value")),
        other => Err(EvalError::msg(format!(
            "cannot index a {}",
            type_name(other)
        ))),
    }
}

pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn is_int(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::String(s) => s.trim().parse::<i64>().is_ok(),
        _ => false,
    }
}

/// Number conversion as cty does it: numbers, and strings holding a number.
pub fn to_f64(v: &Value) -> R<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| EvalError::msg("invalid number")),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| EvalError::msg(format!("a number is required, got the string \"{s}\""))),
        other => Err(EvalError::msg(format!(
            "a number is required, got {}",
            type_name(other)
        ))),
    }
}

fn num_value(f: f64, int: bool) -> Value {
    if int && f.abs() < 9.0e15 {
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Bool conversion as cty does it: bools and the strings "true"/"false".
pub fn to_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        Value::Null => Err("a bool is required, got null".into()),
        other => Err(format!("a bool is required, got {}", type_name(other))),
    }
}

#[cfg(test)]
mod limit_tests {
    //! Hostile templates (issue 11): each limit is an error at file:line, never a crash, an
    //! allocation abort or a hang. The deep cases run on their own thread with a large stack so
    //! that, without the limit, the test fails by its assertion instead of killing the harness.

    use crate::model::{ConfigError, LoadOptions, Loaded};

    fn load_text(files: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).expect("write");
        }
        let opts = LoadOptions {
            cwd: Some(d.path().to_path_buf()),
            now: Some(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
            ..LoadOptions::isolated()
        };
        crate::load(d.path(), &opts)
    }

    /// Load on a thread with `stack` bytes of stack; the one-line errors.
    fn errors_on(stack: usize, files: Vec<(String, String)>) -> Vec<String> {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                let refs: Vec<(&str, &str)> = files
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                match load_text(&refs) {
                    Ok(_) => Vec::new(),
                    Err(e) => e.errors.iter().map(|d| d.one_line()).collect(),
                }
            })
            .expect("spawn")
            .join()
            .expect("the loader must not panic")
    }

    fn errors(text: &str) -> Vec<String> {
        errors_on(256 << 20, vec![("t.pkr.hcl".to_string(), text.to_string())])
    }

    /// `n` locals, each using the next one: evaluating `l0` goes `n` deep.
    fn chain(n: usize) -> String {
        let mut t = String::from("locals {\n");
        for i in 0..n - 1 {
            t.push_str(&format!("  l{i} = local.l{}\n", i + 1));
        }
        t.push_str(&format!("  l{} = \"x\"\n}}\n", n - 1));
        t
    }

    #[test]
    fn chained_locals_8000_are_an_error_not_a_stack_overflow() {
        let errs = errors(&chain(8000));
        assert_eq!(
            errs.len(),
            1,
            "one error, not one per chain of 64: {errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("t.pkr.hcl:")
                && e.contains("locals depend on each other more than 64 deep")),
            "{errs:?}"
        );
    }

    #[test]
    fn deepest_allowed_local_chain_fits_a_2_mib_stack() {
        // MAX_LOCAL_DEPTH locals in a chain: evaluates on the test harness's stack size
        let errs = errors_on(
            2 << 20,
            vec![("t.pkr.hcl".into(), chain(super::MAX_LOCAL_DEPTH))],
        );
        assert!(errs.is_empty(), "{errs:?}");
        let errs = errors_on(
            2 << 20,
            vec![("t.pkr.hcl".into(), chain(super::MAX_LOCAL_DEPTH + 1))],
        );
        assert!(errs.iter().any(|e| e.contains("deep")), "{errs:?}");
    }

    #[test]
    fn eval_depth_limit_is_reached_safely_on_a_2_mib_stack() {
        // the parser allows 64 nested levels per expression; 100 chained locals of 30 nested
        // calls each go ~3 000 deep, over MAX_EVAL_DEPTH, on the harness's stack size
        let mut e = String::from("local.l{next}");
        for _ in 0..30 {
            e = format!("upper({e})");
        }
        let mut t = String::from("locals {\n");
        for i in 0..99 {
            t.push_str(&format!(
                "  l{i} = {}\n",
                e.replace("{next}", &(i + 1).to_string())
            ));
        }
        t.push_str("  l99 = \"x\"\n}\n");
        let errs = errors_on(2 << 20, vec![("t.pkr.hcl".into(), t)]);
        assert!(
            errs.iter()
                .any(|x| x.contains("t.pkr.hcl:") && x.contains("nested more than 128 deep")),
            "{errs:?}"
        );
    }

    #[test]
    fn templatefile_including_itself_is_an_error() {
        let errs = errors_on(
            256 << 20,
            vec![
                (
                    "t.pkr.hcl".into(),
                    "locals {\n  a = templatefile(\"self.tpl\", {})\n}\n".into(),
                ),
                (
                    "self.tpl".into(),
                    "x${templatefile(\"self.tpl\", {})}".into(),
                ),
            ],
        );
        assert!(
            errs.iter().any(|e| e.contains("t.pkr.hcl:2:")
                && e.contains("nested more than 16 deep (does the template include itself?)")),
            "{errs:?}"
        );
    }

    #[test]
    fn huge_widths_and_repeats_are_errors_not_allocation_aborts() {
        for (expr, want) in [
            ("format(\"%99999999999d\", 1)", "width 99999999999"),
            ("format(\"%.99999999999f\", 1)", "precision 99999999999"),
            ("indent(99999999999, \"a\\nb\")", "limit"),
            ("formatlist(\"%1000000d\", range(1000))", "limit"),
            ("join(format(\"%1000000s\", \"\"), range(1000))", "limit"),
            (
                "replace(format(\"%1000s\", \"\"), \" \", format(\"%1000000s\", \"\"))",
                "limit",
            ),
            ("substr(\"abc\", 1, 9223372036854775807)", ""),
            ("setproduct(range(1000), range(1000), range(1000))", "limit"),
            (
                "timeadd(\"2026-01-01T00:00:00Z\", \"99999999999999999h\")",
                "out of range",
            ),
            ("bcrypt(\"x\", 31)", "limit of 14"),
            (
                "[for a in range(1000): [for b in range(1000): [for c in range(1000): c]]]",
                "limit",
            ),
        ] {
            let errs = errors(&format!("locals {{\n  a = {expr}\n}}\n"));
            if want.is_empty() {
                assert!(errs.is_empty(), "{expr}: {errs:?}");
            } else {
                assert!(
                    errs.iter()
                        .any(|e| e.contains("t.pkr.hcl:2:") && e.contains(want)),
                    "{expr}: {errs:?}"
                );
            }
        }
    }

    #[test]
    fn doubling_strings_and_lists_hit_the_value_limit() {
        let mut t =
            String::from("locals {\n  s0 = \"0123456789abcdef\"\n  l0 = [\"0123456789abcdef\"]\n");
        for i in 1..64 {
            t.push_str(&format!(
                "  s{i} = \"${{local.s{p}}}${{local.s{p}}}\"\n  l{i} = [local.l{p}, local.l{p}]\n",
                p = i - 1
            ));
        }
        t.push_str("}\n");
        let errs = errors(&t);
        assert!(
            errs.iter().any(|e| e.contains("larger than 128 MiB")),
            "{errs:?}"
        );
    }

    #[test]
    fn file_reads_only_regular_files() {
        let errs = errors("locals {\n  a = file(\"/dev/urandom\")\n}\n");
        assert!(
            errs.iter()
                .any(|e| e.contains("t.pkr.hcl:2:") && e.contains("not a regular file")),
            "{errs:?}"
        );
        let errs = errors("locals {\n  a = filesha256(\"/dev/zero\")\n}\n");
        assert!(
            errs.iter().any(|e| e.contains("not a regular file")),
            "{errs:?}"
        );
    }

    #[test]
    fn file_over_the_size_limit_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let big = d.path().join("big");
        let f = std::fs::File::create(&big).expect("create");
        // sparse: no disk space used
        f.set_len(crate::functions::MAX_FILE_BYTES + 1)
            .expect("set_len");
        let errs = errors(&format!(
            "locals {{\n  a = file(\"{}\")\n}}\n",
            big.display()
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("t.pkr.hcl:2:") && e.contains("more than kiln's limit")),
            "{errs:?}"
        );
    }
}

#[cfg(test)]
mod taint_tests {
    //! Sensitive values (issue 11): never in an error, and what derives from them is masked.

    use crate::model::{LoadOptions, Loaded};

    const SECRET: &str = "Abc123Secret";

    fn load(files: &[(&str, &str)], vars: &[(&str, &str)]) -> Result<Loaded, Vec<String>> {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).expect("write");
        }
        let opts = LoadOptions {
            cwd: Some(d.path().to_path_buf()),
            vars: vars
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            now: Some(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
            ..LoadOptions::isolated()
        };
        crate::load(d.path(), &opts).map_err(|e| {
            e.errors
                .iter()
                .map(|d| format!("{} {:?}", d.one_line(), d.help))
                .collect()
        })
    }

    const DECL: &str = "variable \"pw\" {\n  type      = number\n  sensitive = true\n}\n";

    #[test]
    fn a_sensitive_value_of_the_wrong_type_is_not_echoed() {
        // -var
        let errs = load(&[("t.pkr.hcl", DECL)], &[("pw", SECRET)]).expect_err("error");
        assert!(!errs.is_empty());
        assert!(errs.iter().all(|e| !e.contains(SECRET)), "{errs:?}");
        // a variables file: the error points at the declaration, not at the secret's line
        let errs = load(
            &[
                ("t.pkr.hcl", DECL),
                ("x.auto.pkrvars.hcl", &format!("pw = \"{SECRET}\"\n")),
            ],
            &[],
        )
        .expect_err("error");
        assert!(
            errs.iter()
                .any(|e| e.contains("t.pkr.hcl:1:") && e.contains("x.auto.pkrvars.hcl:1")),
            "{errs:?}"
        );
        assert!(errs.iter().all(|e| !e.contains(SECRET)), "{errs:?}");
    }

    #[test]
    fn an_evaluation_error_quoting_a_sensitive_value_masks_it() {
        let t = "variable \"pw\" {\n  default   = \"Abc123Secret\"\n  sensitive = true\n}\nlocals {\n  n = var.pw + 1\n}\n";
        let errs = load(&[("t.pkr.hcl", t)], &[]).expect_err("error");
        assert!(errs.iter().any(|e| e.contains("<sensitive>")), "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains(SECRET)), "{errs:?}");
    }

    #[test]
    fn locals_and_settings_derived_from_sensitive_variables_are_masked_in_inspect() {
        let t = format!(
            r#"variable "pw" {{
  default   = "{SECRET}"
  sensitive = true
}}
variable "user" {{
  default = "ubuntu"
}}
locals {{
  plain   = "${{var.user}}-x"
  wrapped = "pass=${{var.pw}}"
  encoded = base64encode(var.pw)
  upper2  = upper(local.encoded)
  all     = var
}}
source "proxmox-iso" "u" {{
  proxmox_url          = "https://pve.example:8006/api2/json"
  username             = "root@pam"
  password             = "PvePassword77"
  node                 = "pve"
  ssh_username         = "ubuntu"
  ssh_bastion_host     = "jump"
  ssh_bastion_username = "jumper"
  ssh_bastion_password = "BastionPass99"
  template_description = sha256(var.pw)
  boot_command         = ["<enter>", "echo ${{var.pw}}<enter>"]
  boot_iso {{
    iso_file = "local:iso/ubuntu.iso"
  }}
}}
build {{
  sources = ["source.proxmox-iso.u"]
}}
"#
        );
        let l = load(&[("t.pkr.hcl", &t)], &[]).expect("loads");
        let out = crate::inspect::render(&l.plan);
        let encoded = "QWJjMTIzU2VjcmV0"; // base64("Abc123Secret")
        for leaked in [SECRET, encoded, &encoded.to_uppercase(), "BastionPass99"] {
            assert!(!out.contains(leaked), "{leaked} in:\n{out}");
        }
        let sha = crate::functions::call(
            "sha256",
            vec![hcl::Value::String(SECRET.into())],
            &crate::functions::FuncContext {
                cwd: std::env::temp_dir(),
                allow_env: false,
                now: time::OffsetDateTime::UNIX_EPOCH,
            },
        )
        .expect("sha256");
        let sha = sha.as_str().expect("string").to_string();
        assert!(!out.contains(&sha), "sha256 of the secret in:\n{out}");
        assert!(out.contains("local.plain = \"ubuntu-x\""), "{out}");
        for l in ["wrapped", "encoded", "upper2", "all"] {
            assert!(
                out.contains(&format!("local.{l} = <sensitive>")),
                "{l}:\n{out}"
            );
        }
        // "<enter>" next to the password in the boot command is no secret
        assert!(out.contains("<enter>"), "{out}");
        assert!(l
            .plan
            .sensitive_values
            .contains(&"BastionPass99".to_string()));
        assert!(l.plan.sensitive_values.contains(&sha));
    }
}
