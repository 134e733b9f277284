#!/usr/bin/env python3
"""wbsched benchmarks: see bench/README.md.  Run through bench/run.sh."""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
KEY = "b" * 40
PROJECT = "bench"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


# ----------------------------------------------------------------- emulator
class Emu:
    def __init__(self, tmp):
        self.out = open(os.path.join(tmp, "emu.log"), "w")
        self.p = subprocess.Popen(
            ["node", os.path.join(SRC, "tests/emulator/server.js"), "--port", "0",
             "--crash-after-ms", "0"],
            stdout=subprocess.PIPE, stderr=self.out, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on (http://\S+)", line)
        if not m:
            raise RuntimeError("emulator did not start: %r" % line)
        self.url = m.group(1)

    def ctl(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/_emu" + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def reset(self):
        self.ctl("POST", "/reset", {})
        self.ctl("POST", "/config", {"crash_after_ms": 0})

    def requests(self, since=0):
        return self.ctl("GET", "/requests?since=%d" % since)["requests"]

    def last_seq(self):
        r = self.requests()
        return r[-1]["seq"] if r else 0

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


# ----------------------------------------------------------------- wbsched
class W:
    def __init__(self, binary, emu, spool):
        self.bin, self.emu, self.spool = binary, emu, spool
        self.env = dict(os.environ, WANDB_API_KEY=KEY)
        for k in list(self.env):
            if k.startswith("WBSCHED_") or k in ("WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL",
                                                "WANDB_RUN_ID"):
                del self.env[k]
        cfg = os.path.join(os.path.dirname(spool), "empty.yaml")
        open(cfg, "w").close()
        self.env["WBSCHED_CONFIG"] = cfg

    def argv(self, args, spool=None, sets=()):
        a = [self.bin, "--base-url", self.emu.url, "--project", PROJECT,
             "--set", "spool_dir=" + (spool or self.spool)]
        for s in sets:
            a += ["--set", s]
        return a + list(args)

    def run(self, args, spool=None, sets=(), check=True, rss=False):
        """Runs wbsched; returns (seconds, exit code, peak RSS in KiB, stdout)."""
        t0 = time.perf_counter()
        argv = self.argv(args, spool, sets)
        p = subprocess.Popen(timed_argv(argv) if rss else argv, env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, errb = p.communicate()
        dt = time.perf_counter() - t0
        rss = rusage_of(p) if rss else None
        if check and p.returncode != 0:
            raise RuntimeError("wbsched %s: exit %d: %s" % (" ".join(args), p.returncode,
                                                          errb.decode(errors="replace")))
        return dt, p.returncode, rss, out.decode()


TIMEF = None


def timed_argv(argv):
    """Wraps argv in /usr/bin/time to read the peak RSS: ru_maxrss of a child
    forked from this (large) Python process would start at Python's own, as
    Linux keeps maxrss across execve."""
    global TIMEF
    if TIMEF is None:
        TIMEF = tempfile.mktemp(prefix="wbs-bench-rss-")
    return ["/usr/bin/time", "-f", "%M", "-o", TIMEF] + argv


def rusage_of(p):
    try:
        with open(TIMEF) as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError, TypeError):
        return None


# ----------------------------------------------------------------- results
class Results:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, figure, goal, measured, ok, how=""):
        self.rows.append((figure, goal, measured, ok, how))
        print("%-62s %-16s %-28s %s" % (figure, goal, measured,
                                        "pass" if ok else ("miss" if ok is False else "n/a")),
              flush=True)

    def table(self):
        lines = ["| figure | goal | measured | result |", "|---|---|---|---|"]
        for f, g, m, ok, _ in self.rows:
            lines.append("| %s | %s | %s | %s |" % (f, g, m, "pass" if ok else
                                                   ("**miss**" if ok is False else "n/a")))
        return "\n".join(lines)


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except Exception:
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    deb = sh("cat /etc/debian_version")
    return [("nproc", str(os.cpu_count())), ("CPU", cpu), ("memory", mem),
            ("kernel", platform.release()), ("Debian", deb),
            ("file system of the spool", sh("df -T %s | awk 'NR==2{print $2}'" %
                                             tempfile.gettempdir())),
            ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("commit", sh("git -C %s rev-parse --short HEAD" % SRC) +
             (" + uncommitted changes" if sh("git -C %s status --porcelain -- lib hooks plugin"
                                              % SRC) else ""))]


# ----------------------------------------------------------------- figures
def fig_create_vs_curl(R, emu, w, reps, tmp):
    emu.reset()
    # the exact body wbsched sends, from the emulator's log
    w.run(["create", "--id", "capture-0"])
    body = [r for r in emu.requests() if r["path"] == "/graphql"][-1]["body"]
    bodyf = os.path.join(tmp, "create-body.json")
    with open(bodyf, "w") as f:
        json.dump(body, f)
    curl = ["curl", "-sS", "-o", "/dev/null", "-u", "api:" + KEY, "-H",
            "Content-Type: application/json", "--data-binary", "@" + bodyf, emu.url + "/graphql"]
    tw, tc = [], []
    for i in range(2):  # warm-up
        subprocess.run(curl, check=True)
        w.run(["create", "--id", "warm-%d" % i])
    for i in range(reps):
        t0 = time.perf_counter()
        subprocess.run(curl, check=True)
        tc.append(time.perf_counter() - t0)
        dt, _, _, _ = w.run(["create", "--id", "c-%d" % i])
        tw.append(dt)
    ratio = med(tw) / med(tc)
    R.add("`wbsched create` wall time / one `curl` POST (same body)", "<= 1.3x",
          "%.2fx (%.1f / %.1f ms)" % (ratio, med(tw) * 1e3, med(tc) * 1e3), ratio <= 1.3,
          "medians of %d interleaved runs each" % reps)
    # the same POST's peak RSS: what Debian's libcurl costs any program that uses it
    curl_rss = []
    for _ in range(3):
        subprocess.run(timed_argv(curl), check=True)
        curl_rss.append(rusage_of(None) or 0)
    return bodyf, curl, med(curl_rss)


def fig_create_callgrind(R, w, curl):
    if not shutil.which("valgrind"):
        return
    def ir(argv, env=None):
        out = os.path.join(tempfile.gettempdir(), "cg.%d.out" % os.getpid())
        p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv,
                           capture_output=True, text=True, env=env)
        m = re.search(r"Collected : (\d+)", p.stderr)
        try:
            os.unlink(out)
        except OSError:
            pass
        return int(m.group(1)) if m else None
    a = ir(w.argv(["create", "--id", "cg-0"]), w.env)
    b = ir(curl)
    if a and b:
        R.add("instructions: `wbsched create` / `curl` (callgrind)", "(stable figure)",
              "%.2fx (%.1f M / %.1f M Ir)" % (a / b, a / 1e6, b / 1e6), None)


def fig_breaker(R, emu, w, tmp, reps):
    emu.reset()
    spool = tempfile.mkdtemp(dir=tmp, prefix="spool-bh-")
    emu.ctl("POST", "/faults", {"faults": [{"blackhole": True, "times": -1}]})
    first, _, _, _ = w.run(["start", "bh-0"], spool=spool)
    rest = [w.run(["start", "bh-%d" % i], spool=spool)[0] for i in range(1, reps + 1)]
    emu.ctl("DELETE", "/faults")
    budget = 2.0
    R.add("first `wbsched start`, W&B blackholed", "<= 2 s (budget)", "%.3f s" % first,
          first <= budget)
    R.add("following `wbsched start`s in the outage (breaker)", "<= 50 ms",
          "%.1f ms (median of %d)" % (med(rest) * 1e3, reps), med(rest) <= 0.050)


def fig_count(R, emu, w, tmp):
    emu.reset()
    seq = emu.last_seq()
    dt, _, rss, _ = w.run(["create", "--count", "1000", "--id", "arr"], rss=True)
    n = len([r for r in emu.requests(seq) if r["path"] == "/graphql"])
    R.add("`create --count 1000`: requests", "<= 10", str(n), n <= 10)
    R.add("`create --count 1000`: wall time", "<= 2 s", "%.2f s" % dt, dt <= 2.0)
    return rss


def cycles_of(reqs, gap=0.1):
    """Groups request times into poll cycles (a gap > @gap s starts a new one)."""
    ts = sorted(datetime.datetime.fromisoformat(r["at"].replace("Z", "+00:00")).timestamp()
                for r in reqs)
    out = []
    for t in ts:
        if out and t - out[-1][-1] <= gap:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def read_cycles(reqs, first):
    """Requests per poll cycle of `wait`: a cycle starts with the request
    that reads the first awaited run (by its variables, not by timing, which
    a slow poll blurs)."""
    out = []
    for r in reqs:
        names = (r.get("variables") or {}).values()
        if first in names or not out:
            out.append(0)
        out[-1] += 1
    return out


def fig_wait(R, emu, w, sizes, interval):
    rss = []
    for n in sizes:
        emu.reset()
        w.run(["create", "--count", str(n), "--id", "w%d" % n])
        runs = ["%s/w%d-%d" % (PROJECT, n, i) for i in range(n)]
        seq = emu.last_seq()
        p = subprocess.Popen(timed_argv(w.argv(["wait", "--interval", str(interval), "--timeout",
                                     str(interval * 4)] + runs)), env=w.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.wait()
        rss.append(rusage_of(p))
        cyc = read_cycles([r for r in emu.requests(seq) if r["path"] == "/graphql"],
                          "w%d-0" % n)
        per = max(cyc) if cyc else 0
        goal = math.ceil(n / 100)
        R.add("`wait` on N=%d runs: requests per poll cycle" % n, "<= %d" % goal,
              "%d (max of %d cycles)" % (per, len(cyc)), per <= goal)
    return max(x for x in rss if x)


def fig_wait_latency(R, emu, w, reps, interval):
    lat, ivs = [], []
    for k in range(reps):
        emu.reset()
        n = 10
        w.run(["create", "--count", str(n), "--id", "l%d" % k])
        ent = emu.ctl("GET", "/runs")["runs"][0]["entity"]
        for i in range(n - 1):
            emu.ctl("POST", "/set", {"path": "%s/%s/l%d-%d" % (ent, PROJECT, k, i),
                                     "state": "finished", "exitcode": 0})
        seq = emu.last_seq()
        p = subprocess.Popen(w.argv(["wait", "--interval", str(interval)] +
                                    ["%s/l%d-%d" % (PROJECT, k, i) for i in range(n)]),
                             env=w.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(interval * 2.3)
        t0 = time.perf_counter()
        emu.ctl("POST", "/set", {"path": "%s/%s/l%d-%d" % (ent, PROJECT, k, n - 1),
                                 "state": "finished", "exitcode": 0})
        p.wait(timeout=120)
        lat.append(time.perf_counter() - t0)
        cyc = cycles_of([r for r in emu.requests(seq) if r["path"] == "/graphql"])
        ivs.append(cyc[-1][0] - cyc[-2][0] if len(cyc) >= 2 else interval)
    ok = all(l <= iv + 0.05 for l, iv in zip(lat, ivs))
    R.add("last awaited run finished -> `wait` returns", "<= 1 poll interval",
          "%.2f s (interval then %.2f s; worst %.2f s)" % (med(lat), med(ivs), max(lat)), ok)


def write_spool(dirpath, n):
    d = os.path.join(dirpath, str(os.geteuid()))
    os.makedirs(d, mode=0o700, exist_ok=True)
    at = int(time.time() * 1000)
    with open(os.path.join(d, "queue"), "w") as f:
        for i in range(n):
            rid = "rep%d" % (i // 3)
            argv = [["create", "--id", rid], ["start", PROJECT + "/" + rid],
                    ["finish", "--exit-code", "0", PROJECT + "/" + rid]][i % 3]
            f.write(json.dumps({"run": "-/%s/%s" % (PROJECT, rid), "entity": None,
                                "project": PROJECT, "argv": argv, "seq": i + 1, "at": at},
                               separators=(",", ":")) + "\n")
    os.chmod(os.path.join(d, "queue"), 0o600)


def fig_replay(R, emu, w, tmp, n, cap_s):
    emu.reset()
    spool = tempfile.mkdtemp(dir=tmp, prefix="spool-replay-")
    write_spool(spool, n)
    seq = emu.last_seq()
    t0 = time.perf_counter()
    p = subprocess.Popen(timed_argv(w.argv(["flush"], spool=spool)), env=w.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=cap_s)
        dt = time.perf_counter() - t0
        timed_out = False
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        dt = cap_s
        timed_out = True
    reqs = emu.requests(seq) if n <= 15000 else []
    nreq = len([r for r in reqs if r["path"] == "/graphql"])
    nfs = len([r for r in reqs if r["path"].endswith("/file_stream")])
    goal = 5.0 * n / 10000
    m = re.search(r"delivered (\d+)", out or "")
    done = m.group(1) if m else "?"
    R.add("`wbsched flush` of a %d-event spool" % n,
          "<= %.1f s" % goal + ("" if n == 10000 else " (5 s per 10k)"),
          ("> %d s (stopped)" % cap_s if timed_out else "%.2f s" % dt) +
          " (%s delivered; %d GraphQL + %d file_stream requests)" % (done, nreq, nfs), (not timed_out) and dt <= goal)
    if p.returncode not in (0, None) and not timed_out:
        raise RuntimeError("flush failed: %s" % err)
    return rusage_of(p)


# ----------------------------------------------------------------- Slurm
class Cluster:
    def __init__(self, tmp, build, emu):
        self.tmp, self.emu = tmp, emu
        self.base = tempfile.mkdtemp(prefix="wbs-bench-slurm-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.key = os.path.join(self.base, "key")
        with open(self.key, "w") as f:
            f.write(KEY + "\n")
        os.chmod(self.key, 0o600)
        self.spool = os.path.join(self.base, "spool")
        os.mkdir(self.spool, 0o755)
        self.line = ("optional %s/plugin/spank_wbsched.so base_url=%s project=%s "
                     "wbsched_path=%s/hooks/wbsched api_key_file=%s spool_dir=%s\n" %
                     (build, emu.url, PROJECT, build, self.key, self.spool))
        self.dir = os.path.join(self.base, "c")
        env = dict(os.environ)
        env.pop("WBS_SLURM_PLUGSTACK", None)
        p = subprocess.run([os.path.join(SRC, "tests/slurm/up.sh"), self.dir], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("up.sh failed: %s" % p.stderr[-2000:])
        self.conf = os.path.join(self.dir, "etc/slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in list(self.env):
            if k.startswith(("SLURM_", "SBATCH_", "WANDB_", "WBSCHED_")) and k != "SLURM_CONF":
                del self.env[k]
        self.jobs = os.path.join(self.dir, "jobs")
        self.plugstack = os.path.join(self.dir, "etc/plugstack.conf")
        self.errf = open(os.path.join(self.base, "sbatch.stderr"), "w")

    def plugin(self, on):
        with open(self.plugstack + ".new", "w") as f:
            f.write(self.line if on else "# no plugin\n")
        os.rename(self.plugstack + ".new", self.plugstack)

    def sbatch(self, args):
        """Returns (seconds, job id).  stderr goes to a file: the plugin's detached
        child inherits it, and a pipe would make us wait for W&B."""
        t0 = time.perf_counter()
        p = subprocess.run(["sbatch", "--parsable", "-o", os.path.join(self.jobs, "%j.out")] + args,
                           env=self.env, stdout=subprocess.PIPE, stderr=self.errf, text=True,
                           cwd=self.jobs)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError("sbatch %s failed" % args)
        return dt, int(p.stdout.strip().split(";")[0])

    def allocated_at(self, jid):
        """Epoch seconds of slurmctld's log line allocating job @jid (main
        scheduler or backfill), or None."""
        pat = re.compile(r"^\[(\S+)\] (?:sched: Allocate|sched/backfill: _start_job: Started)"
                         r" JobId=%d " % jid)
        end = time.time() + 3
        while time.time() < end:
            with open(os.path.join(self.dir, "log/slurmctld.log")) as f:
                for line in f:
                    m = pat.match(line)
                    if m:
                        ts, _, frac = m.group(1).partition(".")
                        return time.mktime(time.strptime(ts, "%Y-%m-%dT%H:%M:%S")) + \
                            float("0." + (frac or "0"))
            time.sleep(0.1)
        log("no allocation line for job %d in slurmctld.log: sample skipped" % jid)
        return None

    def scancel_all(self):
        subprocess.run(["scancel", "--user=root"], env=self.env)
        end = time.time() + 30
        while time.time() < end:
            out = subprocess.run(["squeue", "-h", "-t", "PD,R,CG", "-o", "%A"], env=self.env,
                                 capture_output=True, text=True).stdout.strip()
            if not out:
                return
            time.sleep(0.2)

    def down(self):
        self.errf.close()
        subprocess.run([os.path.join(SRC, "tests/slurm/down.sh"), self.dir],
                       capture_output=True, env=dict(os.environ, WBS_SLURM_RM="1"))
        shutil.rmtree(self.base, ignore_errors=True)


def sbatch_pair(c, reps, extra_on):
    on, off = [], []
    for i in range(reps + 2):
        c.plugin(False)
        a, _ = c.sbatch(["--hold", "--wrap", "true"])
        c.plugin(True)
        b, _ = c.sbatch(["--hold", "--wandb"] + extra_on + ["--wrap", "true"])
        if i >= 2:  # warm-up
            off.append(a)
            on.append(b)
    c.scancel_all()
    return med(on), med(off)


def fig_slurm(R, emu, c, reps, quick):
    emu.reset()
    on, off = sbatch_pair(c, reps, [])
    d = (on - off) * 1e3
    R.add("sbatch with plugin - without (median of %d)" % reps, "<= +5 ms",
          "%+.1f ms (%.1f vs %.1f ms)" % (d, on * 1e3, off * 1e3), d <= 5)
    emu.ctl("POST", "/config", {"delay_ms": 100})
    on, off = sbatch_pair(c, reps, [])
    d = (on - off) * 1e3
    R.add("the same, W&B answering in 100 ms", "<= +10 ms",
          "%+.1f ms (%.1f vs %.1f ms)" % (d, on * 1e3, off * 1e3), d <= 10)

    # allocation -> first command, W&B at 100 ms.  "Allocation" is slurmctld's
    # "sched: Allocate JobId=N" log line (ms timestamps, same clock): submit
    # time would add up to a second of scheduler-cycle noise.
    lat_on, lat_off = [], []
    nrep = max(3, reps // 3)
    for i in range(nrep + 1):
        for on_ in (False, True):
            c.plugin(on_)
            stamp = os.path.join(c.jobs, "first-%d-%d" % (i, on_))
            script = os.path.join(c.jobs, "job-%d-%d.sh" % (i, on_))
            with open(script, "w") as f:
                f.write("#!/bin/sh\ndate +%%s.%%N > %s.tmp; mv %s.tmp %s\n" % (stamp, stamp, stamp))
            _, jid = c.sbatch((["--wandb"] if on_ else []) + [script])
            end = time.time() + 60
            while not os.path.exists(stamp) and time.time() < end:
                time.sleep(0.01)
            if not os.path.exists(stamp):
                raise RuntimeError("job did not start within 60 s")
            with open(stamp) as f:
                t1 = float(f.read())
            t0 = c.allocated_at(jid)
            if i > 0 and t0 is not None:
                (lat_on if on_ else lat_off).append(t1 - t0)
            # let the node go idle again (epilog) before the next one
            end = time.time() + 30
            while time.time() < end and subprocess.run(
                    ["squeue", "-h", "-o", "%A"], env=c.env, capture_output=True,
                    text=True).stdout.strip():
                time.sleep(0.05)
    d = (med(lat_on) - med(lat_off)) * 1e3
    R.add("allocation -> job's first command, plugin - none, W&B 100 ms", "<= +20 ms",
          "%+.0f ms (%.0f vs %.0f ms, median of %d)" % (d, med(lat_on) * 1e3,
                                                       med(lat_off) * 1e3, nrep), d <= 20)
    emu.ctl("POST", "/config", {"delay_ms": 0})

    # blackholed W&B
    emu.ctl("POST", "/faults", {"faults": [{"blackhole": True, "times": -1}]})
    on, off = sbatch_pair(c, reps, [])
    d = (on - off) * 1e3
    R.add("sbatch with plugin - without, W&B blackholed", "<= +10 ms",
          "%+.1f ms (%.1f vs %.1f ms)" % (d, on * 1e3, off * 1e3), d <= 10)
    emu.ctl("DELETE", "/faults")

    # slurmstepd RSS with and without the plugin
    rss = {False: [], True: []}
    for i in range(2 if quick else 4):
        for on_ in (False, True):
            c.plugin(on_)
            _, jid = c.sbatch((["--wandb"] if on_ else []) + ["--wrap", "sleep 30"])
            pid = None
            end = time.time() + 30
            while pid is None and time.time() < end:
                for d_ in os.listdir("/proc"):
                    if not d_.isdigit():
                        continue
                    try:
                        with open("/proc/%s/cmdline" % d_, "rb") as f:
                            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        continue
                    if cmd.startswith("slurmstepd: [%d.batch]" % jid):
                        pid = d_
                        break
                time.sleep(0.05)
            if pid is None:
                raise RuntimeError("no slurmstepd for job %d" % jid)
            time.sleep(1.0)  # past prolog and task start
            st = {}
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    st[k] = v.strip()
            rss[on_].append(int(st["VmHWM"].split()[0]))
            subprocess.run(["scancel", str(jid)], env=c.env)
            c.scancel_all()
    d = (med(rss[True]) - med(rss[False])) / 1024
    R.add("RSS (VmHWM) the plugin adds to slurmstepd", "<= 2 MB",
          "%+.2f MB (%.1f vs %.1f MB)" % (d, med(rss[True]) / 1024, med(rss[False]) / 1024),
          d <= 2)


# ----------------------------------------------------------------- main
def main():
    # SIGTERM/SIGINT: stop the cluster and the emulator on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "results.md"))
    ap.add_argument("--no-slurm", action="store_true")
    a = ap.parse_args()
    quick = a.quick
    reps = 10 if quick else 30
    wb = os.path.join(a.build, "hooks/wbsched")
    tmp = tempfile.mkdtemp(prefix="wbs-bench-")
    os.chmod(tmp, 0o755)
    R = Results()
    t_start = time.time()
    emu = Emu(tmp)
    w = W(wb, emu, os.path.join(tmp, "spool"))
    rss = []
    cluster = None
    print("%-62s %-16s %-28s %s" % ("figure", "goal", "measured", "result"))
    try:
        _, curl, curl_rss = fig_create_vs_curl(R, emu, w, reps, tmp)
        if not quick:
            fig_create_callgrind(R, w, curl)
        slurm_ok = (not a.no_slurm and os.geteuid() == 0 and shutil.which("slurmd")
                    and shutil.which("sbatch") and shutil.which("munged"))
        if slurm_ok:
            cluster = Cluster(tmp, a.build, emu)
            fig_slurm(R, emu, cluster, reps, quick)
        else:
            R.notes.append("Slurm figures skipped (needs root and the Slurm daemons).")
            log("Slurm figures skipped (not root or Slurm missing)")
        fig_breaker(R, emu, w, tmp, reps)
        rss.append(("wait N=1000", fig_wait(R, emu, w, [1, 100, 1000], 0.5 if quick else 1)))
        fig_wait_latency(R, emu, w, 2 if quick else 5, 0.5 if quick else 2)
        rss.append(("create --count 1000", fig_count(R, emu, w, tmp)))
        rss.insert(0, ("create", w.run(["create", "--id", "rss-0"], rss=True)[2]))
        n = 1000 if quick else 10000
        rss.append(("flush %d" % n, fig_replay(R, emu, w, tmp, n, 60 if quick else 900)))
        rss = [(k, v / 1024) for k, v in rss if v]
        peak = max(v for _, v in rss)
        R.add("peak RSS of `wbsched` (ru_maxrss)", "<= 8 MB",
              "%.1f MB (%s; `curl` of create's POST: %.1f)" %
              (peak, ", ".join("%s %.1f" % kv for kv in rss), curl_rss / 1024), peak <= 8)
    finally:
        if cluster:
            cluster.down()
        emu.stop()
    elapsed = time.time() - t_start
    write_md(a.out, R, quick, elapsed)
    shutil.rmtree(tmp, ignore_errors=True)
    if TIMEF and os.path.exists(TIMEF):
        os.unlink(TIMEF)
    misses = sum(1 for r in R.rows if r[3] is False)
    log("%d figures, %d missed, %.0f s; wrote %s" % (len(R.rows), misses, elapsed, a.out))


def write_md(path, R, quick, elapsed):
    with open(os.path.join(HERE, "results.head.md")) as f:
        head = f.read()
    m = "\n".join("| %s | %s |" % kv for kv in machine())
    text = head.replace("@MACHINE@", "| | |\n|---|---|\n" + m)
    text = text.replace("@MODE@", ("`bench/run.sh --quick` (few repetitions, 1000-event spool)"
                                   if quick else "`bench/run.sh` (full)") +
                        ", %.0f s" % elapsed)
    text = text.replace("@TABLE@", R.table() + ("\n\n" + "\n".join(R.notes) if R.notes else ""))
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
