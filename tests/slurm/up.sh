#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster (munged + slurmctld + slurmd,
# all as root, no systemd) whose whole state lives in one directory.
#
#   eval "$(tests/slurm/up.sh [DIR])"     # DIR default: mktemp -d
#   sbatch/srun/salloc/squeue/scontrol ...  # all use $SLURM_CONF
#   tests/slurm/down.sh                     # uses $WBS_SLURM_DIR
#
# stdout carries only the `export ...` line; diagnostics go to stderr.
# See tests/slurm/README.md for the knobs (WBS_SLURM_*).
set -euo pipefail

log() { printf 'up.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root)"
for b in munged slurmctld slurmd sinfo scontrol; do
    command -v "$b" >/dev/null 2>&1 || die "$b not found (apt-get install munge slurmctld slurmd slurm-client)"
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

TIMEOUT=${WBS_SLURM_TIMEOUT:-60}
CRED_EXPIRE=${WBS_SLURM_CRED_EXPIRE:-10}
KILL_WAIT=${WBS_SLURM_KILLWAIT:-2}
GRACE_TIME=${WBS_SLURM_GRACETIME:-5}
DEBUG=${WBS_SLURM_DEBUG:-info}
PREEMPT=${WBS_SLURM_PREEMPT:-}
case "$PREEMPT" in ""|none|requeue|cancel) ;; *) die "WBS_SLURM_PREEMPT must be requeue|cancel (got '$PREEMPT')";; esac
[ "$PREEMPT" = none ] && PREEMPT=

# ---------------------------------------------------------------- directory
if [ $# -ge 1 ] && [ -n "$1" ]; then
    DIR=$1
    mkdir -p "$DIR"
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/wbs-slurm.XXXXXX")
fi
DIR=$(cd "$DIR" && pwd -P)
case "$DIR" in *[[:space:]]*|*[\'\"\\\$]*) die "cluster dir must not contain spaces or quotes: $DIR";; esac

# refuse to start twice in the same dir
for f in "$DIR"/run/*.spawn; do
    [ -e "$f" ] || continue
    read -r pid start _ <"$f" || continue
    if [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null)" = "$start" ]; then
        die "a cluster is already running in $DIR (pid $pid from $f); run down.sh $DIR first"
    fi
done

mkdir -p "$DIR"/{etc,log,run,state,spool,munge,jobs}
# a non-root submitter (see ensure-user.sh) must reach slurm.conf and the munge
# socket, and be able to write job output under jobs/
chmod 0755 "$DIR" "$DIR/etc" "$DIR/log" "$DIR/run" "$DIR/munge"
chmod 0700 "$DIR/state"
chmod 1777 "$DIR/jobs"

CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF

STARTED=()   # pids started by this invocation, for the failure path
cleanup_on_failure() {
    local rc=$?
    [ $rc -eq 0 ] && return 0
    log "start failed (rc=$rc); stopping what was started; logs in $DIR/log"
    for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log "$DIR"/log/*.stdio; do
        [ -s "$f" ] || continue
        log "---- tail $f"; tail -n 15 "$f" >&2 || true
    done
    "$HERE/down.sh" "$DIR" >&2 || true
    exit $rc
}
trap cleanup_on_failure EXIT

# Record "pid starttime name": down.sh only signals a pid whose start time
# still matches, so a recycled pid is never hit.
record() { # name pid
    local st
    st=$(awk '{print $22}' "/proc/$2/stat" 2>/dev/null) || st=0
    echo "$2 $st $1" >"$DIR/run/$1.spawn"
    STARTED+=("$2")
}

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# ---------------------------------------------------------------- ports
# Free TCP port = nobody LISTENs on it (v4 or v6). A global lock serialises
# concurrent up.sh runs from port choice until the daemons have bound them.
listening_ports() { # (mawk has no strtonum: convert the hex in bash)
    local h
    # shellcheck disable=SC2013
    for h in $(awk 'NR>1 && $4=="0A" {n=split($2,a,":"); print a[n]}' \
                   /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        echo $((16#$h))
    done | sort -un
}
exec 9>"${TMPDIR:-/tmp}/wbs-slurm-ports.lock"
flock -w 120 9 || die "could not get the port lock"

USED=" $(listening_ports | tr '\n' ' ') "
pick_port() { # start
    local p=$1
    while [ "$p" -lt 65000 ]; do
        case "$USED" in *" $p "*) p=$((p + 1)); continue;; esac
        USED="$USED$p "
        echo "$p"; return 0
    done
    return 1
}
CTLD_PORT=${WBS_SLURM_CTLD_PORT:-$(pick_port 6817)}
USED="$USED$CTLD_PORT "
SLURMD_PORT=${WBS_SLURM_SLURMD_PORT:-$(pick_port $((CTLD_PORT + 1)))}

# ---------------------------------------------------------------- munge
if [ ! -s "$DIR/munge/munge.key" ]; then
    ( umask 077; head -c 1024 /dev/urandom >"$DIR/munge/munge.key" )
fi
chmod 0600 "$DIR/munge/munge.key"
SOCK=$DIR/munge/munge.socket
rm -f "$SOCK" "$SOCK.lock"
( exec 9>&-; cd "$DIR/log" && exec setsid munged --foreground --force \
    --socket="$SOCK" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" \
    </dev/null >"$DIR/log/munged.stdio" 2>&1 ) &
record munged $!
for _ in $(seq 100); do
    [ -S "$SOCK" ] && break
    alive "${STARTED[-1]}" || die "munged exited"
    sleep 0.05
done
[ -S "$SOCK" ] || die "munged socket did not appear"
chmod 0755 "$DIR/munge"

# ---------------------------------------------------------------- slurm.conf
NODE=$(hostname -s 2>/dev/null || true)
NODE=${NODE%%.*}
case "$NODE" in ""|*[!A-Za-z0-9_-]*) NODE=localhost;; esac
HW=$(slurmd -C 2>/dev/null | head -n1 | tr ' ' '\n' \
     | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ') || true
[ -n "$HW" ] || HW="CPUs=$(nproc)"
# shellcheck disable=SC2086
NCPU=$(printf '%s\n' $HW | sed -n 's/^CPUs=//p')

if [ -n "${WBS_SLURM_PLUGSTACK:-}" ]; then
    [ -r "$WBS_SLURM_PLUGSTACK" ] || die "WBS_SLURM_PLUGSTACK=$WBS_SLURM_PLUGSTACK not readable"
    cp "$WBS_SLURM_PLUGSTACK" "$DIR/etc/plugstack.conf"
else
    echo "# empty plugstack (set WBS_SLURM_PLUGSTACK=FILE to use another)" >"$DIR/etc/plugstack.conf"
fi
chmod 0644 "$DIR/etc/plugstack.conf"

{
cat <<EOF
# generated by tests/slurm/up.sh
ClusterName=wbs
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=$DEBUG
SlurmdDebug=$DEBUG
PlugStackConfig=$DIR/etc/plugstack.conf
# container friendly: no cgroups, no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
# fast tests: a requeued job may restart cred_expire+1 s later (BeginTime);
# backfill skips its pass when nothing changed, so it is the main scheduler
# (sched_interval, default 60 s) that starts it: run that every second.
# Short kill window after SIGTERM.
KillWait=$KILL_WAIT
SchedulerParameters=bf_interval=2,sched_interval=1
# keep finished jobs visible to scontrol (there is no accounting)
MinJobAge=600
InactiveLimit=0
MessageTimeout=10
EOF
if [ -n "$PREEMPT" ]; then
    echo "PreemptType=preempt/partition_prio"
    if [ "$PREEMPT" = requeue ]; then echo "PreemptMode=REQUEUE"; else echo "PreemptMode=CANCEL"; fi
fi
echo "NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE ${HW}State=UNKNOWN"
if [ -n "$PREEMPT" ]; then
    grace=""
    [ "$PREEMPT" = cancel ] && grace=" GraceTime=$GRACE_TIME"
    echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1$grace"
    echo "PartitionName=high Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF"
else
    echo "PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
fi
if [ -n "${WBS_SLURM_EXTRA_CONF:-}" ]; then
    echo "# WBS_SLURM_EXTRA_CONF"
    printf '%s\n' "$WBS_SLURM_EXTRA_CONF"
fi
} >"$CONF"
chmod 0644 "$CONF"

# ---------------------------------------------------------------- daemons
# Run from DIR/log so that a crashing slurmstepd drops its core there.
( exec 9>&-; cd "$DIR/log" && exec setsid slurmctld -D -i </dev/null >"$DIR/log/slurmctld.stdio" 2>&1 ) &
record slurmctld $!
( exec 9>&-; cd "$DIR/log" && exec setsid slurmd -D -N "$NODE" </dev/null >"$DIR/log/slurmd.stdio" 2>&1 ) &
record slurmd $!

t0=$(date +%s.%N)
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    for n in munged slurmctld slurmd; do
        read -r pid _ <"$DIR/run/$n.spawn"
        alive "$pid" || die "$n (pid $pid) exited during start-up"
    done
    state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
    [ "$state" = idle ] && break
    [ "$(date +%s)" -ge "$deadline" ] && die "node not idle after ${TIMEOUT}s (state='$state')"
    sleep 0.1
done
exec 9>&-   # ports are bound now: release the lock
trap - EXIT

log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s: dir=$DIR node=$NODE cpus=${NCPU:-?} ports=$CTLD_PORT/$SLURMD_PORT preempt=${PREEMPT:-off}"
echo "export SLURM_CONF=$CONF; export WBS_SLURM_DIR=$DIR"
