//! `kiln validate` on a boot command with a typo: exit 1, the file:line of the typo and the
//! suggestion on stderr (issue 13).

use std::process::Command;

#[test]
fn a_boot_command_typo_fails_validation_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "source \"proxmox-iso\" \"t\" {\n  proxmox_url  = \"https://pve.example:8006/api2/json\"\n  username     = \"root@pam\"\n  password     = \"pw\"\n  node         = \"pve\"\n  ssh_username = \"u\"\n  boot_iso { iso_file = \"local:iso/a.iso\" }\n  boot_command = [\n    \"<esc><wait>\",\n    \"linux autoinstall<enterr>\",\n  ]\n}\nbuild { sources = [\"source.proxmox-iso.t\"] }\n";
    std::fs::write(dir.path().join("t.pkr.hcl"), text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("validate")
        .arg(dir.path())
        .env_remove("PACKER_KEY_INTERVAL")
        .env("NO_COLOR", "1")
        .output()
        .expect("run kiln");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("did you mean `<enter>`?"), "{all}");
    assert!(all.contains("t.pkr.hcl:10:"), "{all}");

    // and without the typo it validates
    std::fs::write(
        dir.path().join("t.pkr.hcl"),
        text.replace("<enterr>", "<enter>"),
    )
    .expect("write");
    let ok = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("run kiln");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
