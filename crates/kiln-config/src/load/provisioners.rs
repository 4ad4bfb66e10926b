//! `provisioner` and `post-processor` blocks → model types.

use super::ebody::{Dec, EBlock};
use crate::diag::Diag;
use crate::model::*;
use std::time::Duration;

pub fn location(b: &EBlock) -> Option<Location> {
    let (line, column) = b.file.line_col(b.span.start);
    Some(Location {
        file: b.file.name.clone().into(),
        line,
        column,
    })
}

fn exit_codes(d: &mut Dec, key: &'static str) -> Vec<i64> {
    match d.list(key) {
        Some(l) => {
            let mut out = Vec::new();
            for s in l {
                match s.parse::<i64>() {
                    Ok(n) => out.push(n),
                    Err(_) => d.err_at(key, format!("{key}: \"{s}\" is not a number")),
                }
            }
            out
        }
        None => vec![0],
    }
}

pub fn decode_provisioner(b: &EBlock, errs: &mut Vec<Diag>) -> Option<Provisioner> {
    let Some(ty) = b.labels.first().cloned() else {
        errs.push(
            Diag::error("a provisioner block needs a type label, e.g. provisioner \"shell\" { … }")
                .at(&b.file, Some(b.span.clone())),
        );
        return None;
    };
    let mut d = Dec::for_block(b, errs, format!("provisioner \"{ty}\""));
    d.accept(&["only", "except", "override", "on_error"]);
    let name = d.str("name");
    let pause_before = d.dur("pause_before").unwrap_or(Duration::ZERO);
    let max_retries = d.uint::<u32>("max_retries").unwrap_or(0);
    let timeout = d.dur("timeout").filter(|t| !t.is_zero());
    let kind = match ty.as_str() {
        "shell" => {
            let use_env_var_file = d.flag("use_env_var_file");
            let s = Shell {
                inline: d.list_or_empty("inline"),
                inline_shebang: d
                    .str("inline_shebang")
                    .unwrap_or_else(|| "/bin/sh -e".into()),
                script: d.str("script"),
                scripts: d.list_or_empty("scripts"),
                environment_vars: d.list_or_empty("environment_vars"),
                env: d.map("env"),
                env_var_format: d.str("env_var_format"),
                use_env_var_file,
                execute_command: d.str("execute_command").unwrap_or_else(|| {
                    if use_env_var_file {
                        "chmod +x {{.Path}}; . {{.EnvVarFile}} && {{.Path}}".into()
                    } else {
                        "chmod +x {{.Path}}; {{.Vars}} {{.Path}}".into()
                    }
                }),
                expect_disconnect: d.flag("expect_disconnect"),
                valid_exit_codes: exit_codes(&mut d, "valid_exit_codes"),
                remote_folder: d.str("remote_folder").unwrap_or_else(|| "/tmp".into()),
                remote_file: d.str("remote_file"),
                remote_path: d.str("remote_path"),
                skip_clean: d.flag("skip_clean"),
                start_retry_timeout: d
                    .dur("start_retry_timeout")
                    .filter(|t| !t.is_zero())
                    .unwrap_or(Duration::from_secs(300)),
                pause_after: d.dur("pause_after").unwrap_or(Duration::ZERO),
                binary: d.flag("binary"),
            };
            let n = [
                !s.inline.is_empty(),
                s.script.is_some(),
                !s.scripts.is_empty(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 && b.body.failed.is_empty() {
                d.err("shell: exactly one of inline, script or scripts must be specified");
            }
            ProvisionerKind::Shell(s)
        }
        "file" => {
            let f = FileProvisioner {
                source: d.str("source"),
                sources: d.list_or_empty("sources"),
                content: d.str("content"),
                destination: d.req_str("destination", "file: destination must be specified"),
                direction: d.str("direction").unwrap_or_else(|| "upload".into()),
                generated: d.flag("generated"),
            };
            if f.source.is_none()
                && f.sources.is_empty()
                && f.content.is_none()
                && b.body.failed.is_empty()
            {
                d.err("file: one of source, sources or content must be specified");
            }
            if f.direction != "upload" && f.direction != "download" {
                d.err_at(
                    "direction",
                    "file: direction must be \"upload\" or \"download\"",
                );
            }
            ProvisionerKind::File(f)
        }
        "ansible" => ProvisionerKind::Ansible(Ansible {
            playbook_file: d.req_str("playbook_file", "ansible: playbook_file must be specified"),
            command: d.str("command"),
            user: d.str("user"),
            use_proxy: d.bool("use_proxy"),
            local_port: d.uint::<u16>("local_port"),
            ssh_host_key_file: d.str("ssh_host_key_file"),
            ssh_authorized_key_file: d.str("ssh_authorized_key_file"),
            ansible_proxy_key_type: d.str("ansible_proxy_key_type"),
            inventory_file: d.str("inventory_file"),
            inventory_directory: d.str("inventory_directory"),
            inventory_file_template: d.str("inventory_file_template"),
            host_alias: d.str("host_alias"),
            groups: d.list_or_empty("groups"),
            empty_groups: d.list_or_empty("empty_groups"),
            keep_inventory_file: d.flag("keep_inventory_file"),
            extra_arguments: d.list_or_empty("extra_arguments"),
            ansible_env_vars: d.list_or_empty("ansible_env_vars"),
            ansible_ssh_extra_args: d.list_or_empty("ansible_ssh_extra_args"),
            use_sftp: d.flag("use_sftp"),
            sftp_command: d.str("sftp_command"),
            galaxy_file: d.str("galaxy_file"),
            galaxy_command: d.str("galaxy_command"),
            galaxy_force_install: d.flag("galaxy_force_install"),
            galaxy_force_with_deps: d.flag("galaxy_force_with_deps"),
            roles_path: d.str("roles_path"),
            collections_path: d.str("collections_path"),
            skip_version_check: d.flag("skip_version_check"),
            ansible_winrm_use_http: d.flag("ansible_winrm_use_http"),
        }),
        "ansible-local" => {
            let a = AnsibleLocal {
                playbook_file: d.str("playbook_file"),
                playbook_files: d.list_or_empty("playbook_files"),
                playbook_dir: d.str("playbook_dir"),
                playbook_paths: d.list_or_empty("playbook_paths"),
                command: d.str("command"),
                extra_arguments: d.list_or_empty("extra_arguments"),
                group_vars: d.str("group_vars"),
                host_vars: d.str("host_vars"),
                role_paths: d.list_or_empty("role_paths"),
                galaxy_file: d.str("galaxy_file"),
                galaxy_command: d.str("galaxy_command"),
                inventory_file: d.str("inventory_file"),
                inventory_groups: d.list_or_empty("inventory_groups"),
                staging_directory: d.str("staging_directory"),
                clean_staging_directory: d.flag("clean_staging_directory"),
            };
            if a.playbook_file.is_none() && a.playbook_files.is_empty() {
                d.err("ansible-local: playbook_file or playbook_files must be specified");
            }
            ProvisionerKind::AnsibleLocal(a)
        }
        "shell-local" => ProvisionerKind::ShellLocal(shell_local(&mut d)),
        "breakpoint" => ProvisionerKind::Breakpoint(Breakpoint {
            note: d.str("note"),
            disable: d.flag("disable"),
        }),
        other => {
            let msg = format!(
                "not supported: provisioner \"{other}\" (kiln implements shell, file, ansible, ansible-local, shell-local, breakpoint)"
            );
            d.errs
                .push(Diag::error(msg).at(&b.file, Some(b.span.clone())));
            return None;
        }
    };
    d.finish();
    Some(Provisioner {
        name,
        pause_before,
        max_retries,
        timeout,
        kind,
        location: location(b),
    })
}

fn shell_local(d: &mut Dec) -> ShellLocal {
    let s = ShellLocal {
        inline: d.list_or_empty("inline"),
        inline_shebang: d.str("inline_shebang"),
        script: d.str("script"),
        scripts: d.list_or_empty("scripts"),
        command: d.str("command"),
        environment_vars: d.list_or_empty("environment_vars"),
        env: d.map("env"),
        execute_command: d.list_or_empty("execute_command"),
        valid_exit_codes: exit_codes(d, "valid_exit_codes"),
        use_linux_pathing: d.flag("use_linux_pathing"),
        only_on: d.list_or_empty("only_on"),
    };
    d.accept(&["env_var_format", "tempfile_extension"]);
    let n = [
        !s.inline.is_empty(),
        s.script.is_some(),
        !s.scripts.is_empty(),
        s.command.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if n != 1 && d.body.failed.is_empty() {
        d.err("shell-local: exactly one of command, inline, script or scripts must be specified");
    }
    s
}

pub fn decode_post_processor(
    b: &EBlock,
    chain: usize,
    errs: &mut Vec<Diag>,
) -> Option<PostProcessor> {
    let Some(ty) = b.labels.first().cloned() else {
        errs.push(
            Diag::error("a post-processor block needs a type label")
                .at(&b.file, Some(b.span.clone())),
        );
        return None;
    };
    let mut d = Dec::for_block(b, errs, format!("post-processor \"{ty}\""));
    d.accept(&["only", "except"]);
    let name = d.str("name");
    let keep_input_artifact = d.bool("keep_input_artifact");
    let kind = match ty.as_str() {
        "manifest" => PostProcessorKind::Manifest(Manifest {
            output: d
                .str("output")
                .unwrap_or_else(|| "packer-manifest.json".into()),
            strip_path: d.flag("strip_path"),
            strip_time: d.flag("strip_time"),
            custom_data: d.map("custom_data"),
        }),
        "shell-local" => PostProcessorKind::ShellLocal(shell_local(&mut d)),
        other => {
            let msg = format!(
                "not supported: post-processor \"{other}\" (kiln implements manifest, shell-local)"
            );
            d.errs
                .push(Diag::error(msg).at(&b.file, Some(b.span.clone())));
            return None;
        }
    };
    d.finish();
    Some(PostProcessor {
        name,
        keep_input_artifact,
        chain,
        kind,
        location: location(b),
    })
}
