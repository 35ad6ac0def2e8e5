#!/usr/bin/env bash
# The release tarball on a machine without Swift: its binary needs no Swift library, runs with
# the toolchain hidden from the loader (the toolchain's folder covered by an empty tmpfs in a
# private mount namespace when this runs as root; otherwise an empty LD_LIBRARY_PATH and a check
# that ld.so knows no Swift folder), and trains; completions and man pages are in place.
# With CONTROL, a binary linked dynamically against the toolchain, the check first shows that
# the hiding works: CONTROL must fail to start under it.
# usage: Tests/dist/check.sh TARBALL [MNIST_FOLDER] [CONTROL]
set -euo pipefail
tarball=$1
mnist=${2:-}
control=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xzf "$tarball" -C "$work"
root=$(echo "$work"/shardwise-*)
bin=$root/bin/shardwise
fail() { echo "dist check: $*" >&2; exit 1; }

if ldd "$bin" | grep -i swift; then fail "the binary links a Swift library"; fi
for f in share/bash-completion/completions/shardwise share/zsh/site-functions/_shardwise \
         share/fish/vendor_completions.d/shardwise.fish share/man/man1/shardwise.1 share/man/man1/shardwise.train.1 \
         README.md LICENSE; do
  [ -s "$root/$f" ] || fail "missing $f"
done
grep -q "^complete .*-F _shardwise shardwise" "$root/share/bash-completion/completions/shardwise" || fail "the bash completion script is not one"
toolchain=$(dirname "$(dirname "$(command -v swift || echo /opt/swift/usr/bin/swift)")")
if ldconfig -p | grep -q "$toolchain"; then fail "ld.so's cache names $toolchain: the check would not hide it"; fi
train=("$bin" --version)
run() {
  if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null && [ -d "$toolchain" ]; then
    unshare -m sh -c "mount -t tmpfs none '$toolchain' && env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH= HOME=$work $*"
  else
    echo "dist check: cannot hide $toolchain in a mount namespace (not root); an empty LD_LIBRARY_PATH only"
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH= HOME="$work" "$@"
  fi
}
if [ -n "$control" ] && [ -x "$control" ]; then
  if run "$(realpath "$control")" --version >/dev/null 2>&1; then fail "$control (dynamic) still starts: the toolchain is not hidden"; fi
  echo "dist check: with the toolchain hidden, $control (dynamic) cannot start"
fi
run "$bin" --version | tee "$work/version"
grep -q "commit" "$work/version" || fail "--version names no commit"
grep -q "BLAS: /" "$work/version" || fail "--version names no BLAS"
if [ -n "$mnist" ]; then
  run "$bin" train --data "$(realpath "$mnist")" --epochs 1 --train-samples 4096 --test-samples 1000 --layers 128 --out "$work/run" | tail -1
  [ -s "$work/run/summary.json" ] || fail "train wrote no summary"
else
  echo "dist check: MNIST absent; train skipped"
fi
echo "dist check: $(basename "$tarball") is relocatable"
