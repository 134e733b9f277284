#!/bin/sh
# Builds the Debian packages (dpkg-buildpackage -us -uc -b) in a copy of the
# tree under /tmp, installs them with apt (and their dependencies), then runs
# the real-cluster tests (CTest label slurm) against the INSTALLED plugin and
# wbsched: WBS_TEST_PLUGIN / WBS_TEST_WBSCHED (tests/slurm_harness.c).
#
#   scripts/package-test.sh [--keep-installed] [CTEST_ARGS...]
#
# Root only, Debian 12.  The packages are purged at the end unless they were
# installed before or --keep-installed is given.  Exits non-zero on failure.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'package-test: %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

keep=0
if [ "${1:-}" = --keep-installed ]; then
	keep=1
	shift
fi
[ "$(id -u)" -eq 0 ] || die "run as root: it installs packages and starts Slurm daemons"

# What dpkg-buildpackage needs (debian/control Build-Depends + the tools);
# install-deps.sh adds what the tests need (Criterion, Node.js, Slurm daemons).
build_packages="build-essential dpkg-dev debhelper cmake pkg-config
libcurl4-openssl-dev libjson-c-dev libyaml-dev libslurm-dev"
missing=""
for p in $build_packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "installing$missing"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
"$top/scripts/install-deps.sh"

preinstalled=""
for p in wbsched slurm-spank-wbsched; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && preinstalled="$preinstalled $p"
done

work=$(mktemp -d /tmp/wbs-package.XXXXXX)
installed=0
cleanup() {
	status=$?
	if [ "$installed" = 1 ] && [ "$keep" = 0 ] && [ -z "$preinstalled" ]; then
		say "purging the packages"
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq slurm-spank-wbsched wbsched >/dev/null || true
	fi
	if [ "$status" -eq 0 ]; then
		rm -rf "$work"
	else
		say "kept $work (build.log, build/)"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "copying the tree to $work/wbsched"
mkdir "$work/wbsched"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	# tracked and new files, not what .gitignore excludes (build trees, node_modules)
	(cd "$top" && git ls-files -z -co --exclude-standard | tar --null -T - -cf -) |
		tar -C "$work/wbsched" -xf -
else
	tar -C "$top" --exclude='./build*' --exclude=node_modules -cf - . | tar -C "$work/wbsched" -xf -
fi

say "dpkg-buildpackage -us -uc -b (log: $work/build.log)"
if ! (cd "$work/wbsched" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	tail -n 40 "$work/build.log" >&2
	die "dpkg-buildpackage failed"
fi
ls "$work"/*.deb

say "installing the packages"
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	"$(ls "$work"/wbsched_*.deb)" "$(ls "$work"/slurm-spank-wbsched_*.deb)"

plugin=$(dpkg -L slurm-spank-wbsched | grep '/spank_wbsched\.so$')
wbsched=$(dpkg -L wbsched | grep '/bin/wbsched$')
[ -r "$plugin" ] || die "the package has no spank_wbsched.so"
[ -x "$wbsched" ] || die "the package has no wbsched"
say "installed: $plugin, $wbsched ($("$wbsched" --version))"
for f in /etc/wbsched/wbsched.yaml /etc/slurm/plugstack.conf.d/wbsched.conf \
	/lib/systemd/system/wbsched-flush.service /lib/systemd/system/wbsched-flush.timer; do
	[ -f "$f" ] || die "missing $f"
done
grep -q "^optional $plugin " /etc/slurm/plugstack.conf.d/wbsched.conf ||
	die "plugstack.conf.d/wbsched.conf does not name $plugin"
grep -q "^ExecStart=$wbsched " /lib/systemd/system/wbsched-flush.service ||
	die "wbsched-flush.service does not run $wbsched"
[ "$(stat -c '%a %U' /var/spool/wbsched)" = "1777 root" ] || die "/var/spool/wbsched is not root 01777"

say "building test_slurm (a normal build tree: $work/build)"
cmake -S "$top" -B "$work/build" -DWBS_WERROR=ON >/dev/null
cmake --build "$work/build" -j "$(nproc 2>/dev/null || echo 2)" --target test_slurm >/dev/null

say "ctest -L slurm with WBS_TEST_PLUGIN=$plugin WBS_TEST_WBSCHED=$wbsched"
cd "$work/build"
WBS_TEST_PLUGIN=$plugin WBS_TEST_WBSCHED=$wbsched ctest -L slurm --output-on-failure "$@"
say "PASS"
