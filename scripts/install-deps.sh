#!/bin/sh
# Installs what wbsched needs to build and test on Debian 12: the Debian
# packages (as root, or through sudo) and the emulator's npm packages.
# Safe to run again; does nothing that is already done.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)

packages="build-essential cmake pkg-config
libcurl4-openssl-dev libjson-c-dev libyaml-dev libcriterion-dev
nodejs npm curl valgrind yamllint openssl clang libclang-rt-14-dev
munge slurmctld slurmd slurm-client libslurm-dev"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
# nodejs from another repository may ship npm itself
if [ -n "$missing" ] && command -v npm >/dev/null 2>&1; then
	missing=$(echo "$missing" | tr ' ' '\n' | grep -vx -e npm -e nodejs | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
	echo "install-deps: installing$missing"
	if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -d "$top/tests/emulator/node_modules/graphql" ]; then
	echo "install-deps: npm ci in tests/emulator"
	(cd "$top/tests/emulator" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d "$top/deploy/kubernetes/validate/node_modules/kubernetes-models" ]; then
	echo "install-deps: npm ci in deploy/kubernetes/validate"
	(cd "$top/deploy/kubernetes/validate" && npm ci --no-audit --no-fund --loglevel=error)
fi
