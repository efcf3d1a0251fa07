#!/usr/bin/env bash
# The whole test gate: run locally and by CI (.ci/run). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# No --all-features anywhere: the page-size features page-16k and page-64k exclude each
# other (both on is a compile_error!). `--features testing` turns on genpager's test rig
# (and std) for both default members, the library and the ext2 host.

step "toolchain components and packages"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add x86_64-unknown-none >/dev/null
rustup target add aarch64-unknown-none >/dev/null
rustup target add riscv64gc-unknown-none-elf >/dev/null
# The ext2 host's tests make images with mke2fs and check them with e2fsck and debugfs.
if ! command -v mke2fs >/dev/null 2>&1 && [ ! -x /sbin/mke2fs ] && [ ! -x /usr/sbin/mke2fs ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq e2fsprogs
fi

step "cargo fmt --check"
cargo fmt --all --check

step "layers: every module imports only from lower layers (src/lib.rs draws them)"
bash scripts/layers.sh

step "cargo clippy"
cargo clippy --all-targets --features testing -- -D warnings

step "cargo clippy, 16 KiB pages"
cargo clippy -p genpager --all-targets --features testing,page-16k -- -D warnings

step "cargo clippy: no unchecked arithmetic in the library (the test rig excluded)"
# Every offset computation is checked or carries a `// Cannot overflow:` proof.
cargo clippy -p genpager --lib --no-default-features -- -D warnings -D clippy::arithmetic_side_effects

step "no_std builds: x86_64, aarch64 (4, 16 and 64 KiB pages), riscv64"
cargo build -p genpager --lib --no-default-features --target x86_64-unknown-none
cargo build -p genpager --lib --no-default-features --target aarch64-unknown-none
cargo build -p genpager --lib --no-default-features --features page-16k --target aarch64-unknown-none
cargo build -p genpager --lib --no-default-features --features page-64k --target aarch64-unknown-none
cargo build -p genpager --lib --no-default-features --target riscv64gc-unknown-none-elf
cargo build -p genpager-ext2 --no-default-features --target x86_64-unknown-none

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features testing

step "cargo test (the library and the ext2 host: both are default members)"
cargo test --features testing

step "cargo test at 16 KiB pages (unit, scenario, model and doc tests of the library)"
# 64 model cases per property instead of 256 (pages four times larger make each case
# about three times slower; PROPTEST_CASES_16K overrides). The allocation-failure sweep
# step below, loom and Miri run at 4 KiB only.
PROPTEST_CASES="${PROPTEST_CASES_16K:-64}" cargo test -p genpager --features testing,page-16k

step "allocation-failure sweep (each entry point, the N-th allocation failing, every N)"
cargo test -p genpager --features testing --test alloc_sweep every_operation -- --nocapture 2>&1 \
  | grep -E "cases ran|test result"

if [ -f tests/loom.rs ]; then
  step "loom (bounded)"
  # ~70 s to build, ~150 s to explore (24 models; L2 and one L10 take ~60 s each, L16-L17 ~19 s
  # together, 14 s of it L16's truncate below the fault's page, L18 the page daemon's reclaim
  # ~15 s). RUST_BACKTRACE=0: a failing model
  # otherwise prints a backtrace from inside loom's generator threads, which can hang.
  RUSTFLAGS="--cfg loom -C debug_assertions" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
    RUST_BACKTRACE=0 cargo test --release -p genpager --test loom --features std
fi

if [ "${SKIP_MIRI:-0}" != 1 ]; then
  step "miri (nightly) over the code that reaches unsafe"
  if ! rustup run nightly cargo miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src
  fi
  MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
    cargo +nightly miri test -p genpager --features testing --lib -- --skip threaded --skip testing::
  # Scenario tests that reach each unsafe path (BusyPages and fast-path page bytes,
  # request segments filled and gathered, zero-filled holes, direct I/O buffers and host
  # aliases, ByteIo slices), chosen by name: whole files take many minutes under Miri
  # (tests/directio.rs alone ~7). ~1.5 min.
  MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
    cargo +nightly miri test -p genpager --features testing \
      --test getpages --test putpages --test write --test directio --test compat \
      --test nothing_lost -- \
      c0 g07_overwrite_reads_nothing g08_resident_pages_need_no_io g11_eof_mid_page \
      a_fault_write_protects requests_are_whole_sectors_and_the_tail \
      g12_read_fault_on_hole g12_write_fault_on_hole g14 p09_unknown_pages p11_free_frees \
      p12_a_failed_synchronous_write d05_read_over_a_hole d07_device_error_mid_read \
      d07_an_alias holes_past_eof truncate_into setsize_shrink
  # A reduced model suite: one case of the block and compat properties (~4 min). The
  # unaligned-largest-size property is left out here: it reaches no unsafe code the
  # others do not, and its files' block tables (sizes up to 4 GiB) take Miri too long.
  MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance} -Zmiri-env-forward=PROPTEST_CASES" \
    PROPTEST_CASES="${MIRI_PROPTEST_CASES:-1}" \
    cargo +nightly miri test -p genpager --features testing --test model -- files_match_the_model
fi

step "the kernel host: cargo fmt --check and clippy (its own workspace, x86_64-unknown-uefi)"
rustup target add x86_64-unknown-uefi >/dev/null
(cd hosts/kernel && cargo fmt --check && cargo clippy --release -- -D warnings)

step "freestanding kernel boots in QEMU, runs its threads and ext2 workload, passes its self-test"
bash scripts/kernel-selftest.sh

step "all gates passed"
