#!/usr/bin/env bash
# wbsched benchmarks: one command.  See bench/README.md.
#
#   bench/run.sh [--quick] [--no-slurm] [--build DIR] [--out FILE]
#
# Builds a Release build (default build-bench in the checkout, or $WBS_BENCH_BUILD),
# starts the W&B emulator and, as root, a local Slurm cluster (tests/slurm/up.sh),
# prints the table and writes bench/results.md.  Exit 0 whether goals are met or
# missed (benchmarks do not gate CI); non-zero only if the benchmark itself broke.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
BUILD=${WBS_BENCH_BUILD:-$SRC/build-bench}
args=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --build=*) BUILD=${1#--build=}; shift ;;
    -h|--help) sed -n 2,9p "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: '$1' is missing ($2)" >&2; exit 3; }; }
need cmake "apt-get install cmake"
need node "scripts/install-deps.sh"
need curl "apt-get install curl"
need python3 "apt-get install python3"
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 3; }
[ -d "$SRC/tests/emulator/node_modules" ] || (cd "$SRC/tests/emulator" && npm ci --silent)

echo "bench: building (Release) in $BUILD" >&2
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target wbsched spank_wbsched >/dev/null

exec python3 "$HERE/bench.py" --build "$BUILD" ${args[@]+"${args[@]}"}
