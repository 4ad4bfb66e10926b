//! (c) Bad autoinstall configs: the reason is printed on the serial console, the installer stays
//! up (as subiquity falls back to interactive mode) and the disk is not touched. Also covers the
//! other seed forms: quoted `ds='nocloud-net;seedfrom=URL'` and `ds=nocloud;s=/cidata/` (a CD-ROM
//! labelled cidata).
mod common;
use common::*;
use kiln_testguest::http::SeedServer;
use kiln_testguest::qemu::{Net, Spec};
use kiln_testguest::qmp::Qmp;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

enum Seed {
    Http { ds: &'static str },
    Cidata,
}

fn rejected(name: &str, user_data: &str, seed: Seed, reason: &str) {
    let iso = must(kiln_testguest::iso_path(), "test-guest ISO");
    let tmp = workdir();
    let dir = tmp.path();
    let mut ph = Phases::new(name);
    let server = must(
        SeedServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            seed_files(user_data),
            None,
        ),
        "seed HTTP server",
    );
    // raw sparse disk: "untouched" = still no allocated block afterwards
    let disk = dir.join("disk.raw");
    create_disk(&disk, "4G");
    let mut spec = Spec::new(
        dir,
        &iso,
        &disk,
        Net::User {
            ssh_port: free_port(),
        },
    );
    let ds = match seed {
        Seed::Http { ds } => ds.replace(
            "{url}",
            &format!("http://10.0.2.2:{}/", server.addr().port()),
        ),
        Seed::Cidata => {
            let src = dir.join("cidata");
            must(std::fs::create_dir_all(&src), "mkdir cidata");
            must(std::fs::write(src.join("user-data"), user_data), "write");
            must(
                std::fs::write(src.join("meta-data"), "instance-id: x\n"),
                "write",
            );
            let seed_iso = dir.join("seed.iso");
            must(
                kiln_testguest::run(
                    Command::new("xorriso")
                        .args(["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o"])
                        .arg(&seed_iso)
                        .arg(&src),
                ),
                "xorriso (cidata seed ISO)",
            );
            spec.extra_cdroms.push(seed_iso);
            "ds=nocloud\\;s=/cidata/".to_string()
        }
    };
    let (mut qemu, serial) = boot_and_type(&spec, None, dir, &edit_style(&ds), &mut ph);
    let marker = "TESTGUEST-AUTOINSTALL-REJECTED";
    let r = serial.wait_until(
        "autoinstall rejected",
        Duration::from_secs(180),
        || qemu.is_running(),
        |t| t.contains(marker) || t.contains("TESTGUEST-INSTALL-"),
    );
    if r.is_err() || !serial.text().contains(marker) {
        panic!(
            "{name}: no rejection on serial ({:?})\n{}",
            r.err(),
            tail(&serial.text(), 30)
        );
    }
    ph.mark("boot command -> rejection printed on serial");
    let line = serial.line_with(marker).unwrap_or_default();
    println!("[{name}] {line}");
    assert!(line.contains(reason), "{name}: {line:?} lacks {reason:?}");
    // stays up, installs nothing
    std::thread::sleep(Duration::from_secs(3));
    let mut qmp = must(
        Qmp::connect(&spec.qmp_sock, Duration::from_secs(10)),
        "QMP connect",
    );
    assert_eq!(must(qmp.query_status(), "query-status"), "running");
    let text = serial.text();
    assert!(
        text.contains("stays up"),
        "{name}: installer did not stay up"
    );
    assert!(
        !text.contains("target disk"),
        "{name}: installer went on to the disk"
    );
    let blocks = must(std::fs::metadata(&disk), "stat disk").blocks();
    assert_eq!(blocks, 0, "{name}: the disk was written to");
    must(qmp.quit(), "quit");
    let _ = qemu.wait_exit(Duration::from_secs(10));
    ph.mark("checked: still running, disk untouched");
}

#[ignore = "e2e: needs KILN_E2E=1 (cargo xtask test)"]
#[test]
fn bad_user_data_is_reported_and_nothing_installed() {
    kiln_testguest::require_e2e();
    rejected(
        "not-cloud-config",
        "#!/bin/sh\necho this is a script, not a cloud-config\n",
        Seed::Http {
            ds: "ds=nocloud-net\\;s={url}",
        },
        "does not start with #cloud-config",
    );
    rejected(
        "yaml-error",
        "#cloud-config\nautoinstall:\n  version: 1\n  identity: [unclosed\n",
        Seed::Http {
            ds: "'ds=nocloud-net;seedfrom={url}'",
        },
        "not valid YAML",
    );
    rejected(
        "no-autoinstall-key-cidata",
        "#cloud-config\nusers:\n  - name: someone\n",
        Seed::Cidata,
        "no top-level autoinstall: key",
    );
}
