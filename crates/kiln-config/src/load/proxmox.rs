//! `source "proxmox-iso"`: decode an evaluated body into [`ProxmoxIsoConfig`] with the plugin's
//! defaults and validation messages.

use super::ebody::{parse_go_duration, Dec, EBlock, EBody};
use crate::diag::{Diag, SourceFile};
use crate::model::keys;
use crate::model::*;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

const DEPRECATED_ISO_KEYS: &[&str] = &[
    "iso_file",
    "iso_url",
    "iso_urls",
    "iso_checksum",
    "iso_storage_pool",
    "iso_download_pve",
    "unmount_iso",
    "iso_target_path",
    "iso_target_extension",
];

/// A model field type read as it is from a key of the matching kind ([`plain_keys!`]).
trait FromKey: Sized {
    /// The table kinds this type reads.
    const KINDS: &'static [keys::Kind];
    fn read_key(d: &mut Dec, key: &'static str) -> Self;
}

impl FromKey for Option<String> {
    const KINDS: &'static [keys::Kind] = &[keys::Kind::Str];
    fn read_key(d: &mut Dec, key: &'static str) -> Self {
        d.str(key)
    }
}

impl FromKey for bool {
    const KINDS: &'static [keys::Kind] = &[keys::Kind::Bool];
    fn read_key(d: &mut Dec, key: &'static str) -> Self {
        d.flag(key)
    }
}

impl FromKey for Option<u32> {
    const KINDS: &'static [keys::Kind] = &[keys::Kind::Number];
    fn read_key(d: &mut Dec, key: &'static str) -> Self {
        d.uint::<u32>(key)
    }
}

impl FromKey for Vec<String> {
    const KINDS: &'static [keys::Kind] = &[keys::Kind::StrList];
    fn read_key(d: &mut Dec, key: &'static str) -> Self {
        d.list_or_empty(key)
    }
}

impl FromKey for indexmap::IndexMap<String, String> {
    const KINDS: &'static [keys::Kind] = &[keys::Kind::StrMap];
    fn read_key(d: &mut Dec, key: &'static str) -> Self {
        d.map(key)
    }
}

/// Read key `key` into a field of type `T`; the table's kind for the key must be one `T` reads.
fn read_key<T: FromKey>(d: &mut Dec, key: &'static str) -> T {
    debug_assert!(
        d.table
            .and_then(|t| keys::spec(t, key))
            .is_some_and(|s| T::KINDS.contains(&s.kind)),
        "{key}: the field's type does not read the table's kind"
    );
    T::read_key(d, key)
}

/// Keys read as they are into the struct fields of the same name: the field names the key (no
/// string repeats it, and a field the table lacks trips `Dec::finish`'s check) and the field's
/// type picks the reader. What a key needs beyond that (a default other than the type's, a
/// check, a fallback) is written out below.
macro_rules! plain_keys {
    ($d:expr => $s:expr; $($f:ident),+ $(,)?) => {
        $( $s.$f = read_key($d, stringify!($f).trim_start_matches("r#")); )+
    };
}

pub struct Ctx<'a> {
    pub env: &'a [(String, String)],
    pub warnings: &'a mut Vec<Diag>,
    /// The build's start, for `{{ timestamp }}` / `{{ isotime }}` in rendered keys.
    pub now: time::OffsetDateTime,
}

fn env_get<'e>(env: &'e [(String, String)], k: &str) -> Option<&'e str> {
    env.iter()
        .rev()
        .find(|(n, v)| n == k && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Keys whose Go-template functions (`{{ timestamp }}`, `{{ isotime "…" }}`, `{{ uuid }}`) the
/// plugin renders before use.
const RENDERED: &[&str] = &["vm_name", "template_name", "template_description"];

/// Render `{{ timestamp }}`, `{{ isotime }}`, `{{ uuid }}` … as Packer does in builder settings.
fn render_gotmpl(v: &str, now: time::OffsetDateTime) -> Result<String, String> {
    let data = kiln_bootcmd::gotmpl::Data::new().at(now);
    kiln_bootcmd::gotmpl::render(v, &data).map_err(|e| e.message)
}

/// The table's verdict on every key set in `body` (the source body when `block` is `""`):
/// an unsupported key set to anything but its default is an error at its line, a key without
/// effect a warning.
fn check_support(
    source_type: &str,
    block: &str,
    body: &EBody,
    errs: &mut Vec<Diag>,
    warnings: &mut Vec<Diag>,
) {
    for (key, a) in &body.attrs {
        let Some(spec) = keys::spec(block, key) else {
            continue;
        };
        let at = |d: Diag| d.at(&a.file, Some(a.span.clone()));
        if !spec.sources.accepts(source_type) {
            errs.push(at(Diag::error(format!(
                "{key} is a key of source \"{}\", not of \"{source_type}\"",
                spec.sources.describe()
            ))));
            continue;
        }
        if !differs_from_default(spec, &a.value) {
            continue;
        }
        match spec.support_in(source_type) {
            keys::Support::No(why) => errs.push(at(Diag::error(format!(
                "not supported by kiln: {key} ({why})"
            )))),
            keys::Support::NoEffect(why) => warnings.push(at(Diag::warning(format!(
                "{key} has no effect in kiln: {why}"
            )))),
            keys::Support::Yes(_) | keys::Support::Alias(_) => {}
        }
    }
    for b in &body.blocks {
        let Some(spec) = keys::spec(block, &b.ident) else {
            continue;
        };
        if !block.is_empty() || !matches!(spec.kind, keys::Kind::Block | keys::Kind::Blocks) {
            continue;
        }
        let at = |d: Diag| d.at(&b.file, Some(b.span.clone()));
        if !spec.sources.accepts(source_type) {
            errs.push(at(Diag::error(format!(
                "{} is a block of source \"{}\", not of \"{source_type}\"",
                b.ident,
                spec.sources.describe()
            ))));
            continue;
        }
        if let keys::Support::No(why) = spec.support_in(source_type) {
            errs.push(at(Diag::error(format!(
                "not supported by kiln: {} in {source_type} ({why})",
                b.ident
            ))));
            continue;
        }
        check_support(source_type, &b.ident, &b.body, errs, warnings);
    }
}

/// Whether `v` is something other than the key's documented default (unset counts as default).
fn differs_from_default(spec: &keys::KeySpec, v: &hcl::Value) -> bool {
    use hcl::Value;
    let text = match v {
        Value::Null => return false,
        Value::Bool(false) if spec.kind == keys::Kind::Bool => return false,
        Value::String(s) if s.is_empty() => return false,
        Value::Array(a) => return !a.is_empty(),
        Value::Object(o) => return !o.is_empty(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match spec.default {
        keys::Def::Lit(d) => {
            if spec.kind == keys::Kind::Duration {
                let (a, b) = (parse_go_duration(&text), parse_go_duration(d));
                !(a.is_ok() && a == b)
            } else {
                !text.eq_ignore_ascii_case(d)
            }
        }
        keys::Def::Dur(d) => parse_go_duration(&text).ok() != Some(d.as_nanos() as i128),
        keys::Def::Unset | keys::Def::Computed(_) => {
            !(spec.kind == keys::Kind::Number && text == "0")
        }
    }
}

fn env_set(env: &[(String, String)], k: &str) -> bool {
    env.iter().any(|(n, v)| n == k && !v.is_empty())
}

/// The fields the boot command step provides (`{{ .HTTPIP }}` …), with stand-in values.
fn boot_command_data(now: time::OffsetDateTime) -> kiln_bootcmd::gotmpl::Data {
    kiln_bootcmd::gotmpl::Data::new()
        .with("HTTPIP", "10.0.2.2")
        .with("HTTPPort", 8000)
        .with("Name", "kiln-00000000")
        .at(now)
}

/// Check the boot command as the build step will read it: an unknown `{{ .Field }}` or a key that
/// cannot be typed is an error; a `<tag>` that is not a key name is typed literally by Packer —
/// close to a key name (`<enterr>`) it is an error with the suggestion, otherwise a warning.
fn check_boot_command(
    cmds: &[String],
    a: &super::ebody::EAttr,
    errs: &mut Vec<Diag>,
    cx: &mut Ctx,
) {
    // the source text of the attribute, to point at the tag itself when it is written there
    let src = a.file.text.get(a.span.clone()).unwrap_or_default();
    let at = |needle: &str| -> Range<usize> {
        match src.find(needle) {
            Some(i) => a.span.start + i..a.span.start + i + needle.len(),
            None => a.span.clone(),
        }
    };
    let data = boot_command_data(cx.now);
    for (i, cmd) in cmds.iter().enumerate() {
        let rendered = match kiln_bootcmd::gotmpl::render(cmd, &data) {
            Ok(r) => r,
            Err(e) => {
                let tail: String = cmd[e.offset.min(cmd.len())..].chars().take(24).collect();
                errs.push(
                    Diag::error(format!("boot_command[{i}]: {}", e.message))
                        .at(&a.file, Some(at(&tail)))
                        .with_help(
                            "the boot command knows {{ .HTTPIP }}, {{ .HTTPPort }} and {{ .Name }}",
                        ),
                );
                continue;
            }
        };
        let mut rest = rendered.as_str();
        while let Some(open) = rest.find('<') {
            let after = &rest[open + 1..];
            let Some(close) = after.find(['>', '<']) else {
                break;
            };
            if after.as_bytes()[close] == b'<' {
                rest = &after[close..];
                continue;
            }
            let name = &after[..close];
            let tag = &rest[open..open + close + 2];
            rest = &after[close + 1..];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            // a key, a wait or a held key is one step (or none) spanning the whole tag
            let is_key = match kiln_bootcmd::parse_steps(tag) {
                Ok(steps) => steps.len() <= 1 && steps.iter().all(|s| s.len == tag.len()),
                Err(_) => false,
            };
            if is_key {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            let best = kiln_bootcmd::keys::SPECIAL
                .iter()
                .flat_map(|k| [k.to_string(), format!("{k}On"), format!("{k}Off")])
                .chain(["wait".to_string()])
                .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), k))
                .min_by_key(|(d, _)| *d);
            match best {
                Some((dist, k)) if dist <= 2 => errs.push(
                    Diag::error(format!(
                        "boot_command[{i}]: unknown key {tag}: did you mean `<{k}>`?"
                    ))
                    .at(&a.file, Some(at(tag)))
                    .with_help(format!(
                        "Packer would type {tag} literally, character by character, minutes into the build"
                    )),
                ),
                _ => cx.warnings.push(
                    Diag::warning(format!(
                        "boot_command[{i}]: {tag} is not a key name: it is typed literally, character by character"
                    ))
                    .at(&a.file, Some(at(tag))),
                ),
            }
        }
    }
    // what the build step will refuse (a character a US keyboard cannot type, a negative wait)
    if let Err(e) = kiln_bootcmd::plan(cmds, &data, DEFAULT_BOOT_KEY_INTERVAL) {
        if let kiln_bootcmd::PlanError::Keys { .. } = e {
            errs.push(Diag::error(e.to_string()).at(&a.file, Some(a.span.clone())));
        }
    }
}

/// Render a key's Go-template functions; an error at the key when that fails.
fn render_key(
    d: &mut Dec,
    key: &'static str,
    v: Option<String>,
    now: time::OffsetDateTime,
) -> Option<String> {
    let v = v?;
    if !v.contains("{{") {
        return Some(v);
    }
    match render_gotmpl(&v, now) {
        Ok(r) => Some(r),
        Err(m) => {
            d.err_at(key, format!("{key}: {m}"));
            Some(v)
        }
    }
}

/// `timestamp`, `isotime`, `uuid` when `v` calls one of them as a Go-template function.
fn template_function(v: &str) -> Option<&'static str> {
    let mut rest = v;
    while let Some(i) = rest.find("{{") {
        let inner = rest[i + 2..].trim_start_matches('-').trim_start();
        for f in ["timestamp", "isotime", "uuid"] {
            if inner.starts_with(f) {
                return Some(f);
            }
        }
        rest = &rest[i + 2..];
    }
    None
}

fn dns_name_ok(s: &str) -> bool {
    // Templates may hold Go-template fields rendered later ({{ timestamp }}); skip those.
    if s.contains("{{") {
        return true;
    }
    s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// Decode a `proxmox-iso` or `proxmox-clone` source (`source_type`): one key table, the keys of
/// the other builder refused at their line.
pub fn decode(
    source_type: &str,
    body: &EBody,
    file: &Arc<SourceFile>,
    span: Range<usize>,
    what: &str,
    errs: &mut Vec<Diag>,
    cx: &mut Ctx,
) -> ProxmoxIsoConfig {
    let mut c = ProxmoxIsoConfig::default();
    let (line, column) = file.line_col(span.start);
    let source_at = Location {
        file: std::path::PathBuf::from(&file.name),
        line,
        column,
    };
    c.key_locations = KeyLocations::of_body(body, Some(source_at));
    let is_clone = source_type == keys::CLONE;
    check_support(source_type, "", body, errs, cx.warnings);
    let mut d = Dec::new(body, errs, what.to_string(), file, span).with_table("");
    // keys of the other builder were refused by check_support: not "unknown" as well
    for s in keys::keys_of("") {
        if !s.sources.accepts(source_type) {
            if matches!(s.kind, keys::Kind::Block | keys::Kind::Blocks) {
                d.known_blocks.push(s.key);
            } else {
                d.known.push(s.key);
            }
        }
    }

    // connection
    c.proxmox_url = d.str("proxmox_url");
    if let Some(u) = &c.proxmox_url {
        let t = u.trim_end_matches('/').to_string();
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            d.err_at(
                "proxmox_url",
                format!("could not parse proxmox_url: \"{u}\" is not a URL"),
            );
        } else if !(t.starts_with("http://") || t.starts_with("https://")) {
            let a = &body.attrs["proxmox_url"];
            let mut w = Diag::warning(format!(
                "proxmox_url \"{u}\" is not an http(s) URL; the build will fail to connect"
            ))
            .at(&a.file, Some(a.span.clone()));
            if u.starts_with('$') {
                w = w.with_help("this looks like a shell variable: it is kept literally (no shell expansion in templates); set the variable itself with -var or PKR_VAR_<name>");
            }
            cx.warnings.push(w);
        }
        c.proxmox_url = Some(t);
    } else if !d.failed("proxmox_url") && !env_set(cx.env, "PROXMOX_URL") {
        d.err("proxmox_url must be specified (or set PROXMOX_URL)");
    }
    plain_keys!(&mut d => c; insecure_skip_tls_verify, proxmox_fingerprint, username);
    if c.username.is_none() && !d.failed("username") && !env_set(cx.env, "PROXMOX_USERNAME") {
        d.err("username must be specified (or set PROXMOX_USERNAME)");
    }
    plain_keys!(&mut d => c; password, token);
    if c.password.is_none()
        && c.token.is_none()
        && !d.failed("password")
        && !d.failed("token")
        && !env_set(cx.env, "PROXMOX_PASSWORD")
        && !env_set(cx.env, "PROXMOX_TOKEN")
    {
        d.err("password or token must be specified (or set PROXMOX_PASSWORD / PROXMOX_TOKEN)");
    }
    // PROXMOX_* fallbacks, resolved here: after loading, the connection settings are complete
    // (or the errors above were reported), and the plan carries what the environment gave
    for (slot, var) in [
        (&mut c.proxmox_url, "PROXMOX_URL"),
        (&mut c.username, "PROXMOX_USERNAME"),
        (&mut c.password, "PROXMOX_PASSWORD"),
        (&mut c.token, "PROXMOX_TOKEN"),
        (&mut c.proxmox_fingerprint, "PROXMOX_FINGERPRINT"),
    ] {
        if slot.is_none() {
            *slot = env_get(cx.env, var).map(str::to_string);
        }
    }
    if let Some(u) = &mut c.proxmox_url {
        *u = u.trim_end_matches('/').to_string();
    }
    c.node = d.req_str("node", "node must be specified");
    plain_keys!(&mut d => c; pool);
    if let Some(t) = d.dur("task_timeout") {
        if !t.is_zero() {
            c.task_timeout = t;
        }
    }

    // identity
    plain_keys!(&mut d => c; vm_name);
    c.vm_name = render_key(&mut d, "vm_name", c.vm_name, cx.now);
    if let Some(n) = &c.vm_name {
        if !dns_name_ok(n) {
            d.err_at("vm_name", "vm_name must be a valid DNS name");
        }
    }
    if let Some(id) = d.uint::<u32>("vm_id") {
        if id != 0 {
            if !(100..=999_999_999).contains(&id) {
                d.err_at("vm_id", "vm_id must be in range 100-999999999");
            }
            c.vm_id = Some(id);
        }
    }
    plain_keys!(&mut d => c; tags, template_name);
    c.template_name = render_key(&mut d, "template_name", c.template_name, cx.now);
    if let Some(n) = &c.template_name {
        if !dns_name_ok(n) {
            d.err_at("template_name", "template_name must be a valid DNS name");
        }
    }
    plain_keys!(&mut d => c; template_description);
    c.template_description = render_key(
        &mut d,
        "template_description",
        c.template_description,
        cx.now,
    );
    for (key, a) in &body.attrs {
        let is_str = keys::spec("", key).is_some_and(|s| s.kind == keys::Kind::Str);
        if is_str && !RENDERED.contains(&key.as_str()) {
            if let hcl::Value::String(v) = &a.value {
                if let Some(f) = template_function(v) {
                    d.err_at(
                        key,
                        format!("{key}: `{{{{ {f} }}}}` is not rendered here (the plugin renders Go-template functions only in {}); use the HCL function {f}() instead", RENDERED.join(", ")),
                    );
                }
            }
        }
    }
    plain_keys!(&mut d => c; skip_convert_to_template, onboot);

    // hardware
    if let Some(m) = d.uint::<u32>("memory") {
        c.memory = if m < 16 { 512 } else { m };
    }
    if let Some(b) = d.uint::<u32>("ballooning_minimum") {
        c.ballooning_minimum = b;
        if b > c.memory {
            d.err_at(
                "ballooning_minimum",
                format!(
                    "ballooning_minimum ({b}) must be lower than memory ({})",
                    c.memory
                ),
            );
        }
    }
    if let Some(v) = d.uint::<u32>("cores") {
        c.cores = v.max(1);
    }
    if let Some(v) = d.uint::<u32>("sockets") {
        c.sockets = v.max(1);
    }
    if let Some(v) = d.str("cpu_type") {
        if v.starts_with("host,") {
            d.err_at(
                "cpu_type",
                format!("cpu_type \"{v}\": CPU flags are not accepted here (plugin ≥ 1.2.3); use cpu_type = \"host\""),
            );
        }
        c.cpu_type = v;
    }
    plain_keys!(&mut d => c; numa);
    if let Some(v) = d.str("os") {
        const OS: &[&str] = &[
            "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26",
            "solaris", "other",
        ];
        if !OS.contains(&v.as_str()) {
            d.err_at("os", format!("os \"{v}\" is not one of {}", OS.join(", ")));
        }
        c.os = v;
    }
    plain_keys!(&mut d => c; bios);
    if let Some(b) = &c.bios {
        if b != "seabios" && b != "ovmf" {
            d.err_at(
                "bios",
                format!("bios \"{b}\" must be \"seabios\" or \"ovmf\""),
            );
        }
    }
    plain_keys!(&mut d => c; machine, boot);
    if let Some(b) = c.boot.as_deref() {
        if let Some(w) = legacy_boot_warning(b) {
            cx.warnings
                .push(Diag::warning(w).at(file, body.attrs.get("boot").map(|a| a.span.clone())));
        }
    }
    if let Some(v) = d.str("scsi_controller") {
        const SC: &[&str] = &[
            "lsi",
            "lsi53c810",
            "virtio-scsi-pci",
            "virtio-scsi-single",
            "megasas",
            "pvscsi",
        ];
        if !SC.contains(&v.as_str()) {
            d.err_at(
                "scsi_controller",
                format!("scsi_controller \"{v}\" is not one of {}", SC.join(", ")),
            );
        }
        c.scsi_controller = v;
    }
    if let Some(v) = d.bool("qemu_agent") {
        c.qemu_agent = v;
    }
    plain_keys!(&mut d => c; disable_kvm, serials);
    if c.serials.len() > 4 {
        d.err_at(
            "serials",
            format!(
                "too many serials: {} serials defined, but proxmox accepts 4 elements maximum",
                c.serials.len()
            ),
        );
    }
    for s in c.serials.clone() {
        if s != "socket" && !(s.starts_with("/dev/") && s.len() > 5) {
            d.err_at(
                "serials",
                format!(
                    "serials must respond to pattern \"/dev/.+\" or be \"socket\". It was \"{s}\""
                ),
            );
        }
    }
    plain_keys!(&mut d => c; qemu_additional_args, efidisk);

    if let Some(b) = d.block("vga") {
        c.vga = Some(decode_vga(b, d.errs));
    }
    if let Some(b) = d.block("efi_config") {
        let e = decode_efi(b, d.errs);
        if c.efidisk.is_some() {
            d.err_at(
                "efidisk",
                "both efi_config and efidisk cannot be set at the same time, consider defining only efi_config as efidisk is deprecated",
            );
        }
        c.efi_config = Some(e);
    } else if let Some(pool) = c.efidisk.clone() {
        cx.warnings.push(
            Diag::warning("efidisk is deprecated, please use efi_config instead")
                .at(file, body.attrs.get("efidisk").map(|a| a.span.clone())),
        );
        c.efi_config = Some(EfiConfig {
            efi_storage_pool: Some(pool),
            efi_type: Some("4m".into()),
            ..EfiConfig::default()
        });
    }
    if let Some(b) = d.block("tpm_config") {
        c.tpm_config = Some(decode_tpm(b, d.errs));
    }
    if let Some(b) = d.block("rng0") {
        c.rng0 = Some(decode_rng(b, d.errs, cx));
    }
    for (i, b) in d.blocks("pci_devices").into_iter().enumerate() {
        c.pci_devices.push(decode_pci(b, i, d.errs));
    }
    for (i, b) in d.blocks("disks").into_iter().enumerate() {
        c.disks
            .push(decode_disk(b, i, &c.scsi_controller, d.errs, cx));
    }
    for (i, b) in d.blocks("network_adapters").into_iter().enumerate() {
        c.network_adapters.push(decode_nic(b, i, d.errs));
    }

    if is_clone {
        decode_clone(&mut d, &mut c);
    } else {
        decode_isos(&mut d, &mut c, body, file, cx);
    }
    decode_rest(&mut d, &mut c, body, cx);
    d.finish();
    c
}

/// `clone_vm`, `clone_vm_id`, `full_clone`, `nameserver`, `searchdomain`, `ipconfig {}` with the
/// plugin's checks and messages.
fn decode_clone(d: &mut Dec, c: &mut ProxmoxIsoConfig) {
    plain_keys!(d => c; clone_vm);
    let id = d.uint::<u32>("clone_vm_id").filter(|i| *i != 0);
    if let Some(id) = id {
        if !(100..=999_999_999).contains(&id) {
            d.err_at("clone_vm_id", "clone_vm_id must be in range 100-999999999");
        }
    }
    c.clone_vm_id = id;
    if c.clone_vm.is_none()
        && c.clone_vm_id.is_none()
        && !d.failed("clone_vm")
        && !d.failed("clone_vm_id")
    {
        d.err("one of clone_vm or clone_vm_id must be specified");
    }
    if c.clone_vm.is_some() && c.clone_vm_id.is_some() {
        d.err_at(
            "clone_vm_id",
            "clone_vm and clone_vm_id cannot both be specified",
        );
    }
    if let Some(f) = d.bool("full_clone") {
        c.full_clone = f;
    }
    plain_keys!(d => c; nameserver);
    if let Some(ns) = c.nameserver.clone() {
        for n in ns.split(' ') {
            if n.parse::<std::net::IpAddr>().is_err() {
                d.err_at(
                    "nameserver",
                    format!("could not parse nameserver: ParseAddr({n:?}): not an IP address"),
                );
            }
        }
    }
    plain_keys!(d => c; searchdomain);
    for b in d.blocks("ipconfig") {
        let mut e = Dec::for_block(b, d.errs, "ipconfig").with_table("ipconfig");
        let mut ip = IpConfig::default();
        plain_keys!(&mut e => ip; ip, gateway, ip6, gateway6);
        let cidr = |v: &str, v6: bool| {
            v.split_once('/').is_some_and(|(a, n)| {
                let max = match a.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(_)) if !v6 => 32,
                    Ok(std::net::IpAddr::V6(_)) if v6 => 128,
                    _ => return false,
                };
                n.parse::<u8>().is_ok_and(|n| n <= max)
            })
        };
        if let Some(v) = ip.ip.as_deref().filter(|v| *v != "dhcp" && !v.is_empty()) {
            if !cidr(v, false) {
                e.err_at(
                    "ip",
                    format!("could not parse ipconfig.ip: invalid CIDR address: {v}"),
                );
            }
        }
        if let Some(v) = ip.gateway.as_deref().filter(|v| !v.is_empty()) {
            if v.parse::<std::net::Ipv4Addr>().is_err() {
                e.err_at(
                    "gateway",
                    format!(
                        "could not parse ipconfig.gateway: ParseAddr({v:?}): not an IPv4 address"
                    ),
                );
            }
        }
        if let Some(v) = ip
            .ip6
            .as_deref()
            .filter(|v| !["auto", "dhcp", ""].contains(v))
        {
            if !cidr(v, true) {
                e.err_at(
                    "ip6",
                    format!("could not parse ipconfig.ip6: invalid CIDR address: {v}"),
                );
            }
        }
        if let Some(v) = ip.gateway6.as_deref().filter(|v| !v.is_empty()) {
            if v.parse::<std::net::Ipv6Addr>().is_err() {
                e.err_at(
                    "gateway6",
                    format!(
                        "could not parse ipconfig.gateway6: ParseAddr({v:?}): not an IPv6 address"
                    ),
                );
            }
        }
        e.finish();
        c.ipconfig.push(ip);
    }
    if c.network_adapters.len() < c.ipconfig.len() {
        d.err(format!(
            "{} ipconfig blocks given, but only {} network interfaces defined",
            c.ipconfig.len(),
            c.network_adapters.len()
        ));
    }
}

/// `boot_iso {}`, the deprecated top-level `iso_*` keys and `additional_iso_files {}`.
fn decode_isos(
    d: &mut Dec,
    c: &mut ProxmoxIsoConfig,
    body: &EBody,
    file: &Arc<SourceFile>,
    cx: &mut Ctx,
) {
    // ISOs
    let boot_block = d.block("boot_iso");
    let mut boot = match boot_block {
        Some(b) => decode_iso(b, true, None, d.errs),
        None => IsoConfig {
            r#type: CdromBus::Ide,
            index: Some("2".into()),
            iso_target_extension: "iso".into(),
            ..IsoConfig::default()
        },
    };
    // deprecated top-level keys
    let mut used_deprecated = false;
    for key in DEPRECATED_ISO_KEYS {
        if d.has(key) {
            used_deprecated = true;
            let a = &body.attrs[*key];
            cx.warnings.push(
                Diag::warning(format!(
                    "'{key}' is deprecated and will be removed in a future release, define the boot iso options in a 'boot_iso' block"
                ))
                .at(&a.file, Some(a.span.clone())),
            );
        }
    }
    if used_deprecated {
        if let Some(v) = d.str("iso_file") {
            boot.iso_file.get_or_insert(v);
        }
        if let Some(v) = d.str("iso_url") {
            boot.iso_url.get_or_insert(v);
        }
        if let Some(v) = d.list("iso_urls") {
            if boot.iso_urls.is_empty() {
                boot.iso_urls = v;
            }
        }
        if let Some(v) = checksum(d, "iso_checksum", "boot_iso") {
            boot.iso_checksum.get_or_insert(v);
        }
        if let Some(v) = d.str("iso_storage_pool") {
            boot.iso_storage_pool.get_or_insert(v);
        }
        if let Some(v) = d.bool("iso_download_pve") {
            boot.iso_download_pve |= v;
        }
        if let Some(v) = d.bool("unmount_iso") {
            boot.unmount |= v;
        }
        if let Some(v) = d.str("iso_target_path") {
            boot.iso_target_path.get_or_insert(v);
        }
        if let Some(v) = d.str("iso_target_extension") {
            boot.iso_target_extension = v.to_lowercase();
        }
    }
    // an `iso {}` block (reported as unknown, "did you mean boot_iso") was meant as the boot ISO
    let misspelt_iso = body.blocks.iter().any(|b| b.ident == "iso");
    if !misspelt_iso
        && body.failed.is_empty()
        && boot_block.is_none_or(|b| b.body.failed.is_empty())
    {
        let failed = boot.iso_checksum.is_none()
            && (written(body, "iso_checksum")
                || boot_block.is_some_and(|b| written(&b.body, "iso_checksum")));
        check_iso(
            &boot,
            "boot_iso",
            boot_block
                .map(|b| (&b.file, b.span.clone()))
                .unwrap_or((file, d.span.clone())),
            failed,
            d.errs,
        );
    }
    c.boot_iso = boot;
    for (i, b) in d.blocks("additional_iso_files").into_iter().enumerate() {
        let iso = decode_iso(b, false, Some(i), d.errs);
        if b.body.failed.is_empty() {
            let failed = iso.iso_checksum.is_none() && written(&b.body, "iso_checksum");
            check_iso(
                &iso,
                &format!("additional_iso {i}"),
                (&b.file, b.span.clone()),
                failed,
                d.errs,
            );
        }
        c.additional_iso_files.push(iso);
    }
}

/// cloud-init, boot command, HTTP server and communicator keys.
fn decode_rest(d: &mut Dec, c: &mut ProxmoxIsoConfig, body: &EBody, cx: &mut Ctx) {
    // cloud-init
    c.cloud_init = d.flag("cloud_init");
    c.cloud_init_storage_pool = d.str("cloud_init_storage_pool");
    if let Some(t) = choice(d, "cloud_init_disk_type", CdromBus::parse, |t| {
        format!("invalid value for `cloud_init_disk_type` \"{t}\": only one of 'ide', 'scsi', 'sata' is valid")
    }) {
        c.cloud_init_disk_type = t;
    }
    c.cloud_init_disable_upgrade_packages = d.flag("cloud_init_disable_upgrade_packages");
    if c.cloud_init_disable_upgrade_packages && !c.cloud_init {
        let a = &body.attrs["cloud_init_disable_upgrade_packages"];
        cx.warnings.push(
            Diag::warning("cloud_init_disable_upgrade_packages has no effect without cloud_init = true (ciupgrade is set with the cloud-init drive)")
                .at(&a.file, Some(a.span.clone())),
        );
    }

    // boot
    plain_keys!(d => c; boot_command);
    if let Some(a) = body.attrs.get("boot_command") {
        check_boot_command(&c.boot_command, a, d.errs, cx);
    }
    if let Some(n) = d.dur_nanos("boot_wait") {
        c.boot_wait = match n {
            0 => Duration::from_secs(10),
            n if n < 0 => Duration::ZERO,
            n => Duration::from_nanos(n as u64),
        };
    }
    match d.dur("boot_key_interval") {
        Some(v) if !v.is_zero() => c.boot_key_interval = v,
        _ => {
            if let Some(e) = env_get(cx.env, "PACKER_KEY_INTERVAL") {
                match parse_go_duration(e) {
                    Ok(n) if n > 0 => c.boot_key_interval = Duration::from_nanos(n as u64),
                    Ok(_) => {}
                    Err(m) => d.err(format!(
                        "PACKER_KEY_INTERVAL: {m} (it sets the delay between boot command keys, e.g. \"100ms\"; unset it or fix it)"
                    )),
                }
            }
        }
    }
    c.boot_keygroup_interval = d.dur("boot_keygroup_interval");

    // http
    plain_keys!(d => c; http_directory, http_content);
    if c.http_directory.is_some() && !c.http_content.is_empty() {
        d.err_at(
            "http_content",
            "http_directory and http_content cannot both be set: use one of them",
        );
    }
    if let Some(v) = d.uint::<u16>("http_port_min") {
        c.http_port_min = v;
    }
    if let Some(v) = d.uint::<u16>("http_port_max") {
        c.http_port_max = v;
    }
    if c.http_port_min > c.http_port_max {
        d.err_at(
            "http_port_min",
            "http_port_min must be less than http_port_max",
        );
    }
    plain_keys!(d => c; http_bind_address, http_interface);
    if c.http_interface.is_some()
        && c.http_bind_address
            .as_deref()
            .is_some_and(|a| a != "0.0.0.0")
    {
        d.err_at(
            "http_interface",
            "http_interface and http_bind_address are mutually exclusive",
        );
    }
    if let Some(p) = d.str("http_network_protocol") {
        if !["tcp", "tcp4", "tcp6", "unix", "unixpacket"].contains(&p.as_str()) {
            d.err_at(
                "http_network_protocol",
                format!("http_network_protocol \"{p}\" must be one of tcp, tcp4, tcp6, unix, unixpacket"),
            );
        }
        c.http_network_protocol = p;
    }

    // communicator
    c.communicator = decode_communicator(d);
    plain_keys!(d => c; vm_interface);
}

fn decode_communicator(d: &mut Dec) -> Communicator {
    let mut m = Communicator::default();
    if let Some(t) = d.str("communicator") {
        if !["ssh", "winrm", "none"].contains(&t.as_str()) {
            d.err_at(
                "communicator",
                format!("communicator \"{t}\" must be one of ssh, winrm, none"),
            );
        } else if t == "winrm" {
            d.err_at(
                "communicator",
                "not supported by kiln: communicator = \"winrm\" (kiln has no WinRM communicator; use \"ssh\", or \"none\" when nothing runs in the guest)",
            );
        }
        m.r#type = t;
    }
    if let Some(v) = d.dur("pause_before_connecting") {
        m.pause_before_connecting = v;
    }
    plain_keys!(d => m; ssh_host);
    if let Some(v) = d.uint::<u16>("ssh_port") {
        if v != 0 {
            m.ssh_port = v;
        }
    }
    plain_keys!(d => m;
        ssh_username,
        ssh_password,
        ssh_private_key_file,
        ssh_certificate_file,
        ssh_agent_auth,
        ssh_keypair_name,
        temporary_key_pair_name,
        temporary_key_pair_type,
        temporary_key_pair_bits,
        ssh_clear_authorized_keys,
        ssh_ciphers,
        ssh_key_exchange_algorithms,
        ssh_pty,
    );
    let t1 = d.dur("ssh_timeout");
    let t2 = d.dur("ssh_wait_timeout");
    if let Some(t) = t1.or(t2) {
        if !t.is_zero() {
            m.ssh_timeout = t;
        }
    }
    if let Some(v) = d.uint::<u32>("ssh_handshake_attempts") {
        if v != 0 {
            m.ssh_handshake_attempts = v;
        }
    }
    plain_keys!(d => m; ssh_disable_agent_forwarding);
    if let Some(v) = d.dur("ssh_keep_alive_interval") {
        m.ssh_keep_alive_interval = v;
    }
    if let Some(v) = d.dur("ssh_read_write_timeout") {
        m.ssh_read_write_timeout = v;
    }
    plain_keys!(d => m; ssh_file_transfer_method);
    if let Some(f) = &m.ssh_file_transfer_method {
        if f != "scp" && f != "sftp" {
            d.err_at(
                "ssh_file_transfer_method",
                "ssh_file_transfer_method must be \"scp\" or \"sftp\"",
            );
        }
    }
    plain_keys!(d => m; ssh_bastion_host);
    if let Some(v) = d.uint::<u16>("ssh_bastion_port") {
        if v != 0 {
            m.ssh_bastion_port = v;
        }
    }
    plain_keys!(d => m;
        ssh_bastion_username,
        ssh_bastion_password,
        ssh_bastion_agent_auth,
        ssh_bastion_interactive,
        ssh_bastion_private_key_file,
        ssh_bastion_certificate_file,
    );
    if m.ssh_bastion_host.is_some() && m.r#type == "ssh" {
        if m.ssh_bastion_username.is_none() && !d.failed("ssh_bastion_username") {
            d.err_at(
                "ssh_bastion_host",
                "ssh_bastion_username must be specified with ssh_bastion_host (the user kiln logs in as on the jump host)",
            );
        }
        if !m.ssh_bastion_agent_auth
            && m.ssh_bastion_password.is_none()
            && m.ssh_bastion_private_key_file.is_none()
            && !d.failed("ssh_bastion_password")
            && !d.failed("ssh_bastion_private_key_file")
        {
            d.err_at(
                "ssh_bastion_host",
                "ssh_bastion_password or ssh_bastion_private_key_file must be specified (or ssh_bastion_agent_auth = true)",
            );
        }
    }
    plain_keys!(d => m; ssh_proxy_host);
    if let Some(v) = d.uint::<u16>("ssh_proxy_port") {
        if v != 0 {
            m.ssh_proxy_port = v;
        }
    }
    plain_keys!(d => m;
        ssh_proxy_username,
        ssh_proxy_password,
        ssh_local_tunnels,
        ssh_remote_tunnels,
        winrm_username,
        winrm_password,
        winrm_host,
    );
    m.winrm_port = d.uint::<u16>("winrm_port").filter(|p| *p != 0);
    if let Some(v) = d.dur("winrm_timeout") {
        if !v.is_zero() {
            m.winrm_timeout = v;
        }
    }
    plain_keys!(d => m; winrm_use_ssl, winrm_insecure, winrm_use_ntlm, winrm_no_proxy);
    if m.r#type == "ssh" && m.ssh_username.is_none() && !d.failed("ssh_username") {
        d.err("An ssh_username must be specified (the user kiln logs in as over SSH)");
    }
    if m.r#type == "winrm" && m.winrm_username.is_none() && !d.failed("winrm_username") {
        d.err("winrm_username must be specified");
    }
    m
}

fn decode_vga(b: &EBlock, errs: &mut Vec<Diag>) -> Vga {
    let mut d = Dec::for_block(b, errs, "vga").with_table("vga");
    let mut v = Vga::default();
    plain_keys!(&mut d => v; r#type, memory);
    if let Some(t) = &v.r#type {
        const T: &[&str] = &[
            "cirrus", "none", "qxl", "qxl2", "qxl3", "qxl4", "serial0", "serial1", "serial2",
            "serial3", "std", "virtio", "vmware",
        ];
        if !T.contains(&t.as_str()) {
            d.err_at(
                "type",
                format!("vga type \"{t}\" is not one of {}", T.join(", ")),
            );
        }
    }
    d.finish();
    v
}

fn decode_efi(b: &EBlock, errs: &mut Vec<Diag>) -> EfiConfig {
    let mut d = Dec::for_block(b, errs, "efi_config").with_table("efi_config");
    let mut e = EfiConfig::default();
    plain_keys!(&mut d => e; efi_storage_pool, efi_type, efi_format, pre_enrolled_keys);
    if e.efi_storage_pool.is_none() && (e.efi_type.is_some() || e.pre_enrolled_keys) {
        d.err("efi_storage_pool not set for efi_config");
    }
    if e.efi_storage_pool.is_some() && e.efi_type.is_none() {
        e.efi_type = Some("4m".into());
    }
    if let Some(t) = &e.efi_type {
        if t != "2m" && t != "4m" {
            d.err_at("efi_type", "efi_type must be \"2m\" or \"4m\"");
        }
    }
    d.finish();
    e
}

fn decode_tpm(b: &EBlock, errs: &mut Vec<Diag>) -> Tpm {
    let mut d = Dec::for_block(b, errs, "tpm_config").with_table("tpm_config");
    let mut t = Tpm::default();
    plain_keys!(&mut d => t; tpm_storage_pool);
    t.tpm_version = d.str("tpm_version").unwrap_or_else(|| "v2.0".into());
    if t.tpm_storage_pool.is_none() {
        d.err("tpm_storage_pool not set for tpm_config");
    }
    if t.tpm_version != "v1.2" && t.tpm_version != "v2.0" {
        d.err_at(
            "tpm_version",
            "TPM Version must be one of \"v1.2\", \"v2.0\"",
        );
    }
    d.finish();
    t
}

fn decode_rng(b: &EBlock, errs: &mut Vec<Diag>, cx: &mut Ctx) -> Rng {
    let mut d = Dec::for_block(b, errs, "rng0").with_table("rng0");
    let r = Rng {
        source: d.req_str("source", "source must be set for rng0"),
        max_bytes: d.uint::<u32>("max_bytes").unwrap_or(0),
        period: d.uint::<u32>("period").unwrap_or(0),
    };
    if !r.source.is_empty()
        && !["/dev/urandom", "/dev/random", "/dev/hwrng"].contains(&r.source.as_str())
    {
        d.err_at(
            "source",
            "source must be one of \"/dev/urandom\", \"/dev/random\", \"/dev/hwrng\"",
        );
    }
    if r.max_bytes == 0 {
        cx.warnings.push(
            Diag::warning("rng0: max_bytes is 0 and will not be sent (no limit)")
                .at(&b.file, Some(b.span.clone())),
        );
    }
    d.finish();
    r
}

fn decode_pci(b: &EBlock, i: usize, errs: &mut Vec<Diag>) -> PciDevice {
    let mut d = Dec::for_block(b, errs, format!("pci_devices[{i}]")).with_table("pci_devices");
    let mut p = PciDevice::default();
    plain_keys!(&mut d => p;
        host,
        mapping,
        device_id,
        vendor_id,
        sub_device_id,
        sub_vendor_id,
        legacy_igd,
        pcie,
        mdev,
        hide_rombar,
        romfile,
        x_vga,
    );
    if p.host.is_some() == p.mapping.is_some() {
        d.err(format!(
            "pci_devices[{i}]: exactly one of host or mapping must be set"
        ));
    }
    d.finish();
    p
}

/// A key whose value is one of a closed set: `None` when unset; an error at the value (with
/// `msg`, given the value) when it is not one of the set.
fn choice<T>(
    d: &mut Dec,
    key: &'static str,
    parse: fn(&str) -> Option<T>,
    msg: impl FnOnce(&str) -> String,
) -> Option<T> {
    let v = d.str(key)?;
    let r = parse(&v);
    if r.is_none() {
        d.err_at(key, msg(&v));
    }
    r
}

fn decode_disk(
    b: &EBlock,
    i: usize,
    scsi_controller: &str,
    errs: &mut Vec<Diag>,
    cx: &mut Ctx,
) -> Disk {
    let mut d = Dec::for_block(b, errs, format!("disks[{i}]")).with_table("disks");
    // the plugin logs "Disk N type not set, using default 'scsi'" for any other value
    let bus = match d.str("type") {
        None => Bus::Scsi,
        Some(t) => Bus::parse(&t).unwrap_or_else(|| {
            let a = &b.body.attrs["type"];
            cx.warnings.push(
                Diag::warning(format!(
                    "disks[{i}]: unknown disk type \"{t}\" (not {}), using scsi",
                    Bus::names()
                ))
                .at(&a.file, Some(a.span.clone())),
            );
            Bus::Scsi
        }),
    };
    let disk = Disk {
        storage_pool: d.req_str(
            "storage_pool",
            &format!("disks[{i}].storage_pool must be specified"),
        ),
        storage_pool_type: d.str("storage_pool_type"),
        disk_size: d.str("disk_size").unwrap_or_else(|| "20G".into()),
        format: choice(&mut d, "format", DiskFormat::parse, |v| {
            format!(
                "disks[{i}].format \"{v}\" is not one of {} (the formats PVE accepts)",
                DiskFormat::names()
            )
        })
        .unwrap_or(DiskFormat::Raw),
        cache_mode: choice(&mut d, "cache_mode", CacheMode::parse, |v| {
            format!(
                "disks[{i}].cache_mode \"{v}\" is not one of {}",
                CacheMode::names()
            )
        })
        .unwrap_or(CacheMode::None),
        io_thread: d.flag("io_thread"),
        asyncio: choice(&mut d, "asyncio", AsyncIo::parse, |v| {
            format!("disks[{i}].asyncio \"{v}\": AsyncIO must be native, threads or io_uring")
        }),
        discard: d.flag("discard"),
        ssd: d.flag("ssd"),
        exclude_from_backup: d.flag("exclude_from_backup"),
        r#type: bus,
    };
    if disk.storage_pool_type.is_some() {
        let a = &b.body.attrs["storage_pool_type"];
        cx.warnings.push(
            Diag::warning(format!(
                "disks[{i}].storage_pool_type is deprecated and ignored"
            ))
            .at(&a.file, Some(a.span.clone())),
        );
    }
    // the rule the build allocates by (kiln-build's disk parameter)
    if let Err(m) = crate::model::size::ByteSize::parse(&disk.disk_size) {
        d.err_at(
            "disk_size",
            format!("disks[{i}].disk_size \"{}\" {m}", disk.disk_size),
        );
    }
    if disk.ssd && disk.r#type == Bus::Virtio {
        d.err_at("ssd", "SSD emulation is not supported on virtio disks");
    }
    if disk.io_thread
        && (scsi_controller != "virtio-scsi-single" && disk.r#type == Bus::Scsi
            || matches!(disk.r#type, Bus::Ide | Bus::Sata))
    {
        d.err_at(
            "io_thread",
            "io_thread requires scsi_controller \"virtio-scsi-single\" and a scsi or virtio disk",
        );
    }
    d.finish();
    disk
}

fn decode_nic(b: &EBlock, i: usize, errs: &mut Vec<Diag>) -> NetworkAdapter {
    let mut d =
        Dec::for_block(b, errs, format!("network_adapters[{i}]")).with_table("network_adapters");
    // the plugin passes any model through; PVE refuses one outside its list at create time
    let model = choice(&mut d, "model", NicModel::parse, |v| {
        format!(
            "network_adapters[{i}].model \"{v}\" is not one of {} (the models PVE accepts)",
            NicModel::names()
        )
    });
    let model_refused = model.is_none() && written(&b.body, "model");
    let n = NetworkAdapter {
        bridge: d.req_str(
            "bridge",
            &format!("network_adapters[{i}].bridge must be specified"),
        ),
        model: model.unwrap_or(NicModel::E1000),
        mac_address: d.str("mac_address"),
        vlan_tag: d.str("vlan_tag"),
        firewall: d.flag("firewall"),
        mtu: d.uint::<u32>("mtu").filter(|m| *m != 0),
        packet_queues: d.uint::<u32>("packet_queues").filter(|m| *m != 0),
    };
    // a refused model was reported; packet_queues is only checked against a known one
    if n.packet_queues.is_some() && n.model != NicModel::Virtio && !model_refused {
        d.err_at(
            "packet_queues",
            format!("network_adapters[{i}].packet_queues can only be set for 'virtio' driver"),
        );
    }
    if n.mtu.is_some_and(|m| m > 65520) {
        d.err_at(
            "mtu",
            format!("network_adapters[{i}].mtu must be between 0 and 65520"),
        );
    }
    d.finish();
    n
}

/// PVE's legacy boot string (`[acdn]{1,4}`, before PVE 6.2) reads `c` as the disk, `d` as the
/// CD-ROM and `n` as the network; the plugin's documentation has `c` and `d` the other way round.
/// Without `d` the installer ISO never boots (seen in the corpus: `boot = "c"`).
fn legacy_boot_warning(boot: &str) -> Option<String> {
    let without_cdrom = crate::model::legacy_boot_letters(boot).is_some_and(|l| !l.contains('d'));
    without_cdrom.then(|| {
        format!(
            "boot = \"{boot}\" is PVE's legacy boot order, in which c is the disk, d the CD-ROM and n the network (the plugin's documentation has c and d the other way round): this VM will not boot the ISO. Use e.g. boot = \"order=scsi0;ide2\" (disk first, then the ISO), or leave boot unset"
        )
    })
}

fn decode_iso(b: &EBlock, is_boot: bool, idx: Option<usize>, errs: &mut Vec<Diag>) -> IsoConfig {
    let what = match idx {
        Some(i) => format!("additional_iso_files[{i}]"),
        None => "boot_iso".to_string(),
    };
    let mut d = Dec::for_block(b, errs, what.clone()).with_table("boot_iso");
    const NOT_VIRTIO: &str =
        "ISOs must be of type ide, sata or scsi. VirtIO not supported by Proxmox for ISO devices";
    let mut bus = choice(&mut d, "type", CdromBus::parse, |v| {
        format!("{what}.type \"{v}\": {NOT_VIRTIO}")
    });
    let mut iso = IsoConfig {
        r#type: CdromBus::Ide,
        index: d.str("index"),
        device: d.str("device"),
        iso_file: d.str("iso_file"),
        iso_url: d.str("iso_url"),
        iso_urls: d.list_or_empty("iso_urls"),
        iso_checksum: checksum(&mut d, "iso_checksum", &what),
        iso_target_path: d.str("iso_target_path"),
        iso_target_extension: d
            .str("iso_target_extension")
            .map(|s| s.to_lowercase())
            .unwrap_or_else(|| "iso".into()),
        iso_storage_pool: d.str("iso_storage_pool"),
        iso_download_pve: d.flag("iso_download_pve"),
        unmount: d.flag("unmount"),
        keep_cdrom_device: d.flag("keep_cdrom_device"),
        cd_files: d.list_or_empty("cd_files"),
        cd_content: d.map("cd_content"),
        cd_label: d.str("cd_label"),
    };
    if let Some(dev) = iso.device.clone() {
        // the deprecated `ide2` form: its bus and index
        match Bus::parse_slot(&dev).and_then(|(b, n)| Some((CdromBus::parse(b.name())?, n))) {
            Some((b, n)) => {
                bus = Some(b);
                iso.index = Some(n.to_string());
            }
            None => d.err_at(
                "device",
                format!("device \"{dev}\" must be ideN (N ≤ 3), sataN (N ≤ 5) or scsiN (N ≤ 30)"),
            ),
        }
    }
    match bus {
        Some(b) => iso.r#type = b,
        None => {
            if is_boot && iso.index.is_none() && !written(&b.body, "type") {
                iso.index = Some("2".into());
            }
        }
    }
    if !is_boot {
        if let Some(f) = &iso.iso_file {
            let ok = f.find(":iso/").is_some_and(|p| p > 0 && f.len() > p + 5);
            if !ok {
                d.err_at(
                    "iso_file",
                    format!("iso_file \"{f}\" must look like <storage>:iso/<file>"),
                );
            }
        }
    }
    d.finish();
    iso
}

/// `checksum_failed`: an `iso_checksum` was written but refused (already reported at its line).
fn check_iso(
    iso: &IsoConfig,
    what: &str,
    at: (&Arc<SourceFile>, Range<usize>),
    checksum_failed: bool,
    errs: &mut Vec<Diag>,
) {
    let has_file = iso.iso_file.is_some();
    let has_url = iso.iso_url.is_some() || !iso.iso_urls.is_empty();
    let has_cd = !iso.cd_files.is_empty() || !iso.cd_content.is_empty();
    let n = [has_file, has_url, has_cd].iter().filter(|b| **b).count();
    let e = |m: String| Diag::error(m).at(at.0, Some(at.1.clone()));
    if n != 1 {
        errs.push(e(format!(
            "one of iso_file, iso_url, or a combination of cd_files and cd_content must be specified for {what}"
        )));
    }
    if iso.iso_url.is_some() && !iso.iso_urls.is_empty() {
        errs.push(e(format!(
            "{what}: only one of iso_url and iso_urls may be set"
        )));
    }
    if has_url && iso.iso_storage_pool.is_none() {
        errs.push(e(format!(
            "when specifying iso_url in a {what} block, iso_storage_pool must also be specified"
        )));
    }
    if has_url && iso.iso_checksum.is_none() && !checksum_failed {
        errs.push(e(format!(
            "{what}: iso_checksum is required with iso_url (use \"none\" to skip verification)"
        )));
    }
    if has_cd && iso.iso_storage_pool.is_none() {
        errs.push(e(format!(
            "{what} storage_pool not set for storage of generated ISO from cd_files or cd_content"
        )));
    }
    if iso.iso_download_pve && iso.iso_url.is_none() && iso.iso_urls.is_empty() {
        errs.push(e(
            "iso_download_pve can only be used together with iso_url".into()
        ));
    }
}

/// Whether `key` is set to something other than null or "" in `body`.
fn written(body: &EBody, key: &str) -> bool {
    body.attrs.get(key).is_some_and(|a| match &a.value {
        hcl::Value::Null => false,
        hcl::Value::String(s) => !s.is_empty(),
        _ => true,
    })
}

/// `iso_checksum`, parsed once by the parser the ISO fetcher's plan is made of; an invalid value
/// is an error at its line (`None` then).
fn checksum(
    d: &mut Dec,
    key: &'static str,
    what: &str,
) -> Option<crate::model::checksum::ChecksumSpec> {
    let v = d.str(key)?;
    match crate::model::checksum::ChecksumSpec::parse(&v) {
        Ok(spec) => Some(spec),
        Err(e) => {
            d.err_at(key, format!("{what}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod legacy_boot_tests {
    use super::legacy_boot_warning;

    #[test]
    fn a_legacy_boot_string_without_the_cdrom_is_warned_about() {
        let w = legacy_boot_warning("c").unwrap_or_default();
        assert!(w.contains("c is the disk, d the CD-ROM"), "{w}");
        assert!(w.contains("will not boot the ISO"), "{w}");
        assert!(legacy_boot_warning("cn").is_some());
        // with d (the CD-ROM), or in the order= format, or unset: nothing to say
        for ok in ["cdn", "dc", "d", "order=scsi0;ide2", "order=virtio0", ""] {
            assert_eq!(legacy_boot_warning(ok), None, "{ok}");
        }
    }
}
