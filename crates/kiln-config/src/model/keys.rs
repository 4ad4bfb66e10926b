//! One definition per `proxmox-iso` key: name, type, default, what it does, where the build uses it,
//! whether kiln supports it, and whether its value is a secret.
//!
//! From this table come `docs/configuration.md` (`cargo xtask config-docs`), the "did you mean"
//! candidates for unknown keys, the masking of secret settings, and the "not supported by kiln" /
//! "has no effect" diagnostics at the key's line. Tests hold the rest of the code to it:
//! - `keys::tests::documented_defaults_are_runtime_defaults` decodes an empty source and compares
//!   every documented default with the decoded value;
//! - `keys::tests::decoder_reads_exactly_the_table` checks the decoder reads every key of the table
//!   and no other;
//! - kiln-build's `tests/keys_consumed.rs` checks every supported key is read by the build (or
//!   `kiln init`), and `keys::tests::unsupported_keys_are_rejected_at_their_line` that every
//!   unsupported key set to a non-default value fails validation at its line.

use std::time::Duration;

/// The delay between two keys of the boot command when neither `boot_key_interval` nor
/// `PACKER_KEY_INTERVAL` is set. The one place this default lives.
///
/// 20 ms is the pace at which PVE's QEMU hands keys to the guest: `sendkey` becomes QMP `send-key`
/// with the default hold time, 10 ms down plus 10 ms after the release, and keys that come faster
/// wait in QEMU's input queue, which drops them past ~170 queued keys. kiln waits for each
/// `sendkey` answer and then 20 ms, so it never outruns QEMU, whatever the API's latency, and a
/// boot command of any length arrives whole (README, "Boot command pace").
pub const DEFAULT_BOOT_KEY_INTERVAL: Duration = Duration::from_millis(20);

/// The name of the build VM when `vm_name` is unset: `kiln-` and 8 random hex digits.
pub fn default_vm_name() -> String {
    format!("kiln-{:08x}", rand::random::<u32>())
}

/// The value type as a template author writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Number,
    /// A Go duration string (`10s`, `1m30s`, `500ms`).
    Duration,
    StrList,
    StrMap,
    /// A nested block that appears at most once.
    Block,
    /// A nested block that may repeat.
    Blocks,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::Duration => "duration",
            Kind::StrList => "list(string)",
            Kind::StrMap => "map(string)",
            Kind::Block => "block",
            Kind::Blocks => "block (repeatable)",
        }
    }
}

/// The default of a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Def {
    /// Unset (no value is sent / the feature is off for bools).
    Unset,
    /// A literal as written in a template (`"512"`, `"true"`, `"kvm64"`, `"5m"`).
    Lit(&'static str),
    /// A duration held by a constant (shown as a Go duration).
    Dur(Duration),
    /// Decided at build time; the text says how.
    Computed(&'static str),
}

/// Where a supported key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// PVE connection and authentication.
    Connection,
    /// A parameter of the VM kiln creates (`POST /nodes/{node}/qemu`).
    Vm,
    /// The ISO step (download, upload, attach).
    Iso,
    /// The seed HTTP server.
    Http,
    /// The boot command step.
    Boot,
    /// The SSH communicator.
    Communicator,
    /// The finishing steps (cloud-init drive, template conversion, names).
    Template,
    /// The clone step of `proxmox-clone` (clone, then the clone's config).
    Cloning,
}

impl Dest {
    pub fn describe(self) -> &'static str {
        match self {
            Dest::Connection => "connection",
            Dest::Vm => "VM create",
            Dest::Iso => "ISO step",
            Dest::Http => "HTTP server",
            Dest::Boot => "boot command",
            Dest::Communicator => "SSH communicator",
            Dest::Template => "template step",
            Dest::Cloning => "clone step",
        }
    }
}

/// Whether kiln honours a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Honoured by the named part of the build.
    Yes(Dest),
    /// A deprecated spelling folded into another key (named here) while loading.
    Alias(&'static str),
    /// Accepted with a warning when set: it has no effect, as in Packer's plugin (the reason says
    /// why).
    NoEffect(&'static str),
    /// Refused at its line when set to anything but its default: `not supported by kiln: <reason>`.
    No(&'static str),
}

/// One key of `source "proxmox-iso"` or of one of its nested blocks.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// `""` for the source body, else the nested block (`disks`, `boot_iso`, …). ISO keys are
    /// listed once under `boot_iso` and apply to `additional_iso_files` too.
    pub block: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub default: Def,
    pub doc: &'static str,
    pub support: Support,
    /// A secret: masked in output and never logged.
    pub sensitive: bool,
    /// Environment variable used when the key is unset.
    pub env: Option<&'static str>,
    /// The source types that accept the key (most keys are shared by both builders).
    pub sources: Sources,
    /// In a `proxmox-clone` source, kiln refuses the key (set to anything but its default) for
    /// this reason, although `proxmox-iso` supports it.
    pub clone_unsupported: Option<&'static str>,
}

/// The source types that accept a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// `proxmox-iso` and `proxmox-clone` (the plugin's shared configuration).
    Both,
    /// Only `proxmox-iso` (the boot ISO and its deprecated top-level spellings).
    Iso,
    /// Only `proxmox-clone` (`clone_vm`, `full_clone`, `ipconfig`, …).
    Clone,
}

impl Sources {
    /// Whether a source of type `source_type` (`proxmox-iso` / `proxmox-clone`) accepts the key.
    pub fn accepts(self, source_type: &str) -> bool {
        match self {
            Sources::Both => true,
            Sources::Iso => source_type != CLONE,
            Sources::Clone => source_type == CLONE,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Sources::Both => "proxmox-iso, proxmox-clone",
            Sources::Iso => "proxmox-iso",
            Sources::Clone => "proxmox-clone",
        }
    }
}

/// The source type of Packer's clone builder.
pub const CLONE: &str = "proxmox-clone";

const fn k(block: &'static str, key: &'static str, kind: Kind, default: Def) -> KeySpec {
    KeySpec {
        block,
        key,
        kind,
        default,
        doc: "",
        support: Support::Yes(Dest::Vm),
        sensitive: false,
        env: None,
        sources: Sources::Both,
        clone_unsupported: None,
    }
}

impl KeySpec {
    const fn doc(mut self, d: &'static str) -> Self {
        self.doc = d;
        self
    }
    const fn to(mut self, d: Dest) -> Self {
        self.support = Support::Yes(d);
        self
    }
    const fn alias(mut self, of: &'static str) -> Self {
        self.support = Support::Alias(of);
        self
    }
    const fn no_effect(mut self, why: &'static str) -> Self {
        self.support = Support::NoEffect(why);
        self
    }
    const fn unsupported(mut self, why: &'static str) -> Self {
        self.support = Support::No(why);
        self
    }
    const fn secret(mut self) -> Self {
        self.sensitive = true;
        self
    }
    const fn env(mut self, e: &'static str) -> Self {
        self.env = Some(e);
        self
    }
    const fn iso_only(mut self) -> Self {
        self.sources = Sources::Iso;
        self
    }
    const fn clone_only(mut self) -> Self {
        self.sources = Sources::Clone;
        self
    }
    const fn not_in_clone(mut self, why: &'static str) -> Self {
        self.clone_unsupported = Some(why);
        self
    }

    /// The key's support in a source of type `source_type`.
    pub fn support_in(&self, source_type: &str) -> Support {
        match self.clone_unsupported {
            Some(why) if source_type == CLONE => Support::No(why),
            _ => self.support,
        }
    }

    /// The model field path (`communicator.ssh_port`, `disks.disk_size`) the key decodes into.
    pub fn field(&self) -> String {
        let top = match self.block {
            "" if is_communicator_key(self.key) => "communicator".to_string(),
            "" => String::new(),
            b => b.to_string(),
        };
        let name = if self.key == "communicator" {
            "type"
        } else {
            self.key
        };
        if top.is_empty() {
            name.to_string()
        } else {
            format!("{top}.{name}")
        }
    }

    /// The default as documentation shows it.
    pub fn default_text(&self) -> String {
        match self.default {
            Def::Unset => String::new(),
            Def::Lit(s) => format!("`{s}`"),
            Def::Dur(d) => format!("`{}`", go_duration(d)),
            Def::Computed(s) => s.to_string(),
        }
    }
}

/// Keys decoded into the `Communicator` struct.
pub fn is_communicator_key(key: &str) -> bool {
    key == "communicator"
        || key == "pause_before_connecting"
        || key.starts_with("ssh_")
        || key.starts_with("winrm_")
        || key.starts_with("temporary_key_pair_")
}

/// `100ms`, `1m30s`, `5m`: a duration as Go prints it (shortest exact form).
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns % 1_000_000_000 != 0 {
        return if ns % 1_000_000 == 0 {
            format!("{}ms", ns / 1_000_000)
        } else if ns % 1_000 == 0 {
            format!("{}us", ns / 1_000)
        } else {
            format!("{ns}ns")
        };
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The keys of the given block (`""` = the source body).
pub fn keys_of(block: &str) -> impl Iterator<Item = &'static KeySpec> + '_ {
    let block = if block == "additional_iso_files" {
        "boot_iso"
    } else {
        block
    };
    KEYS.iter().filter(move |s| s.block == block)
}

/// The spec of `key` in `block`.
pub fn spec(block: &str, key: &str) -> Option<&'static KeySpec> {
    keys_of(block).find(|s| s.key == key)
}

use Def::{Computed, Dur, Lit, Unset};
use Dest::*;
use Kind::*;

const NO_WINRM: &str = "used only with communicator = \"winrm\", which kiln refuses";
const NO_TEMP_KEY: &str =
    "choosing the temporary key pair: kiln's proxmox-clone generates an ed25519 key pair when no ssh_password, ssh_private_key_file or ssh_agent_auth is set (the plugin's proxmox-clone ignores these keys too), and proxmox-iso none";

const CLONE_NO_BOOT: &str = "kiln's proxmox-clone boots the clone from its disk: it types no boot command and serves no HTTP seed (the clone is configured through cloud-init: ipconfig, nameserver, searchdomain, ssh_username and the key of ssh_private_key_file, or an ephemeral key pair without credentials)";
const CLONE_NO_ISO: &str = "kiln's proxmox-clone attaches no ISOs to the clone";
const CLONE_NO_DISKS: &str = "kiln's proxmox-clone keeps the source template's disks (EFI and TPM state included): add or resize them in the source template";

/// Every key kiln reads in `source "proxmox-iso"` and `source "proxmox-clone"`, in documentation
/// order (see [`KeySpec::sources`] for the keys only one of them accepts).
pub static KEYS: &[KeySpec] = &[
    // --- connection ---
    k("", "proxmox_url", Str, Unset).to(Connection).env("PROXMOX_URL").doc("URL of the PVE API, e.g. `https://pve:8006/api2/json`. Required (here or in the environment)."),
    k("", "insecure_skip_tls_verify", Bool, Lit("false")).to(Connection).doc("Accept any TLS certificate."),
    k("", "proxmox_fingerprint", Str, Unset).to(Connection).env("PROXMOX_FINGERPRINT").doc("kiln extension: SHA-256 fingerprint (`AA:BB:…`) of the PVE certificate to pin."),
    k("", "username", Str, Unset).to(Connection).env("PROXMOX_USERNAME").doc("`user@realm`, or a token id `user@realm!name` with `token`. Required."),
    k("", "password", Str, Unset).to(Connection).env("PROXMOX_PASSWORD").secret().doc("Password of `username` (or `token`)."),
    k("", "token", Str, Unset).to(Connection).env("PROXMOX_TOKEN").secret().doc("API token secret of the token id in `username`."),
    k("", "node", Str, Unset).to(Connection).doc("The PVE node to build on. Required."),
    k("", "pool", Str, Unset).doc("Resource pool the VM is added to."),
    k("", "task_timeout", Duration, Lit("1m")).to(Connection).doc("How long to wait for a PVE task (0 = default)."),
    // --- identity / lifecycle ---
    k("", "vm_name", Str, Computed("`kiln-` and 8 random hex digits")).to(Template).doc("Name of the build VM. `{{ timestamp }}`, `{{ isotime \"…\" }}` and `{{ uuid }}` are rendered."),
    k("", "vm_id", Number, Computed("next free id (`/cluster/nextid`)")).doc("VM id (100–999999999); 0 or unset asks PVE."),
    k("", "tags", Str, Unset).doc("PVE tags, `;`-separated."),
    k("", "template_name", Str, Computed("`vm_name`")).to(Template).doc("Name of the template (`{{ timestamp }}` etc. rendered)."),
    k("", "template_description", Str, Unset).to(Template).doc("Description of the template (`{{ timestamp }}` etc. rendered)."),
    k("", "skip_convert_to_template", Bool, Lit("false")).to(Template).doc("Leave a stopped VM instead of a template."),
    k("", "onboot", Bool, Lit("false")).doc("Start the VM when the node boots."),
    // --- proxmox-clone ---
    k("", "clone_vm", Str, Unset).to(Cloning).clone_only().doc("Name of the VM or template to clone (a VM on `node` is preferred when several have the name). One of `clone_vm` or `clone_vm_id` is required."),
    k("", "clone_vm_id", Number, Unset).to(Cloning).clone_only().doc("Id of the VM or template to clone (100–999999999). One of `clone_vm` or `clone_vm_id` is required."),
    k("", "full_clone", Bool, Lit("true")).to(Cloning).clone_only().doc("Full copy of the disks; `false` makes a linked clone, which PVE allows only from a template on storage that supports it."),
    k("", "nameserver", Str, Unset).to(Cloning).clone_only().doc("DNS server addresses (space-separated) set through cloud-init."),
    k("", "searchdomain", Str, Unset).to(Cloning).clone_only().doc("DNS search domain set through cloud-init."),
    k("", "ipconfig", Blocks, Unset).to(Cloning).clone_only().doc("cloud-init IP settings, one block per network adapter in order, see `ipconfig`."),
    // --- hardware ---
    k("", "memory", Number, Lit("512")).doc("MiB (values < 16 become 512)."),
    k("", "ballooning_minimum", Number, Lit("0")).doc("MiB; 0 = not sent."),
    k("", "cores", Number, Lit("1")).doc("CPU cores per socket."),
    k("", "sockets", Number, Lit("1")).doc("CPU sockets."),
    k("", "cpu_type", Str, Lit("kvm64")).doc("QEMU CPU model (`host`, `x86-64-v2-AES`, …)."),
    k("", "numa", Bool, Lit("false")).doc("Enable NUMA."),
    k("", "os", Str, Lit("other")).doc("PVE `ostype`: wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris, other."),
    k("", "bios", Str, Unset).doc("`seabios` or `ovmf`."),
    k("", "machine", Str, Unset).doc("QEMU machine type (`q35`, `pc`)."),
    k("", "boot", Str, Unset).doc("PVE boot order, e.g. `order=scsi0;ide2`. PVE boots only the devices listed; in the legacy letters `c` is the disk and `d` the CD-ROM (the plugin's docs swap them): kiln warns when the boot ISO is not in the order."),
    k("", "scsi_controller", Str, Lit("lsi")).doc("lsi, lsi53c810, virtio-scsi-pci, virtio-scsi-single, megasas, pvscsi."),
    k("", "qemu_agent", Bool, Lit("true")).doc("Enable the QEMU guest agent (kiln learns the VM's IP from it)."),
    k("", "disable_kvm", Bool, Lit("false")).doc("Run without KVM acceleration."),
    k("", "serials", StrList, Unset).doc("Up to 4 serial ports: `socket` or `/dev/…`."),
    k("", "qemu_additional_args", Str, Unset).doc("Extra QEMU arguments (PVE `args`, root only)."),
    k("", "vga", Block, Unset).doc("Display adapter, see `vga`."),
    k("", "efi_config", Block, Unset).doc("EFI disk, see `efi_config`.").not_in_clone(CLONE_NO_DISKS),
    k("", "efidisk", Str, Unset).alias("efi_config.efi_storage_pool").doc("Deprecated: storage pool of the EFI disk (use `efi_config`).").not_in_clone(CLONE_NO_DISKS),
    k("", "tpm_config", Block, Unset).doc("TPM, see `tpm_config`.").not_in_clone(CLONE_NO_DISKS),
    k("", "rng0", Block, Unset).doc("VirtIO RNG, see `rng0`."),
    k("", "pci_devices", Blocks, Unset).doc("PCI passthrough, see `pci_devices`."),
    k("", "disks", Blocks, Unset).doc("Hard disks, see `disks`.").not_in_clone(CLONE_NO_DISKS),
    k("", "network_adapters", Blocks, Unset).doc("NICs, see `network_adapters`."),
    // --- ISOs ---
    k("", "boot_iso", Block, Unset).to(Iso).doc("The boot ISO, see `boot_iso`.").iso_only(),
    k("", "additional_iso_files", Blocks, Unset).to(Iso).doc("More ISOs (same keys as `boot_iso`).").not_in_clone(CLONE_NO_ISO),
    k("", "iso_file", Str, Unset).alias("boot_iso.iso_file").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_url", Str, Unset).alias("boot_iso.iso_url").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_urls", StrList, Unset).alias("boot_iso.iso_urls").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_checksum", Str, Unset).alias("boot_iso.iso_checksum").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_storage_pool", Str, Unset).alias("boot_iso.iso_storage_pool").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_download_pve", Bool, Lit("false")).alias("boot_iso.iso_download_pve").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "unmount_iso", Bool, Lit("false")).alias("boot_iso.unmount").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_target_path", Str, Unset).alias("boot_iso.iso_target_path").doc("Deprecated: use `boot_iso`.").iso_only(),
    k("", "iso_target_extension", Str, Lit("iso")).alias("boot_iso.iso_target_extension").doc("Deprecated: use `boot_iso`.").iso_only(),
    // --- cloud-init ---
    k("", "cloud_init", Bool, Lit("false")).to(Template).doc("Add a cloud-init drive to the template."),
    k("", "cloud_init_storage_pool", Str, Computed("the boot disk's storage")).to(Template).doc("Storage of the cloud-init drive."),
    k("", "cloud_init_disk_type", Str, Lit("ide")).to(Template).doc("Bus of the cloud-init drive: ide, sata, scsi."),
    k("", "cloud_init_disable_upgrade_packages", Bool, Lit("false")).to(Template).doc("Set `ciupgrade: 0` on the template (with `cloud_init = true`)."),
    // --- boot command ---
    k("", "boot_command", StrList, Unset).to(Boot).doc("Keys typed after `boot_wait` (`<enter>`, `{{ .HTTPIP }}`, …); checked when validating.").not_in_clone(CLONE_NO_BOOT),
    k("", "boot_wait", Duration, Lit("10s")).to(Boot).doc("Wait before typing; 0 = 10s, negative = no wait."),
    k("", "boot_key_interval", Duration, Dur(DEFAULT_BOOT_KEY_INTERVAL)).to(Boot).env("PACKER_KEY_INTERVAL").doc("Delay between keys; the default is the pace at which PVE's QEMU feeds keys to the guest."),
    k("", "boot_keygroup_interval", Duration, Unset).unsupported("kiln types one key at a time, `boot_key_interval` apart; use `<waitXs>` in the boot command"),
    // --- HTTP server ---
    k("", "http_directory", Str, Unset).to(Http).doc("Directory served to the VM (`{{ .HTTPIP }}:{{ .HTTPPort }}`).").not_in_clone(CLONE_NO_BOOT),
    k("", "http_content", StrMap, Unset).to(Http).doc("path → content served to the VM (instead of `http_directory`).").not_in_clone(CLONE_NO_BOOT),
    k("", "http_port_min", Number, Lit("8000")).to(Http).doc("Lowest port of the HTTP server."),
    k("", "http_port_max", Number, Lit("9000")).to(Http).doc("Highest port of the HTTP server."),
    k("", "http_bind_address", Str, Computed("all addresses (`0.0.0.0`)")).to(Http).doc("Address the HTTP server binds."),
    k("", "http_interface", Str, Unset).to(Http).doc("Bind the HTTP server to this interface's address."),
    k("", "http_network_protocol", Str, Lit("tcp")).unsupported("kiln's HTTP server listens on TCP (IPv4 and IPv6); leave http_network_protocol unset"),
    // --- communicator ---
    k("", "communicator", Str, Lit("ssh")).to(Communicator).doc("`ssh` or `none` (`winrm` is refused: kiln has no WinRM communicator)."),
    k("", "vm_interface", Str, Unset).to(Communicator).doc("Guest interface whose IPv4 address kiln connects to."),
    k("", "pause_before_connecting", Duration, Lit("0s")).to(Communicator).doc("Wait after SSH first answers."),
    k("", "ssh_host", Str, Computed("the address the guest agent reports")).to(Communicator).doc("Address to connect to."),
    k("", "ssh_port", Number, Lit("22")).to(Communicator).doc("SSH port."),
    k("", "ssh_username", Str, Unset).to(Communicator).doc("User kiln logs in as. Required with `communicator = \"ssh\"`."),
    k("", "ssh_password", Str, Unset).to(Communicator).secret().doc("Password login."),
    k("", "ssh_private_key_file", Str, Unset).to(Communicator).doc("Private key file (relative to the template directory)."),
    k("", "ssh_agent_auth", Bool, Lit("false")).to(Communicator).doc("Use the keys of the agent at `SSH_AUTH_SOCK`."),
    k("", "ssh_pty", Bool, Lit("false")).to(Communicator).doc("Request a PTY for commands."),
    k("", "ssh_timeout", Duration, Lit("5m")).to(Communicator).doc("How long to wait for SSH."),
    k("", "ssh_wait_timeout", Duration, Unset).alias("ssh_timeout").doc("Alias of `ssh_timeout`."),
    k("", "ssh_handshake_attempts", Number, Lit("10")).to(Communicator).doc("Authentication failures tolerated while waiting."),
    k("", "ssh_keep_alive_interval", Duration, Lit("5s")).to(Communicator).doc("Keepalive interval; 0 disables."),
    k("", "ssh_bastion_host", Str, Unset).to(Communicator).doc("Jump host: connect to the VM through it."),
    k("", "ssh_bastion_port", Number, Lit("22")).to(Communicator).doc("Jump host's SSH port."),
    k("", "ssh_bastion_username", Str, Unset).to(Communicator).doc("User on the jump host. Required with `ssh_bastion_host`."),
    k("", "ssh_bastion_password", Str, Unset).to(Communicator).secret().doc("Password on the jump host."),
    k("", "ssh_bastion_private_key_file", Str, Unset).to(Communicator).doc("Private key for the jump host."),
    k("", "ssh_bastion_agent_auth", Bool, Lit("false")).to(Communicator).doc("Use the SSH agent for the jump host."),
    k("", "ssh_bastion_interactive", Bool, Lit("false")).unsupported("keyboard-interactive login to the bastion; use ssh_bastion_password, ssh_bastion_private_key_file or ssh_bastion_agent_auth"),
    k("", "ssh_bastion_certificate_file", Str, Unset).unsupported("SSH certificates for the bastion; use ssh_bastion_private_key_file"),
    k("", "ssh_certificate_file", Str, Unset).unsupported("SSH certificate authentication; use ssh_private_key_file"),
    k("", "ssh_keypair_name", Str, Unset).no_effect("names a cloud provider's key pair; the proxmox plugin does not use it either"),
    k("", "ssh_clear_authorized_keys", Bool, Lit("false")).no_effect("kiln removes the ephemeral key of a proxmox-clone build from authorized_keys after provisioning, as the plugin does by default, and no other key (the ansible provisioner removes its own)"),
    k("", "ssh_disable_agent_forwarding", Bool, Lit("false")).no_effect("kiln never forwards the SSH agent"),
    k("", "temporary_key_pair_name", Str, Unset).unsupported(NO_TEMP_KEY),
    k("", "temporary_key_pair_type", Str, Unset).unsupported(NO_TEMP_KEY),
    k("", "temporary_key_pair_bits", Number, Unset).unsupported(NO_TEMP_KEY),
    k("", "ssh_ciphers", StrList, Unset).unsupported("choosing SSH ciphers; kiln offers its SSH library's secure defaults"),
    k("", "ssh_key_exchange_algorithms", StrList, Unset).unsupported("choosing SSH key exchange algorithms; kiln offers its SSH library's secure defaults"),
    k("", "ssh_read_write_timeout", Duration, Lit("0s")).unsupported("a read/write timeout on the SSH connection; kiln relies on ssh_keep_alive_interval"),
    k("", "ssh_file_transfer_method", Str, Unset).unsupported("choosing scp or sftp; kiln uploads with SFTP and falls back to `cat` over exec"),
    k("", "ssh_proxy_host", Str, Unset).unsupported("a SOCKS5 proxy for SSH; use ssh_bastion_host"),
    k("", "ssh_proxy_port", Number, Lit("1080")).unsupported("a SOCKS5 proxy for SSH; use ssh_bastion_host"),
    k("", "ssh_proxy_username", Str, Unset).unsupported("a SOCKS5 proxy for SSH; use ssh_bastion_host"),
    k("", "ssh_proxy_password", Str, Unset).secret().unsupported("a SOCKS5 proxy for SSH; use ssh_bastion_host"),
    k("", "ssh_local_tunnels", StrList, Unset).unsupported("SSH port forwarding"),
    k("", "ssh_remote_tunnels", StrList, Unset).unsupported("SSH port forwarding"),
    k("", "winrm_username", Str, Unset).no_effect(NO_WINRM),
    k("", "winrm_password", Str, Unset).secret().no_effect(NO_WINRM),
    k("", "winrm_host", Str, Unset).no_effect(NO_WINRM),
    k("", "winrm_port", Number, Unset).no_effect(NO_WINRM),
    k("", "winrm_timeout", Duration, Lit("30m")).no_effect(NO_WINRM),
    k("", "winrm_use_ssl", Bool, Lit("false")).no_effect(NO_WINRM),
    k("", "winrm_insecure", Bool, Lit("false")).no_effect(NO_WINRM),
    k("", "winrm_use_ntlm", Bool, Lit("false")).no_effect(NO_WINRM),
    k("", "winrm_no_proxy", Bool, Lit("false")).no_effect(NO_WINRM),
    // --- ipconfig (proxmox-clone) ---
    k("ipconfig", "ip", Str, Unset).to(Cloning).clone_only().doc("IPv4 address in CIDR notation, or `dhcp`."),
    k("ipconfig", "gateway", Str, Unset).to(Cloning).clone_only().doc("IPv4 gateway."),
    k("ipconfig", "ip6", Str, Unset).to(Cloning).clone_only().doc("IPv6 address in CIDR notation, `auto` (SLAAC) or `dhcp`."),
    k("ipconfig", "gateway6", Str, Unset).to(Cloning).clone_only().doc("IPv6 gateway."),
    // --- vga ---
    k("vga", "type", Str, Unset).doc("cirrus, none, qxl, qxl2, qxl3, qxl4, serial0–3, std, virtio, vmware."),
    k("vga", "memory", Number, Unset).doc("Video memory in MiB."),
    // --- efi_config ---
    k("efi_config", "efi_storage_pool", Str, Unset).doc("Storage of the EFI disk. Required in this block."),
    k("efi_config", "efi_type", Str, Computed("`4m` when a pool is set")).doc("`2m` or `4m`."),
    k("efi_config", "efi_format", Str, Unset).doc("Disk format of the EFI disk."),
    k("efi_config", "pre_enrolled_keys", Bool, Lit("false")).doc("Pre-enroll Microsoft Secure Boot keys."),
    // --- tpm_config ---
    k("tpm_config", "tpm_storage_pool", Str, Unset).doc("Storage of the TPM state. Required in this block."),
    k("tpm_config", "tpm_version", Str, Lit("v2.0")).doc("`v1.2` or `v2.0`."),
    // --- rng0 ---
    k("rng0", "source", Str, Unset).doc("/dev/urandom, /dev/random or /dev/hwrng. Required in this block."),
    k("rng0", "max_bytes", Number, Lit("0")).doc("Bytes per `period`; 0 = no limit (not sent)."),
    k("rng0", "period", Number, Lit("0")).doc("Milliseconds."),
    // --- pci_devices ---
    k("pci_devices", "host", Str, Unset).doc("Host PCI id (`0000:01:00.0`); exactly one of host or mapping."),
    k("pci_devices", "mapping", Str, Unset).doc("Cluster resource mapping name."),
    k("pci_devices", "device_id", Str, Unset).doc("Override the device id seen by the guest."),
    k("pci_devices", "vendor_id", Str, Unset).doc("Override the vendor id."),
    k("pci_devices", "sub_device_id", Str, Unset).doc("Override the subsystem device id."),
    k("pci_devices", "sub_vendor_id", Str, Unset).doc("Override the subsystem vendor id."),
    k("pci_devices", "legacy_igd", Bool, Lit("false")).doc("Legacy IGD passthrough."),
    k("pci_devices", "pcie", Bool, Lit("false")).doc("Attach as PCIe (q35 only)."),
    k("pci_devices", "mdev", Str, Unset).doc("Mediated device type."),
    k("pci_devices", "hide_rombar", Bool, Lit("false")).doc("Hide the ROM BAR."),
    k("pci_devices", "romfile", Str, Unset).doc("ROM file under /usr/share/kvm."),
    k("pci_devices", "x_vga", Bool, Lit("false")).doc("Primary GPU."),
    // --- disks ---
    k("disks", "type", Str, Lit("scsi")).doc("Bus: scsi, sata, virtio, ide (another value: a warning, and scsi, as the plugin does)."),
    k("disks", "storage_pool", Str, Unset).doc("Storage of the disk. Required."),
    k("disks", "storage_pool_type", Str, Unset).no_effect("deprecated: PVE knows the storage's type; the plugin ignores it too"),
    k("disks", "disk_size", Str, Lit("20G")).doc("Whole number with K, M, G or T; allocated in whole GiB (rounded up)."),
    k("disks", "format", Str, Lit("raw")).doc("raw, qcow, qed, qcow2, vmdk, cloop (PVE's formats; the plugin's docs also name `cow`, which PVE refuses)."),
    k("disks", "cache_mode", Str, Lit("none")).doc("none, writethrough, writeback, unsafe, directsync."),
    k("disks", "io_thread", Bool, Lit("false")).doc("IO thread (scsi with virtio-scsi-single, or virtio)."),
    k("disks", "asyncio", Str, Unset).doc("`native`, `threads` or `io_uring`; only sent when set."),
    k("disks", "discard", Bool, Lit("false")).doc("Pass discard/TRIM through."),
    k("disks", "ssd", Bool, Lit("false")).doc("Present as an SSD (not on virtio)."),
    k("disks", "exclude_from_backup", Bool, Lit("false")).doc("`backup=0`."),
    // --- network_adapters ---
    k("network_adapters", "bridge", Str, Unset).doc("Bridge to attach to. Required."),
    k("network_adapters", "model", Str, Lit("e1000")).doc("rtl8139, ne2k_pci, e1000, pcnet, virtio, ne2k_isa, i82551, i82557b, i82559er, vmxnet3, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e (PVE's models)."),
    k("network_adapters", "mac_address", Str, Computed("random (PVE)")).doc("A MAC, or `repeatable` (derived from the VM id)."),
    k("network_adapters", "vlan_tag", Str, Unset).doc("VLAN tag."),
    k("network_adapters", "firewall", Bool, Lit("false")).doc("Enable the PVE firewall on this NIC."),
    k("network_adapters", "mtu", Number, Unset).doc("MTU (≤ 65520); 0 = not sent."),
    k("network_adapters", "packet_queues", Number, Unset).doc("Multiqueue (virtio only); 0 = not sent."),
    // --- boot_iso / additional_iso_files ---
    k("boot_iso", "type", Str, Lit("ide")).to(Iso).doc("Bus: ide, sata, scsi.").iso_only(),
    k("boot_iso", "index", Str, Computed("`2` for the boot ISO on ide, else the lowest free")).to(Iso).doc("Bus index.").iso_only(),
    k("boot_iso", "device", Str, Unset).alias("type + index").doc("Deprecated `ideN`/`sataN`/`scsiN`.").iso_only(),
    k("boot_iso", "iso_file", Str, Unset).to(Iso).doc("An ISO already on PVE: `<storage>:iso/<file>`.").iso_only(),
    k("boot_iso", "iso_url", Str, Unset).to(Iso).doc("Download this ISO (cached by `kiln init`) and upload it.").iso_only(),
    k("boot_iso", "iso_urls", StrList, Unset).to(Iso).doc("Mirrors of the ISO, tried in order.").iso_only(),
    k("boot_iso", "iso_checksum", Str, Unset).to(Iso).doc("`<type>:<hex>`, bare hex, `file:<url>`, `<type>:file:<url>` or `none`. Required with iso_url.").iso_only(),
    k("boot_iso", "iso_target_path", Str, Unset).unsupported("kiln keeps downloaded ISOs in its cache (`kiln init`); leave iso_target_path unset").iso_only(),
    k("boot_iso", "iso_target_extension", Str, Lit("iso")).unsupported("kiln uploads ISOs with the `.iso` extension").iso_only(),
    k("boot_iso", "iso_storage_pool", Str, Unset).to(Iso).doc("Storage the ISO is uploaded to. Required with iso_url and cd_files.").iso_only(),
    k("boot_iso", "iso_download_pve", Bool, Lit("false")).to(Iso).doc("Let PVE download iso_url itself.").iso_only(),
    k("boot_iso", "unmount", Bool, Lit("false")).to(Template).doc("Detach the ISO before converting to a template.").iso_only(),
    k("boot_iso", "keep_cdrom_device", Bool, Lit("false")).to(Template).doc("Keep the empty CD-ROM drive when unmounting.").iso_only(),
    k("boot_iso", "cd_files", StrList, Unset).to(Iso).doc("Files (globs) put on a generated ISO.").iso_only(),
    k("boot_iso", "cd_content", StrMap, Unset).to(Iso).doc("path → content put on a generated ISO.").iso_only(),
    k("boot_iso", "cd_label", Str, Unset).to(Iso).doc("Volume label of the generated ISO (`cidata` for cloud-init).").iso_only(),
];

#[cfg(test)]
mod tests;

/// The values of every key marked sensitive in the table that `cfg` sets (for masking).
pub fn sensitive_settings(cfg: &super::ProxmoxIsoConfig) -> Vec<String> {
    let Ok(json) = serde_json::to_value(cfg) else {
        return Vec::new();
    };
    KEYS.iter()
        .filter(|s| s.sensitive && s.block.is_empty())
        .filter_map(|s| {
            let path = format!("/{}", s.field().replace('.', "/"));
            json.pointer(&path)?.as_str().map(str::to_string)
        })
        .filter(|v| !v.is_empty())
        .collect()
}
