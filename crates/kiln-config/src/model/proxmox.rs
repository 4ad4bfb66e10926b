//! `source "proxmox-iso" "…" {}`: one Rust field per Packer key (same snake_case names), with the
//! plugin's defaults applied. `Option` where "unset" is meaningful. Go-template fields
//! (`{{ .HTTPIP }}` …) are kept verbatim.

use indexmap::IndexMap;
use std::time::Duration;

/// The `proxmox-iso` builder configuration (plugin v1.2.4 surface); a `proxmox-clone` source
/// decodes into the same struct (the plugin's shared configuration) with `clone_vm`/`clone_vm_id`
/// set and no boot ISO.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProxmoxIsoConfig {
    // --- connection / auth ---
    pub proxmox_url: Option<String>,
    pub insecure_skip_tls_verify: bool,
    /// kiln extension: SHA-256 fingerprint (`AA:BB:…`) of the PVE certificate to pin.
    pub proxmox_fingerprint: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub node: String,
    pub pool: Option<String>,
    /// Where each key was written (for checks made later, e.g. the build's preflight).
    pub key_locations: super::KeyLocations,
    /// Default 60 s.
    pub task_timeout: Duration,

    // --- identity / lifecycle ---
    /// `None` = `kiln-` and 8 random hex digits ([`super::default_vm_name`]), chosen at build time.
    /// Go-template functions (`{{ timestamp }}`) are already rendered.
    pub vm_name: Option<String>,
    /// `None` (or 0) = ask `/cluster/nextid`.
    pub vm_id: Option<u32>,
    pub tags: Option<String>,
    /// `None` = `vm_name`.
    pub template_name: Option<String>,
    pub template_description: Option<String>,
    pub skip_convert_to_template: bool,
    pub onboot: bool,

    // --- proxmox-clone ---
    /// Name of the VM to clone (`source "proxmox-clone"` only; exactly one of this and
    /// `clone_vm_id`).
    pub clone_vm: Option<String>,
    pub clone_vm_id: Option<u32>,
    /// Default true; false = linked clone.
    pub full_clone: bool,
    /// Space-separated DNS servers (cloud-init).
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    /// cloud-init `ipconfigN`, in network adapter order.
    pub ipconfig: Vec<IpConfig>,

    // --- hardware ---
    /// MiB, default 512 (values < 16 become 512).
    pub memory: u32,
    /// MiB, 0 = not sent.
    pub ballooning_minimum: u32,
    pub cores: u32,
    pub sockets: u32,
    /// Default `kvm64`.
    pub cpu_type: String,
    pub numa: bool,
    /// Default `other`.
    pub os: String,
    pub bios: Option<String>,
    pub machine: Option<String>,
    pub boot: Option<String>,
    /// Default `lsi`.
    pub scsi_controller: String,
    /// Default true.
    pub qemu_agent: bool,
    pub disable_kvm: bool,
    pub serials: Vec<String>,
    pub qemu_additional_args: Option<String>,
    pub vga: Option<Vga>,
    pub efi_config: Option<EfiConfig>,
    /// Deprecated storage pool for the EFI disk.
    pub efidisk: Option<String>,
    pub tpm_config: Option<Tpm>,
    pub rng0: Option<Rng>,
    pub pci_devices: Vec<PciDevice>,
    pub disks: Vec<Disk>,
    pub network_adapters: Vec<NetworkAdapter>,

    // --- ISOs ---
    /// The boot ISO (deprecated top-level `iso_*` keys are already folded in).
    pub boot_iso: IsoConfig,
    pub additional_iso_files: Vec<IsoConfig>,

    // --- cloud-init ---
    pub cloud_init: bool,
    pub cloud_init_storage_pool: Option<String>,
    /// Default `ide`.
    pub cloud_init_disk_type: super::CdromBus,
    /// Sent as `ciupgrade: 0` with the cloud-init drive.
    pub cloud_init_disable_upgrade_packages: bool,

    // --- boot command ---
    /// Raw strings: key tokens and `{{ .HTTPIP }}` etc. untouched.
    pub boot_command: Vec<String>,
    /// Default 10 s (0 → 10 s); `Duration::ZERO` here means "no wait" (negative in the template).
    pub boot_wait: Duration,
    /// `boot_key_interval`, else `PACKER_KEY_INTERVAL`, else [`super::DEFAULT_BOOT_KEY_INTERVAL`]
    /// (resolved by the loader).
    pub boot_key_interval: Duration,
    pub boot_keygroup_interval: Option<Duration>,

    // --- HTTP server ---
    pub http_directory: Option<String>,
    /// path → content (templates already rendered by HCL).
    pub http_content: IndexMap<String, String>,
    /// Default 8000.
    pub http_port_min: u16,
    /// Default 9000.
    pub http_port_max: u16,
    /// `None` = `0.0.0.0`.
    pub http_bind_address: Option<String>,
    pub http_interface: Option<String>,
    /// Default `tcp`.
    pub http_network_protocol: String,

    // --- communicator ---
    pub communicator: Communicator,
    /// Guest interface whose IPv4 address is used.
    pub vm_interface: Option<String>,
}

/// `ipconfig {}` of `proxmox-clone`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct IpConfig {
    pub ip: Option<String>,
    pub gateway: Option<String>,
    pub ip6: Option<String>,
    pub gateway6: Option<String>,
}

/// `vga {}`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Vga {
    pub r#type: Option<String>,
    pub memory: Option<u32>,
}

/// `efi_config {}`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct EfiConfig {
    pub efi_storage_pool: Option<String>,
    /// Default `4m` when a pool is set.
    pub efi_type: Option<String>,
    pub efi_format: Option<String>,
    pub pre_enrolled_keys: bool,
}

/// `tpm_config {}`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Tpm {
    pub tpm_storage_pool: Option<String>,
    /// Default `v2.0`.
    pub tpm_version: String,
}

/// `rng0 {}`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Rng {
    pub source: String,
    pub max_bytes: u32,
    pub period: u32,
}

/// `pci_devices {}`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct PciDevice {
    pub host: Option<String>,
    pub mapping: Option<String>,
    pub device_id: Option<String>,
    pub vendor_id: Option<String>,
    pub sub_device_id: Option<String>,
    pub sub_vendor_id: Option<String>,
    pub legacy_igd: bool,
    pub pcie: bool,
    pub mdev: Option<String>,
    pub hide_rombar: bool,
    pub romfile: Option<String>,
    pub x_vga: bool,
}

/// `disks {}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Disk {
    /// `scsi` (default), `sata`, `virtio`, `ide`.
    pub r#type: super::Bus,
    pub storage_pool: String,
    /// Deprecated (warning only).
    pub storage_pool_type: Option<String>,
    /// Default `20G`.
    pub disk_size: String,
    /// Default `raw`.
    pub format: super::DiskFormat,
    /// Default `none`.
    pub cache_mode: super::CacheMode,
    pub io_thread: bool,
    /// Only sent when set.
    pub asyncio: Option<super::AsyncIo>,
    pub discard: bool,
    pub ssd: bool,
    pub exclude_from_backup: bool,
}

/// `network_adapters {}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NetworkAdapter {
    pub bridge: String,
    /// Default `e1000`.
    pub model: super::NicModel,
    /// Explicit MAC or `repeatable`; `None` = random.
    pub mac_address: Option<String>,
    pub vlan_tag: Option<String>,
    pub firewall: bool,
    pub mtu: Option<u32>,
    pub packet_queues: Option<u32>,
}

/// `boot_iso {}` and each `additional_iso_files {}` ("ISOsConfig").
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct IsoConfig {
    /// Bus: `ide` (default), `sata`, `scsi`.
    pub r#type: super::CdromBus,
    /// Static bus index (boot ISO: `2` when `type` is unset).
    pub index: Option<String>,
    /// Deprecated `ideN`/`sataN`/`scsiN` (already converted into type + index).
    pub device: Option<String>,
    pub iso_file: Option<String>,
    pub iso_url: Option<String>,
    pub iso_urls: Vec<String>,
    /// Parsed once by the loader (`sha256:…`, bare hex, `file:…`, `<type>:file:…`, `none`);
    /// a `file:` checksum file is fetched by `init` and the build, not by validate. Shown (and
    /// serialised) in its canonical form ([`super::checksum::ChecksumSpec`]'s `Display`).
    pub iso_checksum: Option<super::checksum::ChecksumSpec>,
    pub iso_target_path: Option<String>,
    /// Default `iso`.
    pub iso_target_extension: String,
    pub iso_storage_pool: Option<String>,
    pub iso_download_pve: bool,
    pub unmount: bool,
    pub keep_cdrom_device: bool,
    pub cd_files: Vec<String>,
    pub cd_content: IndexMap<String, String>,
    pub cd_label: Option<String>,
}

/// The boot ISO.
pub type BootIso = IsoConfig;
/// One additional ISO.
pub type AdditionalIso = IsoConfig;

/// Communicator settings (`communicator`, `ssh_*`, `winrm_*`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Communicator {
    /// `communicator`: `ssh` (default), `winrm`, `none`.
    pub r#type: String,
    pub pause_before_connecting: Duration,
    pub ssh_host: Option<String>,
    /// Default 22.
    pub ssh_port: u16,
    pub ssh_username: Option<String>,
    pub ssh_password: Option<String>,
    pub ssh_private_key_file: Option<String>,
    pub ssh_certificate_file: Option<String>,
    pub ssh_agent_auth: bool,
    pub ssh_keypair_name: Option<String>,
    pub temporary_key_pair_name: Option<String>,
    pub temporary_key_pair_type: Option<String>,
    pub temporary_key_pair_bits: Option<u32>,
    pub ssh_clear_authorized_keys: bool,
    pub ssh_ciphers: Vec<String>,
    pub ssh_key_exchange_algorithms: Vec<String>,
    pub ssh_pty: bool,
    /// Default 5 min (`ssh_wait_timeout` is an alias).
    pub ssh_timeout: Duration,
    /// Default 10.
    pub ssh_handshake_attempts: u32,
    pub ssh_disable_agent_forwarding: bool,
    /// Default 5 s.
    pub ssh_keep_alive_interval: Duration,
    pub ssh_read_write_timeout: Duration,
    pub ssh_file_transfer_method: Option<String>,
    pub ssh_bastion_host: Option<String>,
    pub ssh_bastion_port: u16,
    pub ssh_bastion_username: Option<String>,
    pub ssh_bastion_password: Option<String>,
    pub ssh_bastion_agent_auth: bool,
    pub ssh_bastion_interactive: bool,
    pub ssh_bastion_private_key_file: Option<String>,
    pub ssh_bastion_certificate_file: Option<String>,
    pub ssh_proxy_host: Option<String>,
    /// Default 1080.
    pub ssh_proxy_port: u16,
    pub ssh_proxy_username: Option<String>,
    pub ssh_proxy_password: Option<String>,
    pub ssh_local_tunnels: Vec<String>,
    pub ssh_remote_tunnels: Vec<String>,
    pub winrm_username: Option<String>,
    pub winrm_password: Option<String>,
    pub winrm_host: Option<String>,
    /// `None` = 5985 (5986 with SSL).
    pub winrm_port: Option<u16>,
    /// Default 30 min.
    pub winrm_timeout: Duration,
    pub winrm_use_ssl: bool,
    pub winrm_insecure: bool,
    pub winrm_use_ntlm: bool,
    pub winrm_no_proxy: bool,
}

impl Default for Communicator {
    fn default() -> Self {
        Communicator {
            r#type: "ssh".into(),
            pause_before_connecting: Duration::ZERO,
            ssh_host: None,
            ssh_port: 22,
            ssh_username: None,
            ssh_password: None,
            ssh_private_key_file: None,
            ssh_certificate_file: None,
            ssh_agent_auth: false,
            ssh_keypair_name: None,
            temporary_key_pair_name: None,
            temporary_key_pair_type: None,
            temporary_key_pair_bits: None,
            ssh_clear_authorized_keys: false,
            ssh_ciphers: Vec::new(),
            ssh_key_exchange_algorithms: Vec::new(),
            ssh_pty: false,
            ssh_timeout: Duration::from_secs(300),
            ssh_handshake_attempts: 10,
            ssh_disable_agent_forwarding: false,
            ssh_keep_alive_interval: Duration::from_secs(5),
            ssh_read_write_timeout: Duration::ZERO,
            ssh_file_transfer_method: None,
            ssh_bastion_host: None,
            ssh_bastion_port: 22,
            ssh_bastion_username: None,
            ssh_bastion_password: None,
            ssh_bastion_agent_auth: false,
            ssh_bastion_interactive: false,
            ssh_bastion_private_key_file: None,
            ssh_bastion_certificate_file: None,
            ssh_proxy_host: None,
            ssh_proxy_port: 1080,
            ssh_proxy_username: None,
            ssh_proxy_password: None,
            ssh_local_tunnels: Vec::new(),
            ssh_remote_tunnels: Vec::new(),
            winrm_username: None,
            winrm_password: None,
            winrm_host: None,
            winrm_port: None,
            winrm_timeout: Duration::from_secs(1800),
            winrm_use_ssl: false,
            winrm_insecure: false,
            winrm_use_ntlm: false,
            winrm_no_proxy: false,
        }
    }
}

impl Default for ProxmoxIsoConfig {
    fn default() -> Self {
        ProxmoxIsoConfig {
            key_locations: super::KeyLocations::default(),
            proxmox_url: None,
            insecure_skip_tls_verify: false,
            proxmox_fingerprint: None,
            username: None,
            password: None,
            token: None,
            node: String::new(),
            pool: None,
            task_timeout: Duration::from_secs(60),
            vm_name: None,
            vm_id: None,
            tags: None,
            template_name: None,
            template_description: None,
            skip_convert_to_template: false,
            onboot: false,
            clone_vm: None,
            clone_vm_id: None,
            full_clone: true,
            nameserver: None,
            searchdomain: None,
            ipconfig: Vec::new(),
            memory: 512,
            ballooning_minimum: 0,
            cores: 1,
            sockets: 1,
            cpu_type: "kvm64".into(),
            numa: false,
            os: "other".into(),
            bios: None,
            machine: None,
            boot: None,
            scsi_controller: "lsi".into(),
            qemu_agent: true,
            disable_kvm: false,
            serials: Vec::new(),
            qemu_additional_args: None,
            vga: None,
            efi_config: None,
            efidisk: None,
            tpm_config: None,
            rng0: None,
            pci_devices: Vec::new(),
            disks: Vec::new(),
            network_adapters: Vec::new(),
            boot_iso: IsoConfig {
                r#type: super::CdromBus::Ide,
                iso_target_extension: "iso".into(),
                ..IsoConfig::default()
            },
            additional_iso_files: Vec::new(),
            cloud_init: false,
            cloud_init_storage_pool: None,
            cloud_init_disk_type: super::CdromBus::Ide,
            cloud_init_disable_upgrade_packages: false,
            boot_command: Vec::new(),
            boot_wait: Duration::from_secs(10),
            boot_key_interval: super::DEFAULT_BOOT_KEY_INTERVAL,
            boot_keygroup_interval: None,
            http_directory: None,
            http_content: IndexMap::new(),
            http_port_min: 8000,
            http_port_max: 9000,
            http_bind_address: None,
            http_interface: None,
            http_network_protocol: "tcp".into(),
            communicator: Communicator::default(),
            vm_interface: None,
        }
    }
}

/// The letters of a PVE legacy boot order (`boot = "cdn"`, also `legacy=cdn`): `a` floppy, `c` the
/// disk, `d` the CD-ROMs, `n` the network. `None` for the `order=` form.
pub fn legacy_boot_letters(boot: &str) -> Option<&str> {
    let first = boot.split(',').next().unwrap_or("");
    let letters = first.strip_prefix("legacy=").unwrap_or(first);
    (!letters.is_empty()
        && letters.len() <= 4
        && letters
            .bytes()
            .all(|b| matches!(b, b'a' | b'c' | b'd' | b'n')))
    .then_some(letters)
}
