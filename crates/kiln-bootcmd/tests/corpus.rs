//! Every literal boot_command of the Packer corpus (extracted by
//! `cargo xtask bootcmd-corpus`) renders and parses, and its exact sendkey
//! sequence matches `tests/corpus/expected.txt`. Regenerate the golden file
//! with `KILN_UPDATE_GOLDEN=1 cargo test -p kiln-bootcmd --test corpus` and
//! review the diff.

use kiln_bootcmd::gotmpl::Lookup;
use kiln_bootcmd::{plan, Action};
use std::time::Duration;

struct TestData;

impl Lookup for TestData {
    fn field(&self, name: &str) -> Option<String> {
        match name {
            "HTTPIP" => Some("10.0.2.2".into()),
            "HTTPPort" => Some("8888".into()),
            _ => None,
        }
    }
    fn user(&self, name: &str) -> Option<Option<String>> {
        // legacy JSON templates: `{{ user `x` }}` → a visible placeholder
        Some(Some(format!("user-{name}")))
    }
}

/// HCL interpolations (`${local.x}`) are resolved by kiln-config before the
/// boot command is typed; stand in a fixed value.
fn resolve_hcl(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i..].find('}') {
            Some(j) => {
                out.push_str("hclvalue");
                rest = &rest[i + j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn render_actions(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| match a {
            Action::Key(k) => k.clone(),
            Action::Wait(d) => format!("<wait {}ms>", d.as_millis()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn corpus_boot_commands_parse_to_golden_sequences() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("boot_commands.json")).unwrap())
            .unwrap();
    let entries = doc["entries"].as_array().unwrap();
    assert!(
        entries.len() >= 25,
        "corpus extraction shrank: {}",
        entries.len()
    );
    let mut golden = String::new();
    for e in entries {
        let cmds: Vec<String> = e["boot_command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| resolve_hcl(s.as_str().unwrap()))
            .collect();
        let src = e["sources"][0].as_str().unwrap();
        let p = plan(&cmds, &TestData, Duration::from_millis(5))
            .unwrap_or_else(|err| panic!("{src}: {err}"));
        let actions: Vec<Action> = p.steps.iter().map(|s| s.action.clone()).collect();
        // every key part is a real QEMU key name
        for a in &actions {
            if let Action::Key(k) = a {
                for part in k.split('-') {
                    assert!(
                        kiln_bootcmd::qcodes::QKEYCODES.contains(&part),
                        "{src}: {part} is not a QEMU key name"
                    );
                }
            }
        }
        golden.push_str(&format!("# {src}\n{}\n\n", render_actions(&actions)));
    }
    let path = dir.join("expected.txt");
    if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &golden).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap();
    if want != golden {
        for (i, (a, b)) in want.lines().zip(golden.lines()).enumerate() {
            assert_eq!(a, b, "expected.txt line {} differs", i + 1);
        }
        assert_eq!(
            want.lines().count(),
            golden.lines().count(),
            "line count differs"
        );
    }
}

/// Hand-checked sequences (independent of the golden file).
#[test]
fn hand_checked_corpus_examples() {
    let keys = |cmds: &[&str]| {
        let cmds: Vec<String> = cmds.iter().map(|s| s.to_string()).collect();
        render_actions(
            &plan(&cmds, &TestData, Duration::ZERO)
                .unwrap()
                .steps
                .into_iter()
                .map(|s| s.action)
                .collect::<Vec<_>>(),
        )
    };
    // Ubuntu 22.04+ GRUB edit (lsampaioweb, AnH3LL, jbowdre …)
    assert_eq!(
        keys(&[r"e<down><down><down><end> autoinstall ds=nocloud-net\;s=http://{{ .HTTPIP }}:{{ .HTTPPort }}/<f10>"]),
        "e down down down end spc a u t o i n s t a l l spc d s equal n o c l o u d minus n e t backslash semicolon s equal h t t p shift-semicolon slash slash 1 0 dot 0 dot 2 dot 2 shift-semicolon 8 8 8 8 slash f10"
    );
    // GRUB command line (marcinbojko): quotes and waits with units
    assert_eq!(
        keys(&["<wait3>c<wait3>ds='x;y' <enter><wait5s>"]),
        "<wait 3000ms> c <wait 3000ms> d s equal apostrophe x semicolon y apostrophe spc ret <wait 5000ms>"
    );
    // barstown: Ctrl-X and Alt-F2 chords
    assert_eq!(
        keys(&["<leftCtrlOn><wait>x<wait><leftCtrlOff><wait10>", "<leftAltOn><wait><f2><wait><leftAltOff><wait2>"]),
        "<wait 1000ms> ctrl-x <wait 1000ms> <wait 10000ms> <wait 1000ms> alt-f2 <wait 1000ms> <wait 2000ms>"
    );
    // EduardSchwarzkopf: <wait1m>
    assert_eq!(keys(&["<enter><wait1m>p"]), "ret <wait 60000ms> p");
}
