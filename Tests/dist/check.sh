#!/usr/bin/env bash
# The release tarball on a bare machine. As root, its binary runs in a root folder that holds
# the unpacked tarball, the C library and nothing else (no Swift, no Open MPI, no OpenBLAS, no
# hwloc or zlib of the system's; /proc and /sys bound in for the topology), in a private mount
# namespace: there it trains, evaluates, predicts, exports, shows the topology and the kernels.
# Then, outside that root and where Open MPI is installed, `mpirun -np 2` on the tarball's binary
# must give the single-process run's weights. Not root: the toolchain and system libraries cannot
# be hidden; the binary runs with an empty LD_LIBRARY_PATH only, and the check says so.
# With CONTROL, a binary linked dynamically against the toolchain, the check first shows that the
# bare root works: CONTROL must fail to start in it.
# usage: Tests/dist/check.sh TARBALL [MNIST_FOLDER] [CONTROL]
set -euo pipefail
tarball=$1
mnist=${2:-}
control=${3:-}
work=$(mktemp -d)
bare=$work/bare
cleanup() {
  # The binds live in the namespace that made them; nothing outside it to unmount.
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "dist check: $*" >&2; exit 1; }
mkdir -p "$bare/opt" "$bare/tmp" "$bare/proc" "$bare/sys" "$bare/dev" "$bare/data"
tar xzf "$tarball" -C "$bare/opt"
root=$(echo "$bare"/opt/shardwise-*)
inside=/opt/$(basename "$root")
bin=$root/bin/shardwise

if ldd "$bin" | grep -i swift; then fail "the binary links a Swift library"; fi
# Everything the loader resolves outside the tarball's lib/ must be the C library's.
outside=$(ldd "$bin" | awk '$2 == "=>" { print $1, $3 }' | grep -v " $root/bin/../lib/shardwise/" \
  | grep -Ev '^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|ld-linux[^ ]*) ' || true)
[ -z "$outside" ] || fail "the binary needs libraries the tarball does not carry: $outside"
if ldd "$bin" | grep -E "libmpi|libopenblas|libblis"; then fail "the binary links MPI or a BLAS (they must be opened at run time)"; fi
for f in share/bash-completion/completions/shardwise share/zsh/site-functions/_shardwise \
         share/fish/vendor_completions.d/shardwise.fish share/man/man1/shardwise.1 share/man/man1/shardwise.train.1 \
         README.md LICENSE; do
  [ -s "$root/$f" ] || fail "missing $f"
done
grep -q "^complete .*-F _shardwise shardwise" "$root/share/bash-completion/completions/shardwise" || fail "the bash completion script is not one"

# The bare root: the dynamic loader and the C library, nothing else.
loader=$(ldd "$bin" | awk '/ld-linux/ { print $1 }')
for lib in "$loader" $(ldd "$bin" | awk '$2 == "=>" { print $3 }' | grep -E '/(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1)$'); do
  mkdir -p "$bare$(dirname "$lib")"
  cp -L "$lib" "$bare$lib"
done
bare_mode=0
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then bare_mode=1; fi
[ -n "$mnist" ] && mnist=$(realpath "$mnist")
# Runs "$@" (paths as seen inside the bare root) in the bare root, or plainly when it cannot be made.
run() {
  if [ $bare_mode = 1 ]; then
    unshare -m sh -c 'set -e; b=$1; m=$2; shift 2
      mount --bind /proc "$b/proc"; mount --bind /sys "$b/sys"; mount -t tmpfs none "$b/dev"; : > "$b/dev/null"; mount --bind /dev/null "$b/dev/null"
      [ -n "$m" ] && mount --bind -o ro "$m" "$b/data"
      exec chroot "$b" /usr/bin/env -i PATH=/bin HOME=/tmp "$@"' sh "$bare" "$mnist" "$@"
  else
    (cd "$bare" && env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH= HOME="$work" "$@")
  fi
}
if [ $bare_mode = 0 ]; then
  echo "dist check: not root, so no bare root: the system's libraries stay visible; an empty LD_LIBRARY_PATH only"
  bin_in=$bin; data=$mnist; out=$work/out
else
  # /usr/bin/env inside: the one program the root needs besides shardwise (static? no: the loader and libc are there).
  mkdir -p "$bare/usr/bin" && cp /usr/bin/env "$bare/usr/bin/env"
  bin_in=$inside/bin/shardwise; data=/data; out=/tmp/out
fi
if [ -n "$control" ] && [ -x "$control" ] && [ $bare_mode = 1 ]; then
  cp "$control" "$bare/tmp/control"
  if run /tmp/control --version >/dev/null 2>&1; then fail "$control (dynamic) still starts in the bare root: it is not bare"; fi
  echo "dist check: in the bare root, $control (linked against the toolchain and the system's libraries) cannot start"
fi
run "$bin_in" --version | tee "$work/version"
grep -q "commit" "$work/version" || fail "--version names no commit"
if [ $bare_mode = 1 ]; then
  grep -q "BLAS: none usable" "$work/version" || fail "--version in the bare root should find no BLAS"
fi
run "$bin_in" topology | tee "$work/topology" | head -3
[ -s "$work/topology" ] || fail "topology printed nothing"
run "$bin_in" doctor | tee "$work/doctor" | grep -E "^(blas|portable):"
grep -q "^portable: " "$work/doctor" || fail "doctor measured no portable kernels"
if [ -z "$mnist" ]; then
  echo "dist check: MNIST absent; train, eval, predict, export and the MPI run skipped"
  echo "dist check: $(basename "$tarball") starts bare"
  exit 0
fi
short=(--data "$data" --epochs 1 --train-samples 4096 --test-samples 1000 --layers 128 --seed 5)
run "$bin_in" train "${short[@]}" --out "$out/run" | tee "$work/train" | tail -1
hash=$(grep -o "weights sha256 [0-9a-f]*" "$work/train" | awk '{ print $3 }')
[ -n "$hash" ] || fail "train printed no weights hash"
run "$bin_in" eval --checkpoint "$out/run" --data "$data" --test-samples 1000 | tee "$work/eval" | tail -1
grep -q "error" "$work/eval" || fail "eval printed no error rate"
run "$bin_in" predict --checkpoint "$out/run" --data "$data" --out "$out/predictions.csv" | tail -1
run "$bin_in" export --checkpoint "$out/run" --onnx "$out/model.onnx" | tail -1
if [ $bare_mode = 1 ]; then
  # What needs a missing library says so in one line and fails: --kernels blas, and a launch by mpirun.
  if run "$bin_in" train "${short[@]}" --kernels blas --out "$out/blas" > "$work/blas" 2>&1; then fail "--kernels blas trained without a BLAS"; fi
  grep -q "the BLAS kernels need a BLAS library" "$work/blas" || fail "--kernels blas without a BLAS: $(cat "$work/blas")"
  if run OMPI_COMM_WORLD_SIZE=2 "$bin_in" train "${short[@]}" --out "$out/mpi" > "$work/nompi" 2>&1; then fail "a launch by mpirun ran without Open MPI"; fi
  grep -q "no MPI library could be loaded" "$work/nompi" || fail "mpirun launch without Open MPI: $(cat "$work/nompi")"
  echo "dist check: without a BLAS, --kernels blas says so; without Open MPI, a launch by mpirun says so"
  for f in "$bare$out/predictions.csv" "$bare$out/model.onnx" "$bare$out/run/summary.json"; do [ -s "$f" ] || fail "missing $f"; done
fi
if command -v mpirun >/dev/null; then
  flags=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root)
  mpirun $flags --oversubscribe -np 2 "$bin" train "${short[@]/#$data/$mnist}" --out "$work/mpi" | tee "$work/mpi.log" | tail -1
  grep -q "weights sha256 $hash" "$work/mpi.log" || fail "mpirun -np 2 gave other weights than the single process ($hash)"
  echo "dist check: mpirun -np 2 on the tarball's binary gives the single-process weights ($hash)"
else
  echo "dist check: no mpirun here; the MPI run is skipped"
fi
echo "dist check: $(basename "$tarball") runs bare"
