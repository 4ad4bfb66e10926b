//! The small part of Go's `text/template` that provisioner settings use: `{{ .Name }}` and the
//! functions `{{ build_name }}` / `{{ build_type }}`, with `{{-`/`-}}` whitespace trimming.

/// A template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template:?}: unknown value `{name}` (available here: {available})")]
    Unknown {
        template: String,
        name: String,
        available: String,
    },
    #[error("template {template:?}: unclosed `{{{{`")]
    Unclosed { template: String },
    #[error("template {template:?}: `{{{{ {action} }}}}` is not supported by kiln (only `{{{{ .Name }}}}`, `{{{{ build_name }}}}`, `{{{{ build_type }}}}`)")]
    Unsupported { template: String, action: String },
}

/// Render `tpl`, asking `lookup` for each name (`Vars` for `{{ .Vars }}`, `build_name` for
/// `{{ build_name }}`). `available` lists the names for error messages.
pub fn render(
    tpl: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    available: &[&str],
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(tpl.len());
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError::Unclosed {
                template: tpl.to_string(),
            });
        };
        let mut action = &after[..end];
        let mut tail = &after[end + 2..];
        if let Some(a) = action.strip_prefix('-') {
            action = a;
            before = before.trim_end();
        }
        if let Some(a) = action.strip_suffix('-') {
            action = a;
            tail = tail.trim_start();
        }
        out.push_str(before);
        let action = action.trim();
        let name = if let Some(n) = action.strip_prefix('.') {
            n
        } else if action == "build_name" || action == "build_type" {
            action
        } else if action.starts_with("/*") && action.ends_with("*/") {
            // a comment
            rest = tail;
            continue;
        } else {
            return Err(TemplateError::Unsupported {
                template: tpl.to_string(),
                action: action.to_string(),
            });
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(TemplateError::Unsupported {
                template: tpl.to_string(),
                action: action.to_string(),
            });
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(TemplateError::Unknown {
                    template: tpl.to_string(),
                    name: name.to_string(),
                    available: available.join(", "),
                })
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lk(name: &str) -> Option<String> {
        match name {
            "Path" => Some("/tmp/script_1.sh".into()),
            "Vars" => Some("A='1' ".into()),
            "build_name" => Some("ubuntu".into()),
            _ => None,
        }
    }

    #[test]
    fn packer_default_execute_command() {
        let r = render("chmod +x {{.Path}}; {{.Vars}} {{.Path}}", &lk, &[]).expect("render");
        assert_eq!(r, "chmod +x /tmp/script_1.sh; A='1'  /tmp/script_1.sh");
    }

    #[test]
    fn spaces_trim_and_functions() {
        assert_eq!(
            render(
                "echo '{{ .Vars }}' | sudo -S -E sh -eux '{{ .Path }}'",
                &lk,
                &[]
            )
            .expect("r"),
            "echo 'A='1' ' | sudo -S -E sh -eux '/tmp/script_1.sh'"
        );
        assert_eq!(
            render("a {{- .Path -}} b", &lk, &[]).expect("r"),
            "a/tmp/script_1.shb"
        );
        assert_eq!(render("{{ build_name }}", &lk, &[]).expect("r"), "ubuntu");
        assert_eq!(render("no templates", &lk, &[]).expect("r"), "no templates");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = render("{{ .Nope }}", &lk, &["Path", "Vars"]).expect_err("unknown");
        assert!(e.to_string().contains("`Nope`"), "{e}");
        assert!(e.to_string().contains("Path, Vars"), "{e}");
        assert!(matches!(
            render("{{ .Path ", &lk, &[]),
            Err(TemplateError::Unclosed { .. })
        ));
        assert!(matches!(
            render("{{ user `x` }}", &lk, &[]),
            Err(TemplateError::Unsupported { .. })
        ));
    }
}
