#!/bin/bash
# Build the kiln test-guest ISO (an Ubuntu-live-server-like autoinstall ISO from Debian packages).
# Called by `cargo xtask test-guest`, which provides:
#   RECIPE  this directory          OUT    output dir (guest.iso lands here)
#   CACHE   persistent .deb cache   MIRROR Debian mirror (from the host's apt sources)
#   SECURITY_MIRROR (optional)      SUITE  (bookworm)
# Stages: debootstrap minbase -> apt install packages.txt -> configure + prune -> rootfs.tar.zst
#         -> installer initramfs (busybox + python3/PyYAML + modules) -> grub-mkrescue ISO
set -euo pipefail
: "${RECIPE:?}" "${OUT:?}" "${CACHE:?}" "${MIRROR:?}"
SUITE=${SUITE:-bookworm}
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
W="$OUT/work"; R="$W/rootfs"; I="$W/initramfs"; ISO="$W/iso"
mkdir -p "$CACHE/debootstrap" "$CACHE/archives/partial"
now() { date +%s.%N; }
stage() { printf 'stage %-28s %6.1f s\n' "$1" "$(echo "$(now) - $2" | bc)" | tee -a "$OUT/timings.txt"; }
umount_all() { for fs in var/cache/apt/archives dev/pts dev sys proc; do umount "$R/$fs" 2>/dev/null || true; done; }
trap umount_all EXIT
umount_all
rm -rf "$W"; mkdir -p "$W" "$R"; : > "$OUT/timings.txt"

# ---- 1. base system ----------------------------------------------------------
t=$(now)
debootstrap --variant=minbase --arch=amd64 --cache-dir="$CACHE/debootstrap" "$SUITE" "$R" "$MIRROR" \
    > "$OUT/debootstrap.log" 2>&1 || { tail -n 30 "$OUT/debootstrap.log"; exit 1; }
stage debootstrap "$t"

# ---- 2. packages ---------------------------------------------------------------
t=$(now)
mkdir -p "$R/etc/dpkg/dpkg.cfg.d"
cat > "$R/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'X'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
X
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
rm -f "$R/etc/apt/sources.list.d/"* 
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -n "${SECURITY_MIRROR:-}" ] && echo "deb $SECURITY_MIRROR $SUITE-security main"
} > "$R/etc/apt/sources.list"
echo 'grub-pc grub-pc/install_devices_empty boolean true' > "$R/tmp/sel"
for fs in proc sys dev dev/pts; do mount --bind "/$fs" "$R/$fs"; done
mount --bind "$CACHE/archives" "$R/var/cache/apt/archives"
chroot "$R" debconf-set-selections /tmp/sel
chroot "$R" apt-get update -qq > "$OUT/apt.log" 2>&1 || { tail -n 30 "$OUT/apt.log"; exit 1; }
PKGS=$(sed 's/#.*//' "$RECIPE/packages.txt" | xargs)
chroot "$R" apt-get install -y -q --no-install-recommends $PKGS >> "$OUT/apt.log" 2>&1 \
    || { tail -n 30 "$OUT/apt.log"; exit 1; }
umount "$R/var/cache/apt/archives"
stage apt-install "$t"

# ---- 3. configure the installed system ------------------------------------------
t=$(now)
KVER=$(ls "$R/lib/modules" | sort -V | tail -n1)
# drop kernel modules no VM needs (GPU, sound, wireless, media, HBAs, exotic filesystems, ...):
# smaller ISO, faster unpack
M="$R/lib/modules/$KVER/kernel"
rm -rf "$M/sound" "$M/drivers/gpu" "$M/drivers/media" "$M/drivers/net/wireless" "$M/drivers/infiniband" \
       "$M/drivers/bluetooth" "$M/net/bluetooth" "$M/drivers/staging" "$M/drivers/isdn" "$M/drivers/iio" \
       "$M/drivers/net/can" "$M/net/wireless" "$M/net/mac80211" "$M/drivers/hwmon" "$M/drivers/mtd" \
       "$M/drivers/thunderbolt" "$M/drivers/net/usb" "$M/drivers/usb/gadget" "$M/drivers/nfc" "$M/net/nfc" \
       "$M/drivers/comedi" "$M/drivers/platform" "$M/drivers/power" "$M/drivers/leds" "$M/drivers/w1" \
       "$M/drivers/mmc" "$M/drivers/memstick" "$M/drivers/target" "$M/drivers/fpga" "$M/drivers/misc" \
       "$M/drivers/gnss" "$M/drivers/atm" "$M/net/atm" "$M/drivers/net/ieee802154" "$M/net/ieee802154" \
       "$M/drivers/net/wwan" "$M/drivers/net/hamradio" "$M/drivers/net/fddi" "$M/drivers/net/arcnet" \
       "$M/drivers/spi" "$M/drivers/i2c" "$M/drivers/regulator" "$M/drivers/pinctrl" "$M/drivers/mfd"
rm -f "$M"/lib/test_*.ko
for fs in xfs nfs nfsd btrfs ocfs2 smb cifs gfs2 ceph f2fs jfs reiserfs nilfs2 ubifs dlm afs coda ntfs3 \
          orangefs ntfs hfs hfsplus udf ubifs bcachefs erofs cachefiles fscache 9p gfs2 lockd nfs_common; do
    rm -rf "${M:?}/fs/$fs"
done
find "$M/drivers/scsi" -mindepth 1 -maxdepth 1 -type d ! -name device_handler -exec rm -rf {} +
find "$M/drivers/net/ethernet" -mindepth 1 -maxdepth 1 -type d \
     ! -name intel ! -name realtek ! -name vmware -exec rm -rf {} +
rm -rf "$R/usr/share/i18n"
chroot "$R" depmod -a "$KVER"
cat > "$R/etc/default/grub" <<'X'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_TERMINAL_INPUT=console
GRUB_TERMINAL_OUTPUT=vga_text
GRUB_DISABLE_OS_PROBER=true
X
# the installed system's initramfs: only what a PVE-style VM needs to mount / (small, boots fast)
printf 'COMPRESS=zstd\nMODULES=list\n' > "$R/etc/initramfs-tools/conf.d/testguest"
printf '%s\n' virtio_pci virtio_blk virtio_scsi scsi_mod sd_mod sr_mod libata ahci ata_piix ata_generic \
    nvme crc32c_generic crc32c-intel ext4 >> "$R/etc/initramfs-tools/modules"
chroot "$R" update-initramfs -u -k "$KVER" > /dev/null 2>&1
cat > "$R/etc/cloud/cloud.cfg.d/90_dpkg.cfg" <<'X'
# test guest: only look at the NoCloud seed the installer wrote
datasource_list: [ NoCloud, None ]
X
# no `locales` package: glibc's built-in C.UTF-8 makes cloud-init's cc_locale a no-op
echo 'LANG=C.UTF-8' > "$R/etc/default/locale"
printf 'locale: C.UTF-8\n' > "$R/etc/cloud/cloud.cfg.d/91-testguest.cfg"
cat > "$R/etc/network/interfaces" <<'X'
# cloud-init writes the real config into interfaces.d
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
X
# ACPI power button (QMP system_powerdown / PVE "shutdown") -> clean poweroff via systemd-logind
mkdir -p "$R/etc/systemd/logind.conf.d"
printf '[Login]\nHandlePowerKey=poweroff\nPowerKeyIgnoreInhibited=yes\n' > "$R/etc/systemd/logind.conf.d/10-powerkey.conf"
# boot time under TCG (measured, see docs/testing.md): nothing the guest must prove (cloud-init's
# stages, sshd, qemu-guest-agent, python3) waits on these, but each costs CPU in the first minutes
# after boot, and apt-daily also takes the dpkg lock a provisioner's `apt-get install` needs.
# Periodic maintenance of a long-lived machine, not of a throwaway test VM:
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
         e2scrub_reap.service fstrim.timer; do   # = systemctl mask, without needing systemd on the host
    rm -f "$R"/etc/systemd/system/*.wants/"$u"; ln -sf /dev/null "$R/etc/systemd/system/$u"
done
echo testguest > "$R/etc/hostname"
: > "$R/etc/resolv.conf"              # do not ship the build host's resolver
: > "$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id"
rm -f "$R"/etc/ssh/ssh_host_*          # cloud-init generates host keys on first boot
rm -f "$R/usr/sbin/policy-rc.d" "$R/tmp/sel"
chroot "$R" apt-get clean
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/log/*.log "$R"/var/log/apt/* \
       "$R"/usr/share/man/* "$R"/usr/share/locale/* "$R"/usr/share/info/* \
       "$R"/var/cache/debconf/*-old "$R"/tmp/* 2>/dev/null || true
find "$R/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
umount_all
echo "rootfs_MiB $(du -sm "$R" | cut -f1)" | tee -a "$OUT/timings.txt"
stage configure "$t"

# ---- 4. payload ------------------------------------------------------------------
t=$(now)
mkdir -p "$ISO/casper" "$ISO/boot/grub"
tar -C "$R" --numeric-owner --sort=name -cpf - . | zstd -q -T0 -12 > "$ISO/casper/rootfs.tar.zst"
stage payload "$t"

# ---- 5. installer initramfs --------------------------------------------------------
t=$(now)
mkdir -p "$I"/{bin,sbin,usr/bin,usr/sbin,usr/lib/testguest/bin,etc,lib,lib64,proc,sys,dev,run,tmp,target,cdrom,seed,cidata}
copy_with_libs() {   # copy_with_libs FILE...: files from the rootfs plus the libraries they need
    for f in "$@"; do
        mkdir -p "$I$(dirname "$f")"; cp -L "$R$f" "$I$f"
        chroot "$R" ldd "$f" 2>/dev/null | awk '/=>/ {print $3} /^\t\/lib64/ {print $1}' | while read -r lib; do
            [ -n "$lib" ] || continue
            mkdir -p "$I$(dirname "$lib")"; [ -e "$I$lib" ] || cp -L "$R$lib" "$I$lib"
        done
    done
}
cp /usr/bin/busybox "$I/bin/busybox"
for a in $("$I/bin/busybox" --list); do
    [ "$a" = busybox ] && continue
    ln -sf busybox "$I/bin/$a"
done
# real tools busybox lacks (GPT sfdisk, ext4 mkfs, blkid -s UUID, zstd) and python3 + PyYAML
copy_with_libs /sbin/sfdisk /sbin/wipefs /sbin/blkid /sbin/mke2fs /sbin/mkfs.fat /usr/bin/zstd /usr/bin/python3.11
for tool in sfdisk wipefs blkid mke2fs mkfs.fat; do rm -f "$I/bin/$tool"; ln -sf "/sbin/$tool" "$I/usr/sbin/$tool"; done
rm -f "$I/bin/zstd"; ln -sf python3.11 "$I/usr/bin/python3"
ln -sf /sbin/mke2fs "$I/sbin/mkfs.ext4"; cp "$R/etc/mke2fs.conf" "$I/etc/"
# python3 + PyYAML for autoinstall.py: only the modules it really imports (traced in the rootfs
# on good and bad configs), with their .pyc and the libraries of the extension modules used
cp "$RECIPE/autoinstall.py" "$R/tmp/autoinstall.py"
cat > "$R/tmp/trace.py" <<'X'
import os, runpy, sys
os.makedirs('/tmp/t/etc', exist_ok=True); os.makedirs('/tmp/t/etc/ssh', exist_ok=True)
open('/tmp/good', 'w').write('#cloud-config\nautoinstall:\n  version: 1\n  identity: {hostname: h, username: u, password: x}\n'
    '  ssh: {install-server: true, allow-pw: true, authorized-keys: [k]}\n  late-commands: [echo hi, [echo, hi]]\n  user-data: {users: [{name: p}]}\n')
open('/tmp/md', 'w').write('instance-id: i\n')
open('/tmp/bad1', 'w').write('#cloud-config\nautoinstall: [\n')
open('/tmp/bad2', 'wb').write(b'#cloud-config\n\xff\n')
open('/tmp/bad3', 'w').write('#!/bin/sh\n')
open('/tmp/bad4', 'w').write('#cloud-config\na: 1\n')
for args in (['check', '/tmp/good'], ['check', '/tmp/bad1'], ['check', '/tmp/bad2'], ['check', '/tmp/bad3'],
             ['check', '/tmp/bad4'], ['seed', '/tmp/good', '/tmp/md', '/tmp/t']):
    sys.argv = ['autoinstall.py'] + args
    try:
        runpy.run_path('/tmp/autoinstall.py', run_name='__main__')
    except SystemExit:
        pass
with open('/tmp/modules.txt', 'w') as f:
    for m in list(sys.modules.values()):
        p = getattr(m, '__file__', None)
        if p:
            f.write(os.path.realpath(p) + '\n')
            c = getattr(m, '__cached__', None)
            if c and os.path.exists(c):
                f.write(os.path.realpath(c) + '\n')
X
chroot "$R" python3 /tmp/trace.py > /dev/null
PYFILES=$(grep -v '^/tmp/' "$R/tmp/modules.txt" | sort -u)
for f in $PYFILES; do mkdir -p "$I$(dirname "$f")"; cp "$R$f" "$I$f"; done
copy_with_libs $(echo "$PYFILES" | grep '\.so$' || true)
rm -rf "$R/tmp/"*
# kernel modules + their dependencies
MODS="virtio_pci virtio_blk virtio_scsi virtio_net virtio_console sd_mod sr_mod cdrom ata_piix ata_generic
      ahci nvme isofs vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8 crc32c_generic crc32c-intel ext4 af_packet e1000 e1000e
      8139cp 8139too vmxnet3"
for m in $MODS; do
    modprobe -d "$R" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}' || true
done | sort -u > "$W/initramfs-modules.txt"
while read -r ko; do
    mkdir -p "$I$(dirname "${ko#"$R"}")"; cp "$ko" "$I${ko#"$R"}"
done < "$W/initramfs-modules.txt"
cp "$R/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$I/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$I" "$KVER"
install -m 755 "$RECIPE/init" "$I/init"
install -m 755 "$RECIPE/udhcpc.script" "$I/etc/udhcpc.script"
install -m 755 "$RECIPE/autoinstall.py" "$I/usr/lib/testguest/autoinstall.py"
install -m 755 "$RECIPE/curtin" "$I/usr/lib/testguest/bin/curtin"
printf '#cloud-config\nautoinstall:\n  version: 1\n' > "$I/tmp/ok"; printf '#cloud-config\nx: [\n' > "$I/tmp/bad"
chroot "$I" /usr/bin/python3 /usr/lib/testguest/autoinstall.py check /tmp/ok > /dev/null \
    && ! chroot "$I" /usr/bin/python3 /usr/lib/testguest/autoinstall.py check /tmp/bad > /dev/null \
    || { echo "python3 + PyYAML do not work in the installer initramfs"; exit 1; }
rm -f "$I/tmp/ok" "$I/tmp/bad"
echo "initramfs_MiB $(du -sm "$I" | cut -f1) ($(wc -l < "$W/initramfs-modules.txt") modules)" | tee -a "$OUT/timings.txt"
(cd "$I" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0 | zstd -q -19 -T0) > "$ISO/casper/initrd"
stage initramfs "$t"

# ---- 6. ISO ------------------------------------------------------------------------------
t=$(now)
cp "$R/boot/vmlinuz-$KVER" "$ISO/casper/vmlinuz"
cp "$RECIPE/grub.cfg" "$ISO/boot/grub/grub.cfg"
echo "kiln test guest: Ubuntu-like autoinstall ISO (Debian $SUITE payload, kernel $KVER)" > "$ISO/README.diskdefines"
# UEFI: boot through the signed chain, as Ubuntu's ISO does, so that OVMF with Secure Boot on and
# Microsoft's keys enrolled (PVE pre-enrolled-keys=1) accepts it: EFI/BOOT/BOOTX64.EFI is shim,
# grubx64.efi beside it Debian's signed GRUB image for CDs (gcdx64: it finds the ISO by
# /.disk/info and reads /boot/grub/grub.cfg; its modules are built in). grub-mkrescue still lays
# out the hybrid ISO and the BIOS boot; the wrapper below swaps its unsigned EFI image for this one.
mkdir -p "$ISO/.disk"
echo "kiln test guest (Debian $SUITE, kernel $KVER)" > "$ISO/.disk/info"
EFIIMG="$W/efi-signed.img"
mkfs.fat -C -n EFIBOOT "$EFIIMG" 8192 > /dev/null
mmd -i "$EFIIMG" ::/EFI ::/EFI/BOOT
mcopy -i "$EFIIMG" "$R/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$EFIIMG" "$R/usr/lib/shim/mmx64.efi.signed" ::/EFI/BOOT/mmx64.efi
mcopy -i "$EFIIMG" "$R/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed" ::/EFI/BOOT/grubx64.efi
cat > "$W/xorriso-signed-efi" <<'X'
#!/bin/sh
# grub-mkrescue --xorriso=THIS: put the signed EFI boot image in place of grub-mkrescue's unsigned
# one (efi.img in the tree it passes with -r), then run the real xorriso
dir=; prev=
for a in "$@"; do [ "$prev" = -r ] && dir=$a; prev=$a; done
if [ -n "$dir" ]; then
    [ -f "$dir/efi.img" ] || { echo "no efi.img in grub-mkrescue's tree $dir" >&2; exit 1; }
    cp "$KILN_SIGNED_EFI_IMG" "$dir/efi.img"
fi
exec xorriso "$@"
X
chmod +x "$W/xorriso-signed-efi"
KILN_SIGNED_EFI_IMG="$EFIIMG" grub-mkrescue --xorriso="$W/xorriso-signed-efi" -o "$OUT/guest.iso.tmp" "$ISO" \
    -- -volid KILN_TESTGUEST > "$OUT/grub-mkrescue.log" 2>&1 || { cat "$OUT/grub-mkrescue.log"; exit 1; }
xorriso -indev "$OUT/guest.iso.tmp" -report_el_torito plain 2>/dev/null | grep -q 'UEFI' \
    || { echo "the ISO has no UEFI El Torito entry"; exit 1; }
mv "$OUT/guest.iso.tmp" "$OUT/guest.iso"
stage iso "$t"
ls -l "$ISO/casper" | tee -a "$OUT/timings.txt"
rm -rf "$W"
