#!/usr/bin/env bash
# Rebuilds images/sample.img, the small ext2 image the `ext2` example uses when run
# without arguments. Deterministic: fixed UUID, hash seed, timestamps and contents.
# Needs e2fsprogs (mke2fs) and coreutils.
set -euo pipefail
cd "$(dirname "$0")"

command -v mke2fs >/dev/null || {
  echo "mke2fs not found: install e2fsprogs (apt-get install e2fsprogs)" >&2
  exit 1
}

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT

mkdir -p "$tree/docs" "$tree/data" "$tree/nested/a/b/c"

cat >"$tree/README" <<'TEXT'
A small ext2 image for genpager's ext2 host, made by images/make-sample.sh
with mke2fs -d. Every file here is read through the pager: try

    cargo run --release -p genpager-ext2 --example ext2 -- hosts/ext2/images/sample.img ls /
    cargo run --release -p genpager-ext2 --example ext2 -- hosts/ext2/images/sample.img cat /README
TEXT

# ~20 KiB of text: past the 12 direct blocks of a 1 KiB-block filesystem.
for i in $(seq 1 400); do
  printf 'line %03d: the pager maps, reads and clusters these blocks\n' "$i"
done >"$tree/docs/lines.txt"

# 300 KiB of numbered lines: past the single-indirect range (268 KiB).
seq -f '%010.0f: genpager reads this through getpages' 1 7000 >"$tree/data/big.bin"
truncate -s $((300 * 1024)) "$tree/data/big.bin"

# Data, 64 KiB of zeroes (mke2fs leaves them as holes), data, zeroes at the end.
{
  head -c 65536 "$tree/data/big.bin"
  head -c 65536 /dev/zero
  tail -c 32768 "$tree/data/big.bin"
  head -c 16384 /dev/zero
} >"$tree/data/sparse.bin"

: >"$tree/data/empty"
echo "deep" >"$tree/nested/a/b/c/deep.txt"
ln -s ../docs/lines.txt "$tree/nested/lines-link"

find "$tree" -exec touch -h -d @1700000000 {} +

rm -f sample.img
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext2 -b 1024 -N 64 -m 0 -L sample \
  -U 6a0c1e3e-4d1b-4a6e-9b3e-2f1d0c9b8a77 \
  -E hash_seed=0b1e2a3c-4d5e-6f70-8192-a3b4c5d6e7f8,root_owner=0:0 \
  -d "$tree" sample.img 1024
e2fsck -fn sample.img >/dev/null 2>&1 || { echo "e2fsck finds sample.img inconsistent" >&2; exit 1; }
echo "images/sample.img: $(stat -c %s sample.img) bytes"
