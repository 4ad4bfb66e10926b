//! Loading: files → parsed bodies → variables → locals → sources → builds → BuildPlan.

pub(crate) mod body;
pub(crate) mod ebody;
pub(crate) mod eval;
pub(crate) mod packer;
pub(crate) mod packer_versions;
pub(crate) mod prov;
pub(crate) mod provisioners;
pub(crate) mod proxmox;
#[cfg(test)]
mod tests;
pub(crate) mod types;

use crate::diag::{ConfigError, Diag, Location, SourceFile};
use crate::functions::FuncContext;
use crate::model::*;
use body::{parse_file, RawAttr, RawBlock, RawBody, RawItem};
use ebody::{eval_body, report, EBlock};
use eval::{EvalError, Globals, LocalDef, Map, Scope};
use hcl::Value;
use indexmap::IndexMap;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use types::Type;

/// The Packer version kiln reports as `packer.version`.
pub const PACKER_COMPAT_VERSION: &str = crate::version::PACKER_CORE_VERSION;

/// Load a template directory (all `*.pkr.hcl` + `*.auto.pkrvars.hcl`) or a single file.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut l = Loader {
        opts,
        var_file_failed: false,
        errors: Vec::new(),
        warnings: Vec::new(),
        secrets: Vec::new(),
    };
    let plan = l.run(path);
    // errors never print a sensitive value, whatever message quoted it
    for d in l.errors.iter_mut().chain(l.warnings.iter_mut()) {
        for s in &l.secrets {
            d.message = d.message.replace(s.as_str(), "<sensitive>");
            if let Some(h) = &mut d.help {
                *h = h.replace(s.as_str(), "<sensitive>");
            }
        }
    }
    // the same source used by several builds repeats its warnings: keep each once
    let mut seen = HashSet::new();
    l.warnings.retain(|w| seen.insert(w.one_line()));
    if l.errors.is_empty() {
        if let Some(plan) = plan {
            return Ok(Loaded {
                plan,
                warnings: l.warnings,
            });
        }
    }
    if l.errors.is_empty() {
        l.errors
            .push(Diag::error("the template could not be loaded"));
    }
    Err(ConfigError {
        errors: l.errors,
        warnings: l.warnings,
    })
}

struct Loader<'o> {
    opts: &'o LoadOptions,
    var_file_failed: bool,
    errors: Vec<Diag>,
    warnings: Vec<Diag>,
    /// values of sensitive variables (as given and as converted), longest first: masked in
    /// every error and warning
    secrets: Vec<String>,
}

struct VarDecl {
    name: String,
    ty: Type,
    type_expr: String,
    description: Option<String>,
    sensitive: bool,
    block: RawBlock,
    value: Option<Value>,
    source: VarSource,
    /// where the final value came from (for conversion errors)
    value_at: Option<(Arc<SourceFile>, std::ops::Range<usize>)>,
}

impl VarDecl {
    /// The error for a value that does not convert to the declared type: at the value, or at
    /// the declaration when the value is sensitive (it is not shown) or came from the CLI/env.
    fn conversion_error(&self, m: &str) -> Diag {
        let msg = format!(
            "invalid value for variable \"{}\": {m} (type {})",
            self.name, self.type_expr
        );
        match &self.value_at {
            // a sensitive value is not shown: point at the declaration
            Some((f, s)) if self.sensitive => Diag::error(msg)
                .at(&self.block.file, Some(self.block.span.clone()))
                .with_help(format!(
                    "the (sensitive) value was set at {}",
                    loc_of(f, s).map(|l| l.to_string()).unwrap_or_default()
                )),
            Some((f, s)) => Diag::error(msg).at(f, Some(s.clone())),
            None => Diag::error(msg).at(&self.block.file, Some(self.block.span.clone())),
        }
    }

    fn info(&self) -> VariableInfo {
        VariableInfo {
            name: self.name.clone(),
            type_expr: self.type_expr.clone(),
            description: self.description.clone(),
            sensitive: self.sensitive,
            value: self.value.clone(),
            source: self.source,
            location: loc_of(&self.block.file, &self.block.span),
        }
    }
}

/// Result of "collect files".
struct Inputs {
    cwd: PathBuf,
    /// the template directory (`path.root`)
    root: PathBuf,
    templates: Vec<PathBuf>,
    /// `*.auto.pkrvars.{hcl,json}` of the template directory
    auto_vars: Vec<PathBuf>,
}

/// Result of "top-level structure": the blocks of all template files, by kind.
#[derive(Default)]
struct TopLevel {
    var_blocks: Vec<RawBlock>,
    /// `locals {}` attributes and `local "x" {}` blocks (with their `sensitive` flag)
    local_attrs: Vec<(RawAttr, bool)>,
    packer_blocks: Vec<RawBlock>,
    sources: IndexMap<(String, String), RawBlock>,
    builds: Vec<RawBlock>,
    data_blocks: Vec<RawBlock>,
}

/// What every evaluation sees: `path.*`, `packer.*`, the working directory and the clock.
struct EvalBase {
    path_obj: Value,
    packer_obj: Value,
    cwd: PathBuf,
    now: time::OffsetDateTime,
}

impl EvalBase {
    fn new(opts: &LoadOptions, inputs: &Inputs) -> EvalBase {
        let mut path_obj = Map::new();
        path_obj.insert(
            "root".into(),
            Value::String(inputs.root.display().to_string()),
        );
        path_obj.insert(
            "cwd".into(),
            Value::String(inputs.cwd.display().to_string()),
        );
        let mut packer_obj = Map::new();
        packer_obj.insert(
            "version".into(),
            Value::String(PACKER_COMPAT_VERSION.into()),
        );
        EvalBase {
            path_obj: Value::Object(path_obj),
            packer_obj: Value::Object(packer_obj),
            cwd: inputs.cwd.clone(),
            now: opts.now.unwrap_or_else(time::OffsetDateTime::now_utc),
        }
    }

    /// Globals without variables; `env()` only where `allow_env` (variable defaults).
    fn globals(&self, allow_env: bool) -> Globals {
        Globals::new(
            FuncContext {
                cwd: self.cwd.clone(),
                allow_env,
                now: self.now,
            },
            self.path_obj.clone(),
            self.packer_obj.clone(),
        )
    }
}

/// Result of "locals".
#[derive(Default)]
struct Locals {
    infos: Vec<LocalInfo>,
    /// locals declared `sensitive = true` (not merely derived from a sensitive variable)
    declared_sensitive: HashSet<String>,
}

/// Every string a build log must mask, longest first: sensitive variables and declared
/// sensitive locals, sensitive settings, values derived from sensitive variables, and the
/// lines of the private key files.
fn sensitive_values(
    decls: &IndexMap<String, VarDecl>,
    locals: &Locals,
    runs: &[SourceRun],
    g: &Globals,
    inputs: &Inputs,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in decls.values().filter(|d| d.sensitive) {
        if let Some(v) = &d.value {
            collect_strings(v, &mut out);
        }
    }
    for li in locals
        .infos
        .iter()
        .filter(|l| locals.declared_sensitive.contains(&l.name))
    {
        if let Some(v) = &li.value {
            collect_strings(v, &mut out);
        }
    }
    for r in runs {
        out.extend(crate::model::keys::sensitive_settings(&r.config));
    }
    out.extend(g.derived_sensitive.borrow().iter().cloned());
    for r in runs {
        // the private key's content (a build log must never show it)
        if let Some(k) = &r.config.communicator.ssh_private_key_file {
            out.extend(private_key_lines(&inputs.root, k));
            out.extend(private_key_lines(&inputs.cwd, k));
        }
    }
    out.retain(|s| !s.is_empty());
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn display_name(p: &Path, cwd: &Path) -> String {
    match p.strip_prefix(cwd) {
        Ok(r) if !r.as_os_str().is_empty() => r.display().to_string(),
        _ => p.display().to_string(),
    }
}

fn loc_of(file: &Arc<SourceFile>, span: &std::ops::Range<usize>) -> Option<Location> {
    let (line, column) = file.line_col(span.start);
    Some(Location {
        file: PathBuf::from(&file.name),
        line,
        column,
    })
}

impl<'o> Loader<'o> {
    fn read(&mut self, p: &Path, cwd: &Path) -> Option<Arc<SourceFile>> {
        match std::fs::read_to_string(p) {
            Ok(t) => Some(SourceFile::new(p, display_name(p, cwd), t)),
            Err(e) => {
                self.errors
                    .push(Diag::error(format!("cannot read {}: {e}", p.display())));
                None
            }
        }
    }

    /// The loader's phases, in order; each one's result is passed on explicitly.
    fn run(&mut self, path: &Path) -> Option<BuildPlan> {
        let inputs = self.collect_files(path)?;
        let (mut files, bodies) = self.parse(&inputs);
        let top = self.top_level(&bodies);
        let base = EvalBase::new(self.opts, &inputs);

        // variables: declared, assigned (env, var files, -var), converted to their types
        let mut default_globals = base.globals(true);
        default_globals.env = self.opts.env.clone();
        let mut decls = self.declare_variables(&top.var_blocks, &default_globals);
        self.assign_env_vars(&mut decls);
        self.assign_var_files(&mut decls, &inputs, &mut files, &default_globals);
        self.assign_cli_vars(&mut decls);
        self.convert_variables(&mut decls);

        // globals for everything else: locals, the packer block, sources and builds
        let mut g = self.globals(&decls, &top.data_blocks, &base);
        self.check_validations(&decls, &g);
        let locals = self.evaluate_locals(&top.local_attrs, &mut g);
        let (required, pin_at) = packer::read_packer_blocks(
            &top.packer_blocks,
            &g,
            &mut self.errors,
            &mut self.warnings,
        );
        let (runs, other_runs) = self.evaluate_builds(&top, &g, (&required, pin_at.as_deref()));
        let sensitive_values = sensitive_values(&decls, &locals, &runs, &g, &inputs);
        Some(BuildPlan {
            runs,
            other_runs,
            variables: decls.values().map(VarDecl::info).collect(),
            locals: locals.infos,
            sensitive_values,
            required,
            root: inputs.root,
            files,
        })
    }

    /// Phase "collect files": the template files (and, for a directory, its auto-loaded
    /// variable files), sorted.
    fn collect_files(&mut self, path: &Path) -> Option<Inputs> {
        let cwd = match &self.opts.cwd {
            Some(c) => c.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            cwd.join(path)
        };
        let meta = match std::fs::metadata(&abs) {
            Ok(m) => m,
            Err(e) => {
                self.errors
                    .push(Diag::error(format!("cannot open {}: {e}", path.display())));
                return None;
            }
        };
        let (root, mut templates, mut auto_vars) = if meta.is_dir() {
            let (t, a) = self.collect_dir(path, &abs, &cwd)?;
            (path.to_path_buf(), t, a)
        } else {
            (
                self.collect_single(path, &abs)?,
                vec![abs.clone()],
                Vec::new(),
            )
        };
        templates.sort();
        auto_vars.sort();
        Some(Inputs {
            cwd,
            root,
            templates,
            auto_vars,
        })
    }

    /// The `*.pkr.hcl` and `*.auto.pkrvars.{hcl,json}` files of a directory.
    fn collect_dir(
        &mut self,
        path: &Path,
        abs: &Path,
        cwd: &Path,
    ) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
        let mut t = Vec::new();
        let mut a = Vec::new();
        let mut json = Vec::new();
        let rd = match std::fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) => {
                self.errors
                    .push(Diag::error(format!("cannot list {}: {e}", path.display())));
                return None;
            }
        };
        for ent in rd.flatten() {
            let p = ent.path();
            let name = ent.file_name().to_string_lossy().to_string();
            // follow symlinks, as Packer does
            if !std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
                continue;
            }
            if name.ends_with(".pkr.hcl") {
                t.push(p);
            } else if name.ends_with(".auto.pkrvars.hcl") || name.ends_with(".auto.pkrvars.json") {
                a.push(p);
            } else if name.ends_with(".pkr.json") {
                json.push(p);
            }
        }
        if !json.is_empty() {
            self.errors.push(Diag::error(format!(
                "{}: JSON templates are not supported yet; convert it with `packer hcl2_upgrade`",
                display_name(&json[0], cwd)
            )));
            return None;
        }
        if t.is_empty() {
            self.errors.push(Diag::error(format!(
                "{}: no *.pkr.hcl template files in this directory",
                path.display()
            )));
            return None;
        }
        Some((t, a))
    }

    /// A single template file: refuses JSON templates and variables files; returns the root
    /// (the file's directory).
    fn collect_single(&mut self, path: &Path, abs: &Path) -> Option<PathBuf> {
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.ends_with(".json") {
            self.errors.push(Diag::error(format!(
                "{}: JSON templates are not supported yet; convert it with `packer hcl2_upgrade`",
                path.display()
            )));
            return None;
        }
        if name.ends_with(".pkrvars.hcl") {
            self.errors.push(Diag::error(format!(
                "{}: this is a variables file; pass it with -var-file and give the template directory",
                path.display()
            )));
            return None;
        }
        Some(
            path.parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
                .unwrap_or_else(|| PathBuf::from(".")),
        )
    }

    /// Phase "parse": the files read (in order) and the bodies that parsed.
    fn parse(&mut self, inputs: &Inputs) -> (Vec<PathBuf>, Vec<RawBody>) {
        let mut files = Vec::new();
        let mut bodies = Vec::new();
        for p in &inputs.templates {
            let Some(f) = self.read(p, &inputs.cwd) else {
                continue;
            };
            files.push(p.clone());
            match parse_file(&f) {
                Ok(b) => bodies.push(b),
                Err(d) => self.errors.push(d),
            }
        }
        (files, bodies)
    }

    /// Phase "top-level structure": the blocks of every file, sorted by kind.
    fn top_level(&mut self, bodies: &[RawBody]) -> TopLevel {
        let mut top = TopLevel::default();
        for item in bodies.iter().flat_map(|b| &b.items) {
            match item {
                RawItem::Attr(a) => self.errors.push(
                    Diag::error(format!(
                        "unsupported argument \"{}\": an argument named \"{}\" is not expected at the top level of a template",
                        a.key, a.key
                    ))
                    .at(&a.file, Some(a.span.clone()))
                    .with_help("values for variables belong in a *.pkrvars.hcl file passed with -var-file"),
                ),
                RawItem::Block(b) => self.top_level_block(b, &mut top),
            }
        }
        top
    }

    fn top_level_block(&mut self, b: &RawBlock, top: &mut TopLevel) {
        match b.ident.as_str() {
            "variable" => {
                if b.labels.len() != 1 {
                    self.err_block(b, "a variable block needs exactly one label (its name)");
                } else if top.var_blocks.iter().any(|v| v.labels[0] == b.labels[0]) {
                    self.err_block(b, &format!("duplicate variable \"{}\"", b.labels[0]));
                } else {
                    top.var_blocks.push(b.clone());
                }
            }
            "variables" => {
                // legacy form: variables { name = default }
                for a in b.body.attrs() {
                    let mut inner = RawBody::default();
                    inner.items.push(RawItem::Attr(RawAttr {
                        key: "default".into(),
                        ..a.clone()
                    }));
                    top.var_blocks.push(RawBlock {
                        ident: "variable".into(),
                        labels: vec![a.key.clone()],
                        body: inner,
                        span: a.span.clone(),
                        file: a.file.clone(),
                    });
                }
            }
            "locals" => {
                for a in b.body.attrs() {
                    top.local_attrs.push((a.clone(), false));
                }
                for inner in b.body.blocks() {
                    self.err_block(inner, "blocks are not allowed inside locals {}");
                }
            }
            "local" => self.local_block(b, top),
            "packer" => top.packer_blocks.push(b.clone()),
            "source" => {
                if b.labels.len() != 2 {
                    self.err_block(
                        b,
                        "a source block needs two labels: source \"<type>\" \"<name>\"",
                    );
                    return;
                }
                let key = (b.labels[0].clone(), b.labels[1].clone());
                if top.sources.contains_key(&key) {
                    self.err_block(b, &format!("duplicate source \"{}.{}\"", key.0, key.1));
                } else {
                    top.sources.insert(key, b.clone());
                }
            }
            "build" => top.builds.push(b.clone()),
            "data" => {
                let ty = b.labels.first().cloned().unwrap_or_default();
                self.err_block(b, &format!("not supported: data source \"{ty}\" (kiln does not run Packer data sources; pass the value as a variable instead)"));
                top.data_blocks.push(b.clone());
            }
            "hcp_packer_registry" => {}
            other => {
                let known = [
                    "variable",
                    "variables",
                    "locals",
                    "local",
                    "packer",
                    "source",
                    "build",
                    "data",
                ];
                let mut d = Diag::error(format!(
                    "unsupported block type \"{other}\" at the top level of a template"
                ))
                .at(&b.file, Some(b.span.clone()));
                if let Some(s) = ebody::did_you_mean(other, &known) {
                    d = d.with_help(format!("did you mean \"{s}\"?"));
                }
                self.errors.push(d);
            }
        }
    }

    /// `local "name" { expression = …, sensitive = … }`
    fn local_block(&mut self, b: &RawBlock, top: &mut TopLevel) {
        if b.labels.len() != 1 {
            self.err_block(b, "a local block needs exactly one label (its name)");
            return;
        }
        let sensitive = matches!(
            b.body.attr("sensitive").map(|a| &a.expr),
            Some(hcl::Expression::Bool(true))
        );
        match b.body.attr("expression") {
            Some(a) => top.local_attrs.push((
                RawAttr {
                    key: b.labels[0].clone(),
                    ..a.clone()
                },
                sensitive,
            )),
            None => self.err_block(
                b,
                &format!("local \"{}\": expression is required", b.labels[0]),
            ),
        }
        for a in b.body.attrs() {
            if a.key != "expression" && a.key != "sensitive" {
                self.errors.push(
                    Diag::error(format!(
                        "unknown key \"{}\" in local block (expected expression, sensitive)",
                        a.key
                    ))
                    .at(&a.file, Some(a.span.clone())),
                );
            }
        }
    }

    /// Phase "variables", step 1: the declarations with their defaults.
    fn declare_variables(
        &mut self,
        var_blocks: &[RawBlock],
        default_globals: &Globals,
    ) -> IndexMap<String, VarDecl> {
        let mut decls = IndexMap::new();
        for b in var_blocks {
            let d = self.declare_variable(b, default_globals);
            decls.insert(d.name.clone(), d);
        }
        decls
    }

    fn declare_variable(&mut self, b: &RawBlock, default_globals: &Globals) -> VarDecl {
        let name = b.labels[0].clone();
        let mut ty = Type::Any;
        let mut type_expr = "any".to_string();
        if let Some(a) = b.body.attr("type") {
            match Type::parse(&a.expr) {
                Ok(t) => {
                    type_expr = t.display();
                    ty = t;
                }
                Err(m) => self.errors.push(
                    Diag::error(format!("variable \"{name}\": {m}"))
                        .at(&a.file, Some(a.span.clone())),
                ),
            }
        }
        let scope = Scope::root(default_globals);
        let mut description = None;
        let mut sensitive = false;
        let mut value = None;
        for a in b.body.attrs() {
            match a.key.as_str() {
                "type" | "nullable" => {}
                "default" => match scope.eval(&a.expr) {
                    Ok(v) => value = Some(v),
                    Err(e) => report(&mut self.errors, e, &a.file, a.span.clone()),
                },
                "description" => description = scope.eval(&a.expr).ok().and_then(|v| if let Value::String(s) = v { Some(s) } else { None }),
                "sensitive" => sensitive = matches!(scope.eval(&a.expr), Ok(Value::Bool(true))),
                other => self.errors.push(
                    Diag::error(format!("unknown key \"{other}\" in variable \"{name}\" (expected type, default, description, sensitive, validation, nullable)"))
                        .at(&a.file, Some(a.span.clone())),
                ),
            }
        }
        for inner in b.body.blocks() {
            if inner.ident != "validation" {
                self.err_block(
                    inner,
                    &format!("unknown block \"{}\" in variable \"{name}\"", inner.ident),
                );
            }
        }
        let value_at = b
            .body
            .attr("default")
            .map(|a| (a.file.clone(), a.span.clone()));
        let source = if value.is_some() {
            VarSource::Default
        } else {
            VarSource::Unset
        };
        VarDecl {
            name,
            ty,
            type_expr,
            description,
            sensitive,
            block: b.clone(),
            value,
            source,
            value_at,
        }
    }

    /// Phase "variables", step 2: `PKR_VAR_*` from the environment.
    fn assign_env_vars(&mut self, decls: &mut IndexMap<String, VarDecl>) {
        for (k, v) in &self.opts.env {
            if let Some(name) = k.strip_prefix("PKR_VAR_") {
                if let Some(d) = decls.get_mut(name) {
                    if d.sensitive {
                        self.secrets.push(v.clone());
                    }
                    match parse_cli_value(v, &d.ty) {
                        Ok(val) => {
                            d.value = Some(val);
                            d.source = VarSource::Env;
                            d.value_at = None;
                        }
                        Err(m) => self
                            .errors
                            .push(Diag::error(format!("PKR_VAR_{name}: {m}"))),
                    }
                }
            }
        }
    }

    /// Phase "variables", step 3: var files, the auto-loaded ones first, then `-var-file` in
    /// order. The auto-loaded files read join `files`.
    fn assign_var_files(
        &mut self,
        decls: &mut IndexMap<String, VarDecl>,
        inputs: &Inputs,
        files: &mut Vec<PathBuf>,
        default_globals: &Globals,
    ) {
        let cwd = &inputs.cwd;
        let var_files: Vec<(PathBuf, VarSource)> = inputs
            .auto_vars
            .iter()
            .map(|p| (p.clone(), VarSource::AutoVarFile))
            .chain(self.opts.var_files.iter().map(|p| {
                (
                    if p.is_absolute() {
                        p.clone()
                    } else {
                        cwd.join(p)
                    },
                    VarSource::VarFile,
                )
            }))
            .collect();
        for (p, src) in &var_files {
            let Some(f) = self.read(p, cwd) else {
                continue;
            };
            if src == &VarSource::AutoVarFile {
                files.push(p.clone());
            }
            self.load_var_file(&f, *src, decls, default_globals);
        }
    }

    /// Phase "variables", step 4: `-var name=value`.
    fn assign_cli_vars(&mut self, decls: &mut IndexMap<String, VarDecl>) {
        for (k, v) in &self.opts.vars {
            if decls.get(k).is_some_and(|d| d.sensitive) {
                self.secrets.push(v.clone());
            }
            match decls.get_mut(k) {
                Some(d) => match parse_cli_value(v, &d.ty) {
                    Ok(val) => {
                        d.value = Some(val);
                        d.source = VarSource::Cli;
                        d.value_at = None;
                    }
                    Err(m) => self.errors.push(Diag::error(format!("-var {k}=…: {m}"))),
                },
                None => {
                    let names: Vec<&str> = decls.keys().map(|s| s.as_str()).collect();
                    let mut d = Diag::error(format!(
                        "-var {k}=…: undefined variable \"{k}\": the template declares no variable with this name"
                    ));
                    if let Some(s) = ebody::did_you_mean(k, &names) {
                        d = d.with_help(format!("did you mean \"{s}\"?"));
                    }
                    self.errors.push(d);
                }
            }
        }
    }

    /// Phase "variables", step 5: every value converted to its declared type; a sensitive
    /// value's strings (as given and as converted) become secrets.
    fn convert_variables(&mut self, decls: &mut IndexMap<String, VarDecl>) {
        for d in decls.values_mut() {
            let Some(v) = d.value.take() else { continue };
            if d.sensitive {
                collect_strings(&v, &mut self.secrets);
            }
            match d.ty.convert(v.clone()) {
                Ok(c) => {
                    if d.sensitive {
                        collect_strings(&c, &mut self.secrets);
                    }
                    d.value = Some(c)
                }
                Err(m) => {
                    self.errors.push(d.conversion_error(&m));
                    d.value = Some(v);
                }
            }
        }
    }

    /// Phase "globals for everything else": the variables' values (and which are unset or
    /// sensitive) as `var.*`, without `env()`.
    fn globals(
        &mut self,
        decls: &IndexMap<String, VarDecl>,
        data_blocks: &[RawBlock],
        base: &EvalBase,
    ) -> Globals {
        self.secrets.retain(|s| !s.is_empty());
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
        let mut g = base.globals(false);
        g.quiet_unset = self.var_file_failed;
        g.sensitive_vars = decls
            .values()
            .filter(|d| d.sensitive)
            .map(|d| d.name.clone())
            .collect();
        for d in decls.values() {
            match &d.value {
                Some(v) => {
                    g.vars.insert(d.name.clone(), v.clone());
                }
                None => {
                    g.unset_vars.insert(d.name.clone());
                }
            }
        }
        for b in data_blocks {
            if let Some(t) = b.labels.first() {
                g.data_blocks.insert(t.clone());
            }
        }
        g
    }

    /// Phase "validation blocks": each `validation { condition, error_message }` of a variable
    /// that has a value.
    fn check_validations(&mut self, decls: &IndexMap<String, VarDecl>, g: &Globals) {
        for d in decls.values() {
            let Some(v) = &d.value else { continue };
            for vb in d.block.body.blocks().filter(|b| b.ident == "validation") {
                self.check_validation(d, v, vb, g);
            }
        }
    }

    fn check_validation(&mut self, d: &VarDecl, v: &Value, vb: &RawBlock, g: &Globals) {
        let mut s = Scope::root(g);
        let mut var_obj = g.vars.clone();
        var_obj.insert(d.name.clone(), v.clone());
        s.bind("var", Value::Object(var_obj));
        let Some(cond) = vb.body.attr("condition") else {
            self.err_block(vb, "validation: condition is required");
            return;
        };
        let msg = vb
            .body
            .attr("error_message")
            .and_then(|a| s.eval(&a.expr).ok())
            .and_then(|v| {
                if let Value::String(s) = v {
                    Some(s)
                } else {
                    None
                }
            })
            .unwrap_or_else(|| format!("invalid value for variable \"{}\"", d.name));
        match s.eval(&cond.expr) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) => {
                let mut diag =
                    Diag::error(format!("invalid value for variable \"{}\": {msg}", d.name))
                        .at(&cond.file, Some(cond.span.clone()));
                if let Some((f, sp)) = &d.value_at {
                    if !Arc::ptr_eq(f, &cond.file) || sp != &cond.span {
                        diag = diag.with_help(format!(
                            "the value was set at {}",
                            loc_of(f, sp).map(|l| l.to_string()).unwrap_or_default()
                        ));
                    }
                }
                self.errors.push(diag);
            }
            Ok(other) => self.errors.push(
                Diag::error(format!(
                    "validation condition must be a bool, got {}",
                    eval::type_name(&other)
                ))
                .at(&cond.file, Some(cond.span.clone())),
            ),
            Err(e) => report(&mut self.errors, e, &cond.file, cond.span.clone()),
        }
    }

    /// Phase "locals": defined in `g` (evaluated lazily, in dependency order), then each
    /// evaluated once for `inspect`; a local derived from a sensitive variable is masked.
    fn evaluate_locals(&mut self, local_attrs: &[(RawAttr, bool)], g: &mut Globals) -> Locals {
        let mut seen_locals = HashSet::new();
        for (i, (a, _)) in local_attrs.iter().enumerate() {
            if !seen_locals.insert(a.key.clone()) {
                self.errors.push(
                    Diag::error(format!("duplicate local value \"{}\"", a.key))
                        .at(&a.file, Some(a.span.clone())),
                );
                continue;
            }
            g.locals.insert(
                a.key.clone(),
                LocalDef {
                    expr: a.expr.clone(),
                    index: i,
                },
            );
        }
        let mut out = Locals::default();
        for (a, sensitive) in local_attrs {
            let v = g.local(&a.key).ok();
            if *sensitive {
                out.declared_sensitive.insert(a.key.clone());
            } else if let (Some(v), true) = (&v, g.local_tainted(&a.key)) {
                // derived from a sensitive variable: masked in inspect, its transformed
                // strings masked everywhere
                g.note_derived(v, &a.file.text);
            }
            out.infos.push(LocalInfo {
                name: a.key.clone(),
                sensitive: *sensitive || g.local_tainted(&a.key),
                value: v,
                location: loc_of(&a.file, &a.span),
            });
        }
        for (i, m) in g.local_errors.borrow().iter() {
            let (a, _) = &local_attrs[*i];
            self.errors
                .push(Diag::error(m.clone()).at(&a.file, Some(a.span.clone())));
        }
        out
    }

    /// Phase "builds": every build block's selected source runs.
    fn evaluate_builds(
        &mut self,
        top: &TopLevel,
        g: &Globals,
        pin: (&Required, Option<&str>),
    ) -> (Vec<SourceRun>, Vec<OtherRun>) {
        let mut runs = Vec::new();
        let mut other_runs = Vec::new();
        if top.builds.is_empty() && self.errors.is_empty() {
            self.warnings.push(Diag::warning(
                "the template has no build block: nothing to build",
            ));
        }
        for b in &top.builds {
            self.build_block(b, g, &top.sources, pin, &mut runs, &mut other_runs);
        }
        (runs, other_runs)
    }

    fn err_block(&mut self, b: &RawBlock, msg: &str) {
        self.errors
            .push(Diag::error(msg.to_string()).at(&b.file, Some(b.span.clone())));
    }

    fn load_var_file(
        &mut self,
        f: &Arc<SourceFile>,
        src: VarSource,
        decls: &mut IndexMap<String, VarDecl>,
        g: &Globals,
    ) {
        if f.name.ends_with(".json") {
            match serde_json::from_str::<serde_json::Value>(&f.text) {
                Ok(serde_json::Value::Object(m)) => {
                    for (k, v) in m {
                        let val: Value = hcl::to_value(&v).unwrap_or(Value::Null);
                        self.assign_var(decls, &k, val, src, f, 0..0);
                    }
                }
                Ok(_) => self
                    .errors
                    .push(Diag::error("a JSON variables file must hold an object").at_file(f)),
                Err(e) => self
                    .errors
                    .push(Diag::error(format!("invalid JSON: {e}")).at_file(f)),
            }
            return;
        }
        let body = match parse_file(f) {
            Ok(b) => b,
            Err(d) => {
                self.errors.push(d);
                self.var_file_failed = true;
                return;
            }
        };
        let mut g2 = Globals::new(
            FuncContext {
                allow_env: false,
                ..g.func.clone()
            },
            g.path.clone(),
            g.packer.clone(),
        );
        g2.vars = Map::new();
        let scope = Scope::root(&g2);
        for item in &body.items {
            match item {
                RawItem::Attr(a) => match scope.eval(&a.expr) {
                    Ok(v) => self.assign_var(decls, &a.key, v, src, &a.file, a.span.clone()),
                    Err(EvalError::Msg(m)) => self
                        .errors
                        .push(Diag::error(format!("{m} (variable files may only hold literal values)")).at(&a.file, Some(a.span.clone()))),
                    Err(EvalError::Reported) => {}
                },
                RawItem::Block(b) => self.errors.push(
                    Diag::error(format!(
                        "unexpected block \"{}\" in a variables file: only `name = value` assignments are allowed",
                        b.ident
                    ))
                    .at(&b.file, Some(b.span.clone()))
                    .with_help("is this a template? templates go in the directory you validate; -var-file takes *.pkrvars.hcl files"),
                ),
            }
        }
    }

    fn assign_var(
        &mut self,
        decls: &mut IndexMap<String, VarDecl>,
        name: &str,
        v: Value,
        src: VarSource,
        f: &Arc<SourceFile>,
        span: std::ops::Range<usize>,
    ) {
        match decls.get_mut(name) {
            Some(d) => {
                d.value = Some(v);
                d.source = src;
                d.value_at = Some((f.clone(), span));
            }
            None => {
                let names: Vec<&str> = decls.keys().map(|s| s.as_str()).collect();
                let mut d = Diag::warning(format!(
                    "undefined variable \"{name}\": a value was given but the template declares no such variable"
                ))
                .at(f, Some(span));
                if let Some(s) = ebody::did_you_mean(name, &names) {
                    d = d.with_help(format!("did you mean \"{s}\"?"));
                }
                self.warnings.push(d);
            }
        }
    }

    /// One build block: its source references, then a run for each selected one.
    fn build_block(
        &mut self,
        b: &RawBlock,
        g: &Globals,
        sources: &IndexMap<(String, String), RawBlock>,
        pin: (&Required, Option<&str>),
        runs: &mut Vec<SourceRun>,
        other_runs: &mut Vec<OtherRun>,
    ) {
        let (build_name, refs) = self.build_refs(b, g, sources);
        for r in refs {
            let out = (&mut *runs, &mut *other_runs);
            self.source_run(b, g, sources, pin, build_name.as_deref(), r, out);
        }
    }

    /// A build block's name and source references, in order: `sources = [...]` then
    /// `source "x.y" {}` blocks.
    fn build_refs<'b>(
        &mut self,
        b: &'b RawBlock,
        g: &Globals,
        sources: &IndexMap<(String, String), RawBlock>,
    ) -> (Option<String>, Vec<SourceRef<'b>>) {
        let root = Scope::root(g);
        let mut build_name = None;
        // source references, in order: `sources = [...]` then `source "x.y" {}` blocks
        let mut refs: Vec<SourceRef> = Vec::new();
        let mut src_obj = Map::new();
        for (t, n) in sources.keys() {
            let entry = src_obj
                .entry(t.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(n.clone(), Value::String(format!("source.{t}.{n}")));
            }
        }
        for item in &b.body.items {
            match item {
                RawItem::Attr(a) => match a.key.as_str() {
                    "name" => match root.eval(&a.expr) {
                        Ok(Value::String(s)) => build_name = Some(s),
                        Ok(other) => self.errors.push(
                            Diag::error(format!("build name must be a string, got {}", eval::type_name(&other)))
                                .at(&a.file, Some(a.span.clone())),
                        ),
                        Err(e) => report(&mut self.errors, e, &a.file, a.span.clone()),
                    },
                    "description" => {}
                    "sources" => {
                        let mut s = root.child();
                        s.bind("source", Value::Object(src_obj.clone()));
                        match s.eval(&a.expr) {
                            Ok(Value::Array(items)) => {
                                for it in items {
                                    match it {
                                        Value::String(r) => match parse_source_ref(&r) {
                                            Some((t, n)) => refs.push((t, n, None, a.span.clone(), a.file.clone())),
                                            None => self.errors.push(
                                                Diag::error(format!("invalid source reference \"{r}\": expected source.<type>.<name>"))
                                                    .at(&a.file, Some(a.span.clone())),
                                            ),
                                        },
                                        other => self.errors.push(
                                            Diag::error(format!("sources: expected source references, got {}", eval::type_name(&other)))
                                                .at(&a.file, Some(a.span.clone())),
                                        ),
                                    }
                                }
                            }
                            Ok(other) => self.errors.push(
                                Diag::error(format!(
                                    "sources must be a list of source references, got {}",
                                    eval::type_name(&other)
                                ))
                                .at(&a.file, Some(a.span.clone())),
                            ),
                            Err(e) => report(&mut self.errors, e, &a.file, a.span.clone()),
                        }
                    }
                    other => self.errors.push(
                        Diag::error(format!(
                            "unknown key \"{other}\" in build block (expected name, description, sources)"
                        ))
                        .at(&a.file, Some(a.span.clone())),
                    ),
                },
                RawItem::Block(sb) if sb.ident == "source" => {
                    let label = sb.labels.first().cloned().unwrap_or_default();
                    match parse_source_ref(&label) {
                        Some((t, n)) => refs.push((t, n, Some(sb), sb.span.clone(), sb.file.clone())),
                        None => self.err_block(sb, &format!("invalid source reference \"{label}\": expected \"<type>.<name>\"")),
                    }
                }
                RawItem::Block(x) => match x.ident.as_str() {
                    "provisioner" | "post-processor" | "post-processors" | "error-cleanup-provisioner" | "hcp_packer_registry" => {}
                    "dynamic" if matches!(x.labels.first().map(|s| s.as_str()), Some("provisioner" | "post-processor")) => {}
                    other => {
                        let mut d = Diag::error(format!("unknown block \"{other}\" in build block")).at(&x.file, Some(x.span.clone()));
                        if let Some(s) = ebody::did_you_mean(other, &["source", "provisioner", "post-processor", "post-processors"]) {
                            d = d.with_help(format!("did you mean \"{s}\"?"));
                        }
                        self.errors.push(d);
                    }
                },
            }
        }
        (build_name, refs)
    }

    /// One source run of a build: the source with the build's overrides merged, evaluated with
    /// `source.*` and `build.*`, decoded, with its provisioners and post-processors.
    #[allow(clippy::too_many_arguments)]
    fn source_run(
        &mut self,
        b: &RawBlock,
        g: &Globals,
        sources: &IndexMap<(String, String), RawBlock>,
        (required, pin_at): (&Required, Option<&str>),
        build_name: Option<&str>,
        (ty, name, override_block, span, file): SourceRef,
        (runs, other_runs): (&mut Vec<SourceRun>, &mut Vec<OtherRun>),
    ) {
        let root = Scope::root(g);
        let Some(src) = sources.get(&(ty.clone(), name.clone())) else {
            let known: Vec<String> = sources.keys().map(|(t, n)| format!("{t}.{n}")).collect();
            let knownr: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            let mut d = Diag::error(format!(
                "unknown source \"{ty}.{name}\": no source \"{ty}\" \"{name}\" block is declared"
            ))
            .at(&file, Some(span));
            if let Some(s) = ebody::did_you_mean(&format!("{ty}.{name}"), &knownr) {
                d = d.with_help(format!("did you mean \"{s}\"?"));
            }
            self.errors.push(d);
            return;
        };
        // merge build-level overrides
        let mut merged = src.body.clone();
        let mut run_name = name.clone();
        if let Some(ob) = override_block {
            let idents: HashSet<String> = ob.body.blocks().map(|x| x.ident.clone()).collect();
            merged
                .items
                .retain(|i| !matches!(i, RawItem::Block(x) if idents.contains(&x.ident)));
            for item in &ob.body.items {
                match item {
                    RawItem::Attr(a) if a.key == "name" => match root.eval(&a.expr) {
                        Ok(Value::String(s)) => run_name = s,
                        Ok(_) => self.errors.push(
                            Diag::error("name must be a string").at(&a.file, Some(a.span.clone())),
                        ),
                        Err(e) => report(&mut self.errors, e, &a.file, a.span.clone()),
                    },
                    RawItem::Attr(a) => {
                        merged
                            .items
                            .retain(|i| !matches!(i, RawItem::Attr(x) if x.key == a.key));
                        merged.items.push(RawItem::Attr(a.clone()));
                    }
                    RawItem::Block(bb) => merged.items.push(RawItem::Block(bb.clone())),
                }
            }
        }
        let canonical_type = if ty == "proxmox" {
            "proxmox-iso".to_string()
        } else {
            ty.clone()
        };
        let full = format!("{canonical_type}.{run_name}");
        if !self.selected(&full, build_name, &ty, &run_name) {
            return;
        }
        let mut s = root.child();
        s.bind("source", source_obj(&canonical_type, &run_name));
        s.bind("build", build_obj(build_name, &canonical_type, &run_name));
        let ebody = eval_body(&merged, &s, &mut self.errors);
        let (provs, pps) = self.build_steps(b, &s, &full, &ty, &run_name, build_name);
        match ty.as_str() {
            "proxmox-iso" | "proxmox" | "proxmox-clone" => {
                if ty == "proxmox" {
                    self.warnings.push(
                        Diag::warning("proxmox is deprecated, please use proxmox-iso instead").at(&src.file, Some(src.span.clone())),
                    );
                }
                let mut cx = proxmox::Ctx {
                    env: &self.opts.env,
                    warnings: &mut self.warnings,
                    now: self.opts.now.unwrap_or_else(time::OffsetDateTime::now_utc),
                };
                let config = proxmox::decode(
                    &canonical_type,
                    &ebody,
                    &src.file,
                    src.span.clone(),
                    &format!("source \"{ty}\" \"{name}\""),
                    &mut self.errors,
                    &mut cx,
                );
                if canonical_type != "proxmox-clone" {
                    packer::check_boot_iso_pin(&ebody, required, pin_at, &mut self.errors);
                }
                runs.push(SourceRun {
                    build_name: build_name.map(str::to_string),
                    source_type: canonical_type,
                    source_name: run_name,
                    config,
                    provisioners: provs,
                    post_processors: pps,
                    location: loc_of(&src.file, &src.span),
                });
            }
            "null" | "file" => {
                self.warnings.push(
                    Diag::warning(format!(
                        "source \"{ty}.{run_name}\": kiln builds only proxmox-iso and proxmox-clone sources; this one is checked but will be skipped"
                    ))
                    .at(&src.file, Some(src.span.clone())),
                );
                let settings = ebody
                    .attrs
                    .iter()
                    .map(|(k, a)| (k.clone(), serde_json::to_value(&a.value).unwrap_or(serde_json::Value::Null)))
                    .collect();
                other_runs.push(OtherRun {
                    build_name: build_name.map(str::to_string),
                    source_type: ty.clone(),
                    source_name: run_name,
                    settings,
                    provisioners: provs,
                    post_processors: pps,
                });
            }
            other => self.errors.push(
                Diag::error(format!(
                    "not supported: source type \"{other}\" (kiln builds proxmox-iso and proxmox-clone; null and file sources are accepted and skipped)"
                ))
                .at(&src.file, Some(src.span.clone())),
            ),
        }
    }

    fn selected(&self, full: &str, build: Option<&str>, raw_type: &str, name: &str) -> bool {
        let alt = format!("{raw_type}.{name}");
        let names: Vec<String> = std::iter::once(full.to_string())
            .chain(std::iter::once(alt))
            .chain(build.map(|b| format!("{b}.{full}")))
            .collect();
        let m = |pats: &[String]| pats.iter().any(|p| names.iter().any(|n| glob_match(p, n)));
        if !self.opts.only.is_empty() && !m(&self.opts.only) {
            return false;
        }
        if !self.opts.except.is_empty() && m(&self.opts.except) {
            return false;
        }
        true
    }

    /// Provisioners and post-processors of a build, evaluated for one run.
    fn build_steps(
        &mut self,
        b: &RawBlock,
        s: &Scope,
        full: &str,
        raw_type: &str,
        name: &str,
        build: Option<&str>,
    ) -> (Vec<Provisioner>, Vec<PostProcessor>) {
        let mut provs = Vec::new();
        let mut pps = Vec::new();
        let names = [
            full.to_string(),
            format!("{raw_type}.{name}"),
            build.map(|b| format!("{b}.{full}")).unwrap_or_default(),
        ];
        let mut chain = 0usize;
        let mut blocks: Vec<(EBlock, usize)> = Vec::new();
        for item in &b.body.items {
            let RawItem::Block(x) = item else { continue };
            match x.ident.as_str() {
                "provisioner" | "post-processor" => {
                    let e = ebody::eval_body(&x.body, s, &mut self.errors);
                    blocks.push((
                        EBlock {
                            ident: x.ident.clone(),
                            labels: x.labels.clone(),
                            body: e,
                            span: x.span.clone(),
                            file: x.file.clone(),
                        },
                        chain,
                    ));
                    if x.ident == "post-processor" {
                        chain += 1;
                    }
                }
                "dynamic"
                    if matches!(
                        x.labels.first().map(|s| s.as_str()),
                        Some("provisioner" | "post-processor")
                    ) =>
                {
                    let mut out = Vec::new();
                    ebody::expand_dynamic(x, s, &mut self.errors, &mut out);
                    for e in out {
                        let pp = e.ident == "post-processor";
                        blocks.push((e, chain));
                        if pp {
                            chain += 1;
                        }
                    }
                }
                "post-processors" => {
                    for inner in x.body.blocks() {
                        if inner.ident == "post-processor" {
                            let e = ebody::eval_body(&inner.body, s, &mut self.errors);
                            blocks.push((
                                EBlock {
                                    ident: inner.ident.clone(),
                                    labels: inner.labels.clone(),
                                    body: e,
                                    span: inner.span.clone(),
                                    file: inner.file.clone(),
                                },
                                chain,
                            ));
                        } else {
                            self.err_block(
                                inner,
                                &format!("unknown block \"{}\" in post-processors (expected post-processor)", inner.ident),
                            );
                        }
                    }
                    chain += 1;
                }
                "error-cleanup-provisioner" => {
                    self.warnings.push(
                        Diag::warning(
                            "error-cleanup-provisioner is not supported by kiln yet and is ignored",
                        )
                        .at(&x.file, Some(x.span.clone())),
                    );
                }
                _ => {}
            }
        }
        for (e, chain) in blocks {
            if !self.step_selected(&e, &names) {
                continue;
            }
            if e.ident == "provisioner" {
                if let Some(p) = provisioners::decode_provisioner(&e, &mut self.errors) {
                    provs.push(p);
                }
            } else if let Some(p) = provisioners::decode_post_processor(&e, chain, &mut self.errors)
            {
                pps.push(p);
            }
        }
        (provs, pps)
    }

    fn step_selected(&mut self, e: &EBlock, names: &[String]) -> bool {
        let list = |k: &str| -> Option<Vec<String>> {
            e.body.attrs.get(k).map(|a| match &a.value {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|v| {
                        if let Value::String(s) = v {
                            Some(s.clone())
                        } else {
                            None
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            })
        };
        let matches = |l: &[String]| {
            l.iter().any(|p| {
                names.iter().any(|n| {
                    !n.is_empty() && (p == n || p.strip_prefix("source.") == Some(n.as_str()))
                })
            })
        };
        if let Some(only) = list("only") {
            if !matches(&only) {
                return false;
            }
        }
        if let Some(except) = list("except") {
            if matches(&except) {
                return false;
            }
        }
        true
    }
}

/// (type, name, build-level override block, span and file of the reference)
type SourceRef<'a> = (
    String,
    String,
    Option<&'a RawBlock>,
    std::ops::Range<usize>,
    Arc<SourceFile>,
);

fn source_obj(ty: &str, name: &str) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    m.insert("type".into(), Value::String(ty.into()));
    Value::Object(m)
}

/// `build.*`: `name` is known now; the connection values are known only at build time and are
/// left as Go-template placeholders that the build layer renders.
fn build_obj(build: Option<&str>, ty: &str, name: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "name".into(),
        Value::String(
            build
                .map(|b| b.to_string())
                .unwrap_or_else(|| format!("{ty}.{name}")),
        ),
    );
    for k in [
        "ID",
        "Host",
        "Port",
        "User",
        "Password",
        "ConnType",
        "PackerRunUUID",
        "PackerHTTPAddr",
        "PackerHTTPIP",
        "PackerHTTPPort",
        "SSHPublicKey",
        "SSHPrivateKey",
        "WinRMPassword",
    ] {
        m.insert(k.into(), Value::String(format!("{{{{ build `{k}` }}}}")));
    }
    Value::Object(m)
}

fn parse_source_ref(r: &str) -> Option<(String, String)> {
    let r = r.strip_prefix("source.").unwrap_or(r);
    let (t, n) = r.split_once('.')?;
    if t.is_empty() || n.is_empty() {
        return None;
    }
    Some((t.to_string(), n.to_string()))
}

/// `-only`/`-except` patterns: `*` matches any run of characters.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(pos) => rest = &rest[pos + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// `-var name=value` / `PKR_VAR_name`: taken literally for string variables, parsed as an HCL
/// expression otherwise (as Packer does).
pub fn parse_cli_value(raw: &str, ty: &Type) -> Result<Value, String> {
    if ty.is_primitive_string() || matches!(ty, Type::Any) {
        return Ok(Value::String(raw.to_string()));
    }
    if matches!(ty, Type::Number | Type::Bool) {
        return Ok(Value::String(raw.to_string()));
    }
    let body: hcl::Body = hcl::from_str(&format!("v = {raw}\n")).map_err(|e| {
        format!(
            "cannot parse \"{raw}\" as an HCL value: {}",
            e.to_string().lines().next().unwrap_or("")
        )
    })?;
    let Some(attr) = body.attributes().next() else {
        return Err("empty value".into());
    };
    let g = Globals::new(
        FuncContext {
            cwd: PathBuf::from("."),
            allow_env: false,
            now: time::OffsetDateTime::UNIX_EPOCH,
        },
        Value::Null,
        Value::Null,
    );
    Scope::root(&g).eval(attr.expr()).map_err(|e| match e {
        EvalError::Msg(m) => m,
        EvalError::Reported => "invalid value".into(),
    })
}

/// The secret lines of a private key file (its base64 body; not the BEGIN/END armour), if it is
/// a readable regular file of at most 1 MiB.
fn private_key_lines(cwd: &Path, file: &str) -> Vec<String> {
    let p = if Path::new(file).is_absolute() {
        PathBuf::from(file)
    } else {
        cwd.join(file)
    };
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() && m.len() <= 1 << 20 => {}
        _ => return Vec::new(),
    }
    std::fs::read_to_string(&p)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 16 && !l.starts_with("-----") && !l.contains(':'))
        .map(str::to_string)
        .collect()
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// `validate -syntax-only`: parse every `*.pkr.hcl` and `*.pkrvars.hcl` file of a directory (or
/// the one file given) without evaluating anything. Returns the number of files checked.
pub fn check_syntax(path: &Path) -> Result<usize, ConfigError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut files = Vec::new();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    if (n.ends_with(".pkr.hcl") || n.ends_with(".pkrvars.hcl"))
                        && std::fs::metadata(e.path()).is_ok_and(|m| m.is_file())
                    {
                        files.push(e.path());
                    }
                }
            }
        }
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) => {
            return Err(ConfigError::single(Diag::error(format!(
                "cannot open {}: {e}",
                path.display()
            ))))
        }
    }
    files.sort();
    let mut errors = Vec::new();
    for p in &files {
        match std::fs::read_to_string(p) {
            Ok(t) => {
                let abs = if p.is_absolute() {
                    p.clone()
                } else {
                    cwd.join(p)
                };
                let f = SourceFile::new(p, display_name(&abs, &cwd), t);
                if let Err(d) = parse_file(&f) {
                    errors.push(d);
                }
            }
            Err(e) => errors.push(Diag::error(format!("cannot read {}: {e}", p.display()))),
        }
    }
    if errors.is_empty() {
        Ok(files.len())
    } else {
        Err(ConfigError {
            errors,
            warnings: Vec::new(),
        })
    }
}
