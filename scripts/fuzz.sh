#!/bin/sh
# Fuzzes every libFuzzer harness of tests/fuzz for SECONDS each (default 60).
#
#   scripts/fuzz.sh [SECONDS] [HARNESS...]      e.g. scripts/fuzz.sh 600 fuzz_cli
#
# Configures a clang build with -DWBS_FUZZ=ON (ASan + UBSan) in
# $WBS_FUZZ_BUILD_DIR (default build-fuzz), builds only the harnesses, and
# runs each one on a copy of its corpus: inputs that find new coverage stay
# in a temporary directory (printed at the end), the committed corpus is
# never changed.  A crash, leak, timeout or OOM is copied to
# tests/fuzz/regressions/<harness>/, where ctest replays it from then on.
# Exits 1 when any harness failed.  Needs clang and libclang-rt-14-dev (Debian 12).
#
# Environment: WBS_FUZZ_BUILD_DIR, WBS_FUZZ_WORK (where the copies go;
# default a new directory under $TMPDIR), WBS_FUZZ_JOBS (build parallelism),
# CC (default clang, else clang-14), WBS_FUZZ_ARGS (more libFuzzer flags, e.g. -fork=4).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
if [ $# -gt 0 ]; then
	shift
fi
case $secs in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS] [HARNESS...]" >&2
	exit 2
	;;
esac
harnesses=${*:-fuzz_config fuzz_reply fuzz_netrc fuzz_cli fuzz_array}
build=${WBS_FUZZ_BUILD_DIR:-$top/build-fuzz}
jobs=${WBS_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
cc=${CC:-}
if [ -z "$cc" ]; then
	for c in clang clang-14; do
		if command -v "$c" >/dev/null 2>&1; then
			cc=$c
			break
		fi
	done
fi
if [ -z "$cc" ] || ! command -v "$cc" >/dev/null 2>&1; then
	echo "fuzz: no clang found (apt-get install clang-14 libclang-rt-14-dev)" >&2
	exit 2
fi

# -O1 -g without _FORTIFY_SOURCE (Debug): what libFuzzer and ASan like best.
mkdir -p "$build"
cmake -S "$top" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Debug \
	-DCMAKE_C_FLAGS_DEBUG="-g -O1" -DWBS_FUZZ=ON -DWBS_SANITIZE=address,undefined \
	-DWBS_WERROR=OFF >"$build/fuzz-configure.log" 2>&1 || {
	cat "$build/fuzz-configure.log" >&2
	exit 2
}
# shellcheck disable=SC2086
cmake --build "$build" --parallel "$jobs" --target $harnesses

work=${WBS_FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/wbs-fuzz.XXXXXX")}
mkdir -p "$work"
# The harnesses' own files (spool, netrc, ...): on tmpfs when there is one,
# and removed even when a crash skipped a harness's cleanup.
WBS_FUZZ_TMPDIR=$(mktemp -d /dev/shm/wbs-fuzz-run.XXXXXX 2>/dev/null || mktemp -d)
export WBS_FUZZ_TMPDIR
trap 'rm -rf "$WBS_FUZZ_TMPDIR"' EXIT
failed=""
summary=""

for h in $harnesses; do
	bin=$build/tests/fuzz/$h
	corpus=$work/$h/corpus
	artifacts=$work/$h/artifacts
	regressions=$top/tests/fuzz/regressions/$h
	dict=$top/tests/fuzz/dict/$h.dict
	log=$work/$h/fuzz.log
	mkdir -p "$corpus" "$artifacts" "$regressions"
	cp -R "$top/tests/fuzz/corpus/$h/." "$corpus/"

	dict_arg=""
	if [ -f "$dict" ]; then
		dict_arg="-dict=$dict"
	fi

	echo "fuzz: $h for ${secs}s (log: $log)"
	rc=0
	# New inputs go to the copy.  The regression inputs are not seeds: one
	# that still crashes (a bug not fixed yet) would stop the run at once;
	# ctest replays them.
	# shellcheck disable=SC2086
	"$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
		-close_fd_mask=3 -artifact_prefix="$artifacts/" \
		$dict_arg ${WBS_FUZZ_ARGS:-} \
		"$corpus" >"$log" 2>&1 || rc=$?

	found=$(find "$artifacts" -type f | sort)
	for f in $found; do
		cp "$f" "$regressions/"
		echo "fuzz: $h: $(basename "$f") saved as tests/fuzz/regressions/$h/$(basename "$f")"
	done
	if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
		failed="$failed $h"
		echo "fuzz: $h FAILED (exit $rc); the report:" >&2
		report="^==[0-9]+==ERROR|runtime error:|fuzz check failed|ERROR: libFuzzer"
		if grep -Eq "$report" "$log"; then
			grep -E -A40 "$report" "$log" | head -60 >&2
		else
			tail -40 "$log" >&2
		fi
	fi
	line=$(grep -E "^#[0-9]+[[:space:]]+(DONE|INITED)" "$log" | tail -1 || true)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	added=$(sed -n 's/^stat::new_units_added: *//p' "$log")
	summary="$summary
$(printf '%-12s %-6s runs %-9s exec/s %-6s new %-5s %s' "$h" \
		"$([ "$rc" -eq 0 ] && [ -z "$found" ] && echo ok || echo FAIL)" \
		"${execs:-?}" "${speed:-?}" "${added:-?}" \
		"$(echo "$line" | sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p')")"
done

echo
echo "fuzz: summary (${secs}s each)$summary"
echo "fuzz: new corpus inputs and logs are in $work"
echo "fuzz: to keep them: $build/tests/fuzz/HARNESS -merge=1 tests/fuzz/corpus/HARNESS $work/HARNESS/corpus"
if [ -n "$failed" ]; then
	echo "fuzz: FAILED:$failed (inputs saved under tests/fuzz/regressions/)" >&2
	exit 1
fi
