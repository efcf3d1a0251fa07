#!/usr/bin/env bash
# The layer check: every `crate::<module>` a module of src/ names in code must sit on a
# lower layer than the module itself (src/lib.rs draws the layers). Unit-test modules
# (from a `#[cfg(test)]` line on) and comments are not scanned. Prints each upward or
# sideways edge and exits 1 if there is one.
set -euo pipefail
cd "$(dirname "$0")/../src"

# module:layer — keep in step with the diagram in src/lib.rs.
layers="
page:0 error:0 sync:0
buf:1 memory:1 stats:1 errseq:1
hooks:2 readahead:2 pdpolicy:2
bmap:3 cache:3 object:3
vnode:4
busy:5 transaction:5
fault:6
getpages:7 putpages:7 compat:7
write:8 read:8 directio:8 fault_around:8 reclaim:8
testing:9
"
layer_of() {
  local entry
  for entry in $layers; do
    if [ "${entry%%:*}" = "$1" ]; then echo "${entry##*:}"; return; fi
  done
  echo "unknown"
}

complain() {
  echo "layers: src/${file#./} $*"
  status=1
}

status=0
for file in $(find . -name '*.rs' ! -name lib.rs | sort); do
  module=$(echo "$file" | sed -e 's#^\./##' -e 's#/.*##' -e 's#\.rs$##')
  own=$(layer_of "$module")
  if [ "$own" = unknown ]; then
    complain "belongs to module '$module', which has no layer in scripts/layers.sh"
    continue
  fi
  # Code before the unit tests (a `#[cfg(test)]` line followed by a `mod` line),
  # comments stripped.
  code=$(awk '
    /^#\[cfg\((all\()?test[,)]/ { pending = 1; held = $0; next }
    pending && /^(pub(\([a-z]+\))? )?mod / { exit }
    pending { pending = 0; sub(/\/\/.*/, "", held); print held }
    { sub(/\/\/.*/, ""); print }
  ' "$file")
  # Paths the scan below could not attribute to a module are refused outright.
  # Here-strings, not `echo | grep -q`: under pipefail, grep -q closing the pipe early
  # fails the echo, and the match would be read as no match.
  if grep -q 'crate::{' <<<"$code"; then
    complain "groups modules in one \`use crate::{…}\`: write one use per module"
  fi
  if grep -Eq '\bcrate as\b' <<<"$code"; then
    complain "renames the crate: name modules through \`crate::\`"
  fi
  case "$file" in
    ./*/*.rs) own_root='super::super' ;;
    *) own_root='super::' ;;
  esac
  if [ "${file##*/}" = mod.rs ]; then own_root='super::'; fi
  if grep -q "$own_root" <<<"$code"; then
    complain "reaches the crate root through \`$own_root\`: name the module through \`crate::\`"
  fi
  if grep -Eq 'crate::[A-Z]' <<<"$code"; then
    complain "uses a root re-export (\`crate::Name\`): name the module that defines it"
  fi
  used=$(grep -o 'crate::[a-z_]*' <<<"$code" | sed 's/crate:://' | sort -u || true)
  for target in $used; do
    [ "$target" = "$module" ] && continue
    theirs=$(layer_of "$target")
    if [ "$theirs" = unknown ] || [ "$theirs" -ge "$own" ]; then
      complain "($module, layer $own) uses crate::$target (layer $theirs)"
    fi
  done
done
if [ "$status" = 0 ]; then echo "layers: every import points down"; fi
exit "$status"
