//! Go `text/template` strings in provisioner settings (`execute_command`, `inventory_file_template`,
//! `extra_arguments`…), rendered with kiln-bootcmd's interpolator: `{{ .Name }}`, trim markers,
//! comments, pipes, and the functions `build_name`, `build_type`, `timestamp`, `uuid`, `upper`…

use kiln_bootcmd::gotmpl;

/// A template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template:?}: {message}{}", available_hint(.available))]
pub struct TemplateError {
    pub template: String,
    pub message: String,
    pub available: Vec<String>,
}

fn available_hint(a: &[String]) -> String {
    if a.is_empty() {
        String::new()
    } else {
        format!(" (available here: {})", a.join(", "))
    }
}

struct Adapter<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    available: &'a [&'a str],
}

impl gotmpl::Lookup for Adapter<'_> {
    fn field(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }
    fn function(&self, name: &str, args: &[String]) -> Option<Result<String, String>> {
        match name {
            "build_name" | "build_type" if args.is_empty() => (self.lookup)(name).map(Ok),
            _ => None,
        }
    }
    fn field_names(&self) -> Vec<String> {
        self.available.iter().map(|s| s.to_string()).collect()
    }
}

/// Render `tpl`, asking `lookup` for each name (`Vars` for `{{ .Vars }}`, `build_name` for
/// `{{ build_name }}`). `available` lists the names for error messages.
pub fn render(
    tpl: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    available: &[&str],
) -> Result<String, TemplateError> {
    if !tpl.contains("{{") {
        return Ok(tpl.to_string());
    }
    gotmpl::render(tpl, &Adapter { lookup, available }).map_err(|e| TemplateError {
        template: tpl.to_string(),
        message: e.to_string(),
        available: available.iter().map(|s| s.to_string()).collect(),
    })
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
        assert_eq!(
            render("{{ build_name | upper }}", &lk, &[]).expect("r"),
            "UBUNTU"
        );
        assert_eq!(render("no templates", &lk, &[]).expect("r"), "no templates");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = render("{{ .Nope }}", &lk, &["Path", "Vars"]).expect_err("unknown");
        assert!(e.to_string().contains("Nope"), "{e}");
        assert!(e.to_string().contains("Path, Vars"), "{e}");
        assert!(render("{{ .Path ", &lk, &[]).is_err());
        assert!(render("{{ nosuchfunc }}", &lk, &[]).is_err());
    }
}
