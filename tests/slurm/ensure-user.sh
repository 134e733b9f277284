#!/usr/bin/env bash
# Make sure the non-root test user exists and can use a cluster started by up.sh.
#
#   tests/slurm/ensure-user.sh [DIR]     # DIR default: $WBS_SLURM_DIR (optional)
#
# Creates user $WBS_TEST_USER (default wbstest) with useradd (home dir, no
# password) if missing. If a cluster dir is known, makes its config, munge
# socket dir and jobs/ dir reachable (go+rx / 1777 for jobs/) and checks, as
# that user, that slurm.conf and the munge socket are reachable. Prints the
# user name on stdout.
set -euo pipefail

log() { printf 'ensure-user.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
U=${WBS_TEST_USER:-wbstest}

if ! id "$U" >/dev/null 2>&1; then
    # -m: jobs get a real $HOME; no -p: the account has no password (locked)
    useradd -m -s /bin/bash -c "wbsched slurm tests" "$U" \
        || id "$U" >/dev/null 2>&1 || die "useradd $U failed"
    log "created user $U ($(id "$U"))"
fi

DIR=${1:-${WBS_SLURM_DIR:-}}
if [ -n "$DIR" ] && [ -d "$DIR" ]; then
    DIR=$(cd "$DIR" && pwd -P)
    chmod go+rx "$DIR" "$DIR/etc" "$DIR/munge" 2>/dev/null || true
    chmod go+r "$DIR/etc/slurm.conf" "$DIR/etc/plugstack.conf" 2>/dev/null || true
    mkdir -p "$DIR/jobs" && chmod 1777 "$DIR/jobs"
    # every parent must be traversable too; do not change those, just say so
    p=$DIR
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        if ! runuser -u "$U" -- test -x "$p"; then
            die "$U cannot traverse $p (parent of the cluster dir); use a cluster dir under /tmp"
        fi
    done
    runuser -u "$U" -- test -r "$DIR/etc/slurm.conf" || die "$U cannot read $DIR/etc/slurm.conf"
    runuser -u "$U" -- test -w "$DIR/munge/munge.socket" 2>/dev/null \
        || [ ! -S "$DIR/munge/munge.socket" ] \
        || die "$U cannot use the munge socket $DIR/munge/munge.socket"
fi
echo "$U"
