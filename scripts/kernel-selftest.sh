#!/usr/bin/env bash
# Builds the genpager kernel host (hosts/kernel), boots it in QEMU on UEFI firmware
# (OVMF) with software emulation, passes its serial output through, and fails unless
# it prints "genpager kernel self-test: N passed, 0 failed" and exits with success.
# The kernel runs a concurrent workload on two ext2 images (1 KiB and 4 KiB blocks)
# made here with mke2fs -d from genpager_ext2::workload's tree; after QEMU exits the
# images must pass e2fsck -fn and every file the kernel wrote must match, by debugfs,
# what its writer was told to write.
# Installs QEMU, OVMF, e2fsprogs and the x86_64-unknown-uefi target when missing.
#
# Environment: KERNEL_TIMEOUT (seconds, default 120), KERNEL_PROFILE (release|dev,
# default release), KERNEL_DISK_IOPS (the virtio disks' throttle, default 400).
set -euo pipefail
cd "$(dirname "$0")/.."

timeout_s="${KERNEL_TIMEOUT:-120}"
profile="${KERNEL_PROFILE:-release}"
say() { printf '==> %s\n' "$*" >&2; }

# --- what it needs --------------------------------------------------------------
find_ovmf() {
  for f in /usr/share/ovmf/OVMF.fd /usr/share/OVMF/OVMF.fd /usr/share/qemu/OVMF.fd; do
    [ -f "$f" ] && { echo "bios $f"; return 0; }
  done
  for code in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_CODE.fd; do
    vars="${code/CODE/VARS}"
    [ -f "$code" ] && [ -f "$vars" ] && { echo "pflash $code $vars"; return 0; }
  done
  return 1
}

# mke2fs, e2fsck and debugfs live in /sbin on Debian.
export PATH="$PATH:/sbin:/usr/sbin"
if ! command -v qemu-system-x86_64 >/dev/null || ! find_ovmf >/dev/null \
  || ! command -v mke2fs >/dev/null || ! command -v debugfs >/dev/null; then
  say "installing qemu-system-x86, ovmf and e2fsprogs"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq qemu-system-x86 ovmf e2fsprogs >/dev/null
fi
firmware="$(find_ovmf)" || { say "no OVMF firmware found"; exit 1; }

if ! rustup target list --installed | grep -qx x86_64-unknown-uefi; then
  say "adding the x86_64-unknown-uefi target"
  rustup target add x86_64-unknown-uefi
fi

# --- build ------------------------------------------------------------------------
say "building hosts/kernel ($profile)"
profile_flag=(--release)
profile_dir=release
if [ "$profile" = dev ]; then profile_flag=(); profile_dir=debug; fi
(cd hosts/kernel && cargo build "${profile_flag[@]}")
efi="hosts/kernel/target/x86_64-unknown-uefi/$profile_dir/genpager-kernel.efi"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/esp/EFI/BOOT"
cp "$efi" "$work/esp/EFI/BOOT/BOOTX64.EFI"

# Two raw virtio-blk disks (8 MiB and 4 MiB): sector s holds the 8-byte record
# <letter><s in 7 decimal digits> 64 times, letter S on the first disk, T on the
# second; the kernel's virtio self-test knows the pattern.
make_disk() { # letter sectors file
  awk -v letter="$1" -v sectors="$2" 'BEGIN {
    for (s = 0; s < sectors; s++) {
      rec = sprintf("%s%07d", letter, s); sec = ""
      for (i = 0; i < 64; i++) sec = sec rec
      printf "%s", sec
    }
  }' >"$3"
}
make_disk S 16384 "$work/disk0.img"
make_disk T 8192 "$work/disk1.img"
# --- the ext2 images ----------------------------------------------------------------
# One tree (genpager_ext2::workload: files of assorted sizes, holes, data past the
# double-indirect threshold, /MANIFEST of checksums), two images of it: 1 KiB and 4 KiB
# blocks. The kernel's workload reads and writes both at once.
say "building the ext2 tree and images"
cargo run -q -p genpager-ext2 --example kernel_image -- tree "$work/tree"
cargo run -q -p genpager-ext2 --example kernel_image -- expect "$work/expect"
for bs in 1024 4096; do
  mke2fs -q -F -t ext2 -b "$bs" -L "gp$bs" -d "$work/tree" "$work/ext2-$bs.img" 48M
done

# QEMU's drive throttling makes completions arrive late, as on a real disk.
throttle="throttling.iops-total=${KERNEL_DISK_IOPS:-400}"

read -r kind code vars <<<"$firmware"
if [ "$kind" = bios ]; then
  fw_args=(-bios "$code")
else
  cp "$vars" "$work/vars.fd"
  fw_args=(-drive "if=pflash,format=raw,readonly=on,file=$code"
           -drive "if=pflash,format=raw,file=$work/vars.fd")
fi

# --- run ----------------------------------------------------------------------------
say "booting in QEMU (timeout ${timeout_s}s)"
set +e
timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 \
  -machine q35 -m 256M -smp 2 -nodefaults -no-reboot -display none -monitor none \
  "${fw_args[@]}" \
  -drive "format=raw,file=fat:rw:$work/esp" \
  -drive "if=none,id=d0,format=raw,file=$work/disk0.img,$throttle" \
  -device virtio-blk-pci,drive=d0 \
  -drive "if=none,id=d1,format=raw,file=$work/disk1.img,$throttle" \
  -device virtio-blk-pci,drive=d1 \
  -drive "if=none,id=e1,format=raw,file=$work/ext2-1024.img,$throttle" \
  -device virtio-blk-pci,drive=e1 \
  -drive "if=none,id=e4,format=raw,file=$work/ext2-4096.img,$throttle" \
  -device virtio-blk-pci,drive=e4 \
  -serial stdio \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  </dev/null | tee "$work/serial.log"
status=${PIPESTATUS[0]}
set -e

line="$(tr -d '\r' <"$work/serial.log" | grep -E '^genpager kernel self-test: ' | tail -n 1 || true)"
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  say "FAILED: QEMU did not finish within ${timeout_s}s"
  exit 1
fi
if [ -z "$line" ]; then
  say "FAILED: no self-test line on the serial port (QEMU exit status $status)"
  exit 1
fi
if ! grep -Eq '^genpager kernel self-test: [0-9]+ passed, 0 failed$' <<<"$line"; then
  say "FAILED: $line"
  exit 1
fi
# A run that never completed a request from an interrupt, or never slept, proves
# nothing about a real kernel's paths: the line before the verdict must show both.
counts="$(tr -d '\r' <"$work/serial.log" | grep -E '^genpager kernel: requests ' | tail -n 1 || true)"
in_irq="$(sed -nE 's/.*completions in interrupt context ([0-9]+).*/\1/p' <<<"$counts")"
sleeps="$(sed -nE 's/.*genpager sleeps ([0-9]+).*/\1/p' <<<"$counts")"
if [ -z "$in_irq" ] || [ "$in_irq" -eq 0 ] || [ -z "$sleeps" ] || [ "$sleeps" -eq 0 ]; then
  say "FAILED: no completions in interrupt context or no genpager sleeps: ${counts:-no counts line}"
  exit 1
fi
# isa-debug-exit: status = (code << 1) | 1; the kernel writes 0x10 on success.
if [ "$status" -ne 33 ]; then
  say "FAILED: QEMU exit status $status, expected 33 (isa-debug-exit success)"
  exit 1
fi
# --- checked from outside -------------------------------------------------------------
# e2fsck must find both filesystems clean, and every file the kernel's writers changed
# must hold exactly what their scripts say (genpager_ext2::workload::expected).
for bs in 1024 4096; do
  img="$work/ext2-$bs.img"
  if ! e2fsck -fn "$img" >"$work/fsck-$bs.log" 2>&1; then
    cat "$work/fsck-$bs.log" >&2
    say "FAILED: e2fsck -fn finds the $bs-byte-block image damaged"
    exit 1
  fi
  for expected in "$work/expect"/*; do
    name="$(basename "$expected")"
    dump="$work/dump-$bs-$name"
    debugfs -R "dump /w/$name $dump" "$img" >/dev/null 2>&1
    if ! cmp -s "$expected" "$dump"; then
      say "FAILED: /w/$name on the $bs-byte-block image differs from what its writer wrote"
      cmp "$expected" "$dump" >&2 || true
      exit 1
    fi
  done
  say "$bs-byte-block image: e2fsck clean, $(ls "$work/expect" | wc -l) written files match"
done
say "kernel self-test passed"
