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
buf:1
hooks:2
bmap:3 cache:3 object:3
vnode:4
busy:5 transaction:5
fault:6
getpages:7 putpages:7 compat:7
write:8 read:8 directio:8
testing:9
"
layer_of() {
  local entry
  for entry in $layers; do
    if [ "${entry%%:*}" = "$1" ]; then echo "${entry##*:}"; return; fi
  done
  echo "unknown"
}

status=0
for file in $(find . -name '*.rs' ! -name lib.rs | sort); do
  module=$(echo "$file" | sed -e 's#^\./##' -e 's#/.*##' -e 's#\.rs$##')
  own=$(layer_of "$module")
  if [ "$own" = unknown ]; then
    echo "layers: src/${file#./} belongs to module '$module', which has no layer in scripts/layers.sh"
    status=1
    continue
  fi
  # Code lines before the unit tests, comments stripped, then every `crate::name`.
  code=$(awk '/^#\[cfg\((all\()?test[,)]/ { exit } { sub(/\/\/.*/, ""); print }' "$file")
  # A grouped `crate::{a::x, b::y}` would hide its modules from the scan below.
  if echo "$code" | grep -q 'crate::{'; then
    echo "layers: src/${file#./} groups modules in one \`use crate::{…}\`: write one use per module"
    status=1
  fi
  used=$(echo "$code" | grep -o 'crate::[a-z_]*' | sed 's/crate:://' | sort -u || true)
  for target in $used; do
    [ "$target" = "$module" ] && continue
    theirs=$(layer_of "$target")
    if [ "$theirs" = unknown ] || [ "$theirs" -ge "$own" ]; then
      echo "layers: src/${file#./} ($module, layer $own) uses crate::$target (layer $theirs)"
      status=1
    fi
  done
done
if [ "$status" = 0 ]; then echo "layers: every import points down"; fi
exit "$status"
