#!/usr/bin/env bash
# Smoke test of the local Slurm harness: starts a cluster (preemption in
# REQUEUE mode), runs the scenarios, checks each final state with
# `scontrol show job` (no accounting, so no sacct; MinJobAge keeps the
# records), stops the cluster.
#
#   tests/slurm/smoke.sh [--slow] [--keep] [SCENARIO...]
#
#   --slow   also run the time-limit scenario (~80-110 s)
#   --keep   keep the cluster dir (default: removed when everything passed)
#   SCENARIO one or more of the names below (default: all, except timelimit
#            unless --slow)
#
# Env: WBS_SMOKE_SLOW=1 (same as --slow), WBS_SMOKE_KEEP=1, WBS_TEST_USER.
# Exit status: 0 if every scenario passed, 1 otherwise.
# job scripts are single-quoted on purpose (expanded in the job)
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL_SCENARIOS=(exit0 exit3 scancel srun salloc array export-none user requeue preempt timelimit)

SLOW=${WBS_SMOKE_SLOW:-0}
KEEP=${WBS_SMOKE_KEEP:-0}
WANT=()
for a in "$@"; do
    case "$a" in
        --slow) SLOW=1;;
        --keep) KEEP=1;;
        -h|--help) sed -n '2,15p' "$0"; exit 0;;
        -*) echo "unknown option $a" >&2; exit 2;;
        *) WANT+=("$a");;
    esac
done
if [ ${#WANT[@]} -eq 0 ]; then
    for s in "${ALL_SCENARIOS[@]}"; do
        [ "$s" = timelimit ] && [ "$SLOW" != 1 ] && continue
        WANT+=("$s")
    done
fi
for s in "${WANT[@]}"; do
    case " ${ALL_SCENARIOS[*]} " in *" $s "*) ;; *) echo "unknown scenario $s (known: ${ALL_SCENARIOS[*]})" >&2; exit 2;; esac
done

[ "$(id -u)" -eq 0 ] || { echo "smoke.sh must run as root" >&2; exit 2; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
T_ALL=$(now)

# the test must not inherit a surrounding job's settings
while IFS='=' read -r k _; do
    case "$k" in SLURM_*|SBATCH_*|SALLOC_*|SRUN_*) unset "$k";; esac
done < <(env)

TUSER=$("$HERE/ensure-user.sh") || { echo "FAIL: ensure-user.sh" >&2; exit 1; }

T_UP=$(now)
UP_OUT=$(WBS_SLURM_PREEMPT=requeue "$HERE/up.sh") || { echo "FAIL: up.sh" >&2; exit 1; }
eval "$UP_OUT"
DIR=$WBS_SLURM_DIR
JOBS=$DIR/jobs
echo "cluster up in $(since "$T_UP")s: $DIR"
"$HERE/ensure-user.sh" "$DIR" >/dev/null || { echo "FAIL: ensure-user.sh $DIR" >&2; "$HERE/down.sh" "$DIR"; exit 1; }

FAILED=()
finish() {
    local t rc=0
    t=$(now)
    "$HERE/down.sh" "$DIR" 2>/dev/null || { echo "WARN: down.sh failed"; rc=1; }
    echo "cluster down in $(since "$t")s"
    if [ ${#FAILED[@]} -eq 0 ] && [ "$KEEP" != 1 ]; then
        rm -rf "$DIR"
    else
        echo "cluster dir kept: $DIR (logs in $DIR/log, job output in $DIR/jobs)"
    fi
    echo "total $(since "$T_ALL")s"
    if [ ${#FAILED[@]} -gt 0 ]; then
        echo "SMOKE: FAIL (${FAILED[*]})"; exit 1
    fi
    echo "SMOKE: PASS (${#WANT[@]} scenarios)"
    exit $rc
}
trap finish EXIT
trap 'echo "interrupted"; FAILED+=(interrupted); exit 1' INT TERM

# ------------------------------------------------------------------ helpers
MSG=""
fail() { MSG="$*"; return 1; }
SCEN_JOBS=()

# one `key=value` field of a job record (first record for arrays)
jfield() { # id field
    scontrol -o show job "$1" 2>/dev/null | head -n1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n1
}
jline() { scontrol -o show job "$1" 2>/dev/null | head -n1 | tr ' ' '\n' \
          | grep -E '^(JobId|JobName|UserId|JobState|Reason|Restarts|ExitCode|Partition)=' | tr '\n' ' '; }

# wait until JobState matches the ERE (anchored); timeout in seconds
wait_state() { # id ERE timeout
    local end st
    end=$(( $(date +%s) + $3 ))
    while :; do
        st=$(jfield "$1" JobState)
        [[ "$st" =~ ^($2)$ ]] && return 0
        [ "$(date +%s)" -ge $end ] && { fail "job $1: state '$st' after $3 s, wanted $2 [$(jline "$1")]"; return 1; }
        sleep 0.2
    done
}

wait_file_line() { # file ERE timeout
    local end=$(( $(date +%s) + $3 ))
    until grep -qE "$2" "$1" 2>/dev/null; do
        [ "$(date +%s)" -ge $end ] && { fail "no line /$2/ in $1 after $3 s: $(cat "$1" 2>&1)"; return 1; }
        sleep 0.1
    done
}

expect() { # id field value
    local v
    v=$(jfield "$1" "$2")
    [ "$v" = "$3" ] || fail "job $1: $2='$v', wanted '$3' [$(jline "$1")]"
}

SBATCH_COMMON=(--parsable --chdir="$JOBS" -o "$JOBS/%x-%j.out")
JID=""
submit() { # sbatch args...; sets JID (not called in $(...): it records state)
    JID=$(sbatch "${SBATCH_COMMON[@]}" "$@" 2>"$JOBS/.sbatch.err") || { fail "sbatch $* failed: $(cat "$JOBS/.sbatch.err")"; return 1; }
    JID=${JID%%;*}
    SCEN_JOBS+=("$JID")
}

# job script: first run sleeps (to be requeued/preempted), a rerun exits 0
RERUN=$JOBS/rerun.sh
cat >"$RERUN" <<EOF
#!/bin/bash
echo "run restart=\${SLURM_RESTART_COUNT:-0} job=\$SLURM_JOB_ID" >>"$JOBS/runs-\$SLURM_JOB_ID"
[ "\${SLURM_RESTART_COUNT:-0}" -ge 1 ] && exit 0
sleep 300 & wait
EOF
chmod 0755 "$RERUN"

# ------------------------------------------------------------------ scenarios
sc_exit0() {
    local id; submit -J smoke-exit0 --wrap 'exit 0' || return 1; id=$JID
    wait_state "$id" COMPLETED 30 || return 1
    expect "$id" ExitCode 0:0
}

sc_exit3() {
    local id; submit -J smoke-exit3 --wrap 'exit 3' || return 1; id=$JID
    wait_state "$id" 'COMPLETED|FAILED' 30 || return 1
    expect "$id" JobState FAILED || return 1
    expect "$id" ExitCode 3:0 || return 1
    expect "$id" Reason NonZeroExitCode
}

sc_scancel() {
    local id; submit -J smoke-scancel --wrap 'sleep 300' || return 1; id=$JID
    wait_state "$id" RUNNING 30 || return 1
    scancel "$id" || { fail "scancel $id failed"; return 1; }
    wait_state "$id" CANCELLED 30 || return 1
    expect "$id" Restarts 0
}

sc_timelimit() {
    local id; submit -J smoke-timelimit --time=1 --wrap 'sleep 300' || return 1; id=$JID
    wait_state "$id" RUNNING 30 || return 1
    wait_state "$id" 'TIMEOUT|COMPLETED|FAILED|CANCELLED' 180 || return 1
    expect "$id" JobState TIMEOUT || return 1
    expect "$id" Reason TimeLimit
}

sc_requeue() {
    local id; submit -J smoke-requeue --requeue "$RERUN" || return 1; id=$JID
    wait_state "$id" RUNNING 30 || return 1
    wait_file_line "$JOBS/runs-$id" 'restart=0' 15 || return 1
    scontrol requeue "$id" || { fail "scontrol requeue $id failed"; return 1; }
    local end=$(( $(date +%s) + 10 ))
    until [ "$(jfield "$id" Restarts)" = 1 ]; do
        [ "$(date +%s)" -ge $end ] && { fail "Restarts did not become 1 [$(jline "$id")]"; return 1; }
        sleep 0.2
    done
    wait_state "$id" COMPLETED 90 || return 1
    expect "$id" Restarts 1 || return 1
    expect "$id" ExitCode 0:0 || return 1
    grep -q 'restart=1' "$JOBS/runs-$id" 2>/dev/null || fail "no second run recorded in runs-$id: $(cat "$JOBS/runs-$id" 2>&1)"
}

sc_preempt() {
    local low high
    submit -J smoke-preempt-low -p debug --exclusive --requeue "$RERUN" || return 1; low=$JID
    wait_state "$low" RUNNING 30 || return 1
    wait_file_line "$JOBS/runs-$low" 'restart=0' 15 || return 1
    submit -J smoke-preempt-high -p high --exclusive --wrap 'sleep 1' || return 1; high=$JID
    wait_state "$high" 'RUNNING|COMPLETED' 30 || return 1
    expect "$low" Restarts 1 || return 1
    wait_state "$high" COMPLETED 30 || return 1
    wait_state "$low" COMPLETED 90 || return 1
    expect "$low" Restarts 1 || return 1
    grep -q 'restart=1' "$JOBS/runs-$low" 2>/dev/null || fail "no second run of the low job: $(cat "$JOBS/runs-$low" 2>&1)"
}

sc_srun() {
    local out id
    out=$(cd "$JOBS" && timeout 60 srun -J smoke-srun -n1 /bin/sh -c 'echo JOBID=$SLURM_JOB_ID' 2>&1) \
        || { fail "srun failed: $out"; return 1; }
    id=$(printf '%s\n' "$out" | sed -n 's/^JOBID=//p')
    [ -n "$id" ] || { fail "no job id in srun output: $out"; return 1; }
    SCEN_JOBS+=("$id")
    wait_state "$id" COMPLETED 30 || return 1
    expect "$id" ExitCode 0:0
}

sc_salloc() {
    local out id
    out=$(cd "$JOBS" && timeout 60 salloc -J smoke-salloc -n1 srun true 2>&1) \
        || { fail "salloc failed: $out"; return 1; }
    id=$(printf '%s\n' "$out" | sed -n 's/.*Granted job allocation \([0-9]*\).*/\1/p' | head -n1)
    [ -n "$id" ] || { fail "no job id in salloc output: $out"; return 1; }
    SCEN_JOBS+=("$id")
    wait_state "$id" COMPLETED 30 || return 1
    expect "$id" ExitCode 0:0
}

sc_array() {
    local id end recs n f
    submit -J smoke-array --array=0-2 -o "$JOBS/%x-%A_%a.out" \
         --wrap 'echo "task=$SLURM_ARRAY_TASK_ID count=$SLURM_ARRAY_TASK_COUNT"' || return 1; id=$JID
    end=$(( $(date +%s) + 60 ))
    while :; do
        recs=$(scontrol -o show job "$id" 2>/dev/null)
        n=$(printf '%s\n' "$recs" | grep -c ' JobState=COMPLETED ')
        [ "$(printf '%s\n' "$recs" | grep -c JobId=)" = 3 ] && [ "$n" = 3 ] && break
        [ "$(date +%s)" -ge $end ] && { fail "array $id not 3x COMPLETED: $(printf '%s\n' "$recs" | grep -o -E 'ArrayTaskId=[^ ]+|JobState=[^ ]+' | tr '\n' ' ')"; return 1; }
        sleep 0.2
    done
    [ "$(printf '%s\n' "$recs" | grep -o -E ' ArrayTaskId=[0-9]+' | sort | tr -d ' \n')" = "ArrayTaskId=0ArrayTaskId=1ArrayTaskId=2" ] \
        || { fail "array task ids: $(printf '%s\n' "$recs" | grep -o -E 'ArrayTaskId=[^ ]+' | tr '\n' ' ')"; return 1; }
    for n in 0 1 2; do
        f=$JOBS/smoke-array-${id}_$n.out
        grep -qx "task=$n count=3" "$f" 2>/dev/null || { fail "$f: $(cat "$f" 2>&1)"; return 1; }
    done
}

sc_export_none() {
    local id
    SMOKE_LEAK=leaked submit -J smoke-export-none --export=NONE \
         --wrap '[ -n "${SMOKE_LEAK:-}" ] && { echo "leak=$SMOKE_LEAK"; exit 5; }; echo "clean job=$SLURM_JOB_ID"' || return 1; id=$JID
    wait_state "$id" 'COMPLETED|FAILED' 60 || return 1
    expect "$id" JobState COMPLETED || return 1
    grep -qx "clean job=$id" "$JOBS/smoke-export-none-$id.out" \
        || fail "unexpected output: $(cat "$JOBS/smoke-export-none-$id.out" 2>&1)"
}

sc_user() {
    local id
    id=$(cd "$JOBS" && runuser -u "$TUSER" -- env SLURM_CONF="$SLURM_CONF" \
         sbatch "${SBATCH_COMMON[@]}" -J smoke-user --wrap 'id -un' 2>&1) \
        || { fail "sbatch as $TUSER failed: $id"; return 1; }
    id=${id%%;*}
    SCEN_JOBS+=("$id")
    wait_state "$id" COMPLETED 30 || return 1
    expect "$id" UserId "$TUSER($(id -u "$TUSER"))" || return 1
    grep -qx "$TUSER" "$JOBS/smoke-user-$id.out" || fail "output: $(cat "$JOBS/smoke-user-$id.out" 2>&1)"
}

node_ok() {
    local st; st=$(sinfo -h -N -o %T | head -n1)
    case "$st" in idle|mixed|allocated|completing) return 0;; esac
    fail "node state '$st' ($(sinfo -h -N -o %E | head -n1))"
}

# ------------------------------------------------------------------ runner
printf '%-12s %-6s %7s  %s\n' SCENARIO RESULT SECONDS DETAIL
for s in "${WANT[@]}"; do
    SCEN_JOBS=(); MSG=""
    t=$(now)
    if "sc_${s//-/_}" && node_ok; then
        res=PASS
    else
        res=FAIL; FAILED+=("$s")
        # do not let a broken scenario disturb the next one
        [ ${#SCEN_JOBS[@]} -gt 0 ] && scancel "${SCEN_JOBS[@]}" 2>/dev/null
        end=$(( $(date +%s) + 15 ))
        while [ -n "$(squeue -h -t R,CG -o %A 2>/dev/null)" ] && [ "$(date +%s)" -lt $end ]; do sleep 0.2; done
    fi
    printf '%-12s %-6s %7s  %s\n' "$s" "$res" "$(since "$t")" "${MSG:-jobs ${SCEN_JOBS[*]:-}}"
done
