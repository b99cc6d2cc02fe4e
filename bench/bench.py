#!/usr/bin/env python3
"""ward benchmark driver: ward vs supervisord vs PM2, side by side.

Called by bench/run.sh (which builds ward, installs the peers and compiles the
writer). Standard library only. Every daemon runs with its own state in a
temporary directory; every process started is stopped at the end (and on
SIGINT/SIGTERM), and processes left behind by a graceful stop are counted as
leaks before they are killed.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
TOOLS = ["ward", "supervisord", "pm2"]
TOOL_LABEL = {"ward": "ward", "supervisord": "supervisord", "pm2": "PM2"}

IDLE_MARK = ["sleep", "987650"]
RESTART_MARK = ["sleep", "987651"]

CAVEAT = "**Read with care.** Timings of a few milliseconds (restart latency, `ward status`) and the log runs (about 0.1–0.5 s each for 14 MiB) are sensitive to other load on the machine: look at the ranges, not only the medians. PM2's rotation case uses pm2-logrotate, which rotates by copy and truncate on a 1 s timer and names rotated files `<name>__<date>.log`; the bench looks for those (by that name pattern), so lines counted lost there are lines missing from every file it found."

NOTES = []  # free-form observations that end up in BENCHMARKS.md
PROBLEMS = []  # things that look like bugs/leaks (any tool)


def note(msg):
    NOTES.append(msg)
    log("note: " + msg)


def problem(msg):
    PROBLEMS.append(msg)
    log("PROBLEM: " + msg)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc helpers

def pids():
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return None


def is_mark(pid, mark):
    """argv is exactly `mark`, argv[0] compared by basename (PM2 execs /usr/bin/sleep)."""
    c = cmdline(pid)
    if not c or len(c) != len(mark):
        return False
    a = [x.decode(errors="replace") for x in c]
    return os.path.basename(a[0]) == mark[0] and a[1:] == mark[1:]


def find_marked(mark):
    return [p for p in pids() if is_mark(p, mark)]


def find_cmd_containing(text):
    out = []
    b = text.encode()
    me = os.getpid()
    for p in pids():
        if p == me:
            continue
        c = cmdline(p)
        if c and any(b in x for x in c):
            out.append(p)
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ns(pid):
    """CPU time of all live threads of pid, in ns (schedstat: ns resolution)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    except OSError:
        return None
    return total


def cpu_ticks_s(pid):
    """utime+stime of pid (includes exited threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2] != "Z"
    except OSError:
        return False


def wait_count(mark, n, t0, cap, old):
    """Poll /proc until n processes with exactly `mark` as argv exist.

    Only pids not in `old` are looked at. Returns (seconds since t0 or None if
    the cap was hit, count reached)."""
    found = set()
    while True:
        for p in pids():
            if p in old or p in found:
                continue
            if is_mark(p, mark):
                found.add(p)
        if len(found) >= n:
            return time.perf_counter() - t0, len(found)
        if time.perf_counter() - t0 > cap:
            return None, len(found)
        time.sleep(0.002)


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    s = sorted(xs)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "p90": p90, "n": len(s)}


# ---------------------------------------------------------------- the tools

class Tool:
    """Start a daemon with a set of programs, find its pid, status, stop."""

    def __init__(self, name, work, env):
        self.name = name
        self.work = work
        self.env = env
        self.proc = None
        self.daemon_pid = None

    def run(self, args, timeout=120, check=False, quiet=True, env=None):
        e = dict(self.env)
        if env:
            e.update(env)
        r = subprocess.run(args, env=e, timeout=timeout, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
                           stderr=subprocess.DEVNULL if quiet else subprocess.PIPE, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{args} failed: {r.returncode} {r.stderr if not quiet else ''}")
        return r


class Ward(Tool):
    def __init__(self, work, env, ward_bin):
        super().__init__("ward", work, env)
        self.bin = ward_bin

    def write(self, progs):
        lines = [f'[supervisor]\nstate_dir = "{self.work}/state"\n']
        for p in progs:
            lines.append("[[program]]")
            lines.append(f'name = "{p["name"]}"')
            lines.append("command = " + json.dumps(p["argv"]))
            if p.get("instances", 1) > 1:
                lines.append(f'instances = {p["instances"]}')
            pol = p.get("policy", "min")
            if pol == "min":
                lines.append('restart = "always"')
                lines.append('min_uptime = "0s"')
                lines.append("max_restarts = 0")
                lines.append('backoff = { initial = "0s", max = "0s", multiplier = 1.0, jitter = 0.0 }')
            elif pol == "never":
                lines.append('restart = "never"')
            # "default": nothing set
            if "log" in p:
                lg = p["log"]
                lines.append("[program.log]")
                lines.append(f'stdout = "{lg["stdout"]}"')
                lines.append(f'max_size = "{lg["max_size"]}"')
                lines.append(f'keep = {lg["keep"]}')
            lines.append("")
        self.conf = f"{self.work}/ward.toml"
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    def start(self):
        e = dict(self.env)
        e["WARD_DETACHED"] = "1"  # what `ward up --detach` does: log to file only
        self.proc = subprocess.Popen([self.bin, "up", "-c", self.conf], env=e, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(f"{self.work}/ward.stderr", "w"))
        self.daemon_pid = self.proc.pid
        return None  # nothing to wait on

    def status_cmd(self):
        return [self.bin, "-c", self.conf, "status"]

    def stop(self):
        try:
            self.run([self.bin, "-c", self.conf, "down"], timeout=60)
        except subprocess.TimeoutExpired:
            problem("ward: `ward down` did not return within 60 s")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            problem("ward: daemon still running 30 s after `ward down`")

    def log_files(self, base):
        # app.log.K (oldest) ... app.log.1, app.log
        rot = sorted(glob.glob(base + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1]))
        return rot + ([base] if os.path.exists(base) else [])


class Supervisord(Tool):
    def __init__(self, work, env):
        super().__init__("supervisord", work, env)

    def write(self, progs):
        w = self.work
        os.makedirs(f"{w}/logs", exist_ok=True)
        out = [
            "[unix_http_server]", f"file={w}/supervisor.sock", "",
            "[supervisord]", f"logfile={w}/supervisord.log", f"pidfile={w}/supervisord.pid",
            f"childlogdir={w}/logs", "nodaemon=true", "minfds=16384", "minprocs=4096", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{w}/supervisor.sock", "",
        ]
        for p in progs:
            out.append(f'[program:{p["name"]}]')
            out.append("command=" + " ".join(shquote(a) for a in p["argv"]))
            n = p.get("instances", 1)
            if n > 1:
                out.append(f"numprocs={n}")
                out.append("process_name=%(program_name)s_%(process_num)d")
            pol = p.get("policy", "min")
            if pol == "min":
                out += ["startsecs=0", "autorestart=true"]
            elif pol == "never":
                out += ["startsecs=0", "autorestart=false"]
            if "log" in p:
                lg = p["log"]
                mb = "0" if lg["max_size"] == "100GiB" else "10MB"
                out += [f'stdout_logfile={lg["stdout"]}', f"stdout_logfile_maxbytes={mb}",
                        f'stdout_logfile_backups={lg["keep"]}']
            out.append("")
        self.conf = f"{w}/supervisord.conf"
        with open(self.conf, "w") as f:
            f.write("\n".join(out))

    def start(self):
        self.proc = subprocess.Popen(["supervisord", "-c", self.conf], env=self.env, start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(f"{self.work}/supervisord.stderr", "w"))
        self.daemon_pid = self.proc.pid
        return None

    def status_cmd(self):
        return ["supervisorctl", "-c", self.conf, "status"]

    def stop(self):
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            problem("supervisord: still running 90 s after SIGTERM")

    def log_files(self, base):
        rot = sorted(glob.glob(base + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1]))
        return rot + ([base] if os.path.exists(base) else [])


class PM2(Tool):
    def __init__(self, work, env, home=None):
        super().__init__("pm2", work, env)
        self.home = home or f"{work}/pm2home"
        self.env = dict(env)
        self.env["PM2_HOME"] = self.home
        self.cli = None

    def write(self, progs):
        apps = []
        for p in progs:
            n = p.get("instances", 1)
            for i in range(n):
                a = {"name": p["name"] if n == 1 else f'{p["name"]}-{i}', "script": p["argv"][0],
                     "args": p["argv"][1:], "interpreter": "none", "exec_mode": "fork",
                     "cwd": self.work}
                pol = p.get("policy", "min")
                if pol == "min":
                    a.update({"autorestart": True, "restart_delay": 0, "min_uptime": 0,
                              "max_restarts": 1000000000})
                elif pol == "never":
                    a.update({"autorestart": False})
                if "log" in p:
                    a.update({"out_file": p["log"]["stdout"], "error_file": p["log"]["stdout"] + ".err",
                              "merge_logs": True})
                apps.append(a)
        self.conf = f"{self.work}/ecosystem.json"
        with open(self.conf, "w") as f:
            json.dump({"apps": apps}, f)

    def start(self):
        # `pm2 start` spawns the God daemon, then asks it to start the apps.
        self.cli = subprocess.Popen(["pm2", "start", self.conf], env=self.env, start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        return self.cli

    def find_daemon(self, timeout=30):
        t = time.time() + timeout
        while time.time() < t:
            try:
                with open(f"{self.home}/pm2.pid") as f:
                    pid = int(f.read().strip())
                if alive(pid):
                    self.daemon_pid = pid
                    return pid
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        return None

    def status_cmd(self):
        return ["pm2", "jlist"]

    def stop(self):
        if self.cli and self.cli.poll() is None:
            try:
                self.cli.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.cli.pid, signal.SIGKILL)
        try:
            self.run(["pm2", "kill"], timeout=120)
        except subprocess.TimeoutExpired:
            problem("pm2: `pm2 kill` did not return within 120 s")

    def log_files(self, base):
        d = os.path.dirname(base)
        stem = os.path.basename(base)[:-4]  # pm2-logrotate: <stem>__<date>.log
        rot = sorted(glob.glob(f"{d}/{stem}__*.log"), key=lambda p: (os.path.getmtime(p), p))
        return rot + ([base] if os.path.exists(base) else [])


def shquote(a):
    if a and all(c.isalnum() or c in "/._-=" for c in a):
        return a
    return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = tempfile.mkdtemp(prefix="wardbench.")
        self.env = dict(os.environ)
        self.env.pop("WARD_CONFIG", None)
        self.env.pop("WARD_SOCKET", None)
        self.active = []
        self.results = {}
        self.seq = 0
        self.pm2_rot_home = None

    def tool(self, name, home=None):
        self.seq += 1
        work = f"{self.root}/{name}-{self.seq}"
        os.makedirs(work)
        if name == "ward":
            t = Ward(work, self.env, self.args.ward)
        elif name == "supervisord":
            t = Supervisord(work, self.env)
        else:
            t = PM2(work, self.env, home)
        self.active.append(t)
        return t

    def finish(self, t, marks=()):
        """Stop a tool gracefully, count what it left behind, kill it."""
        try:
            t.stop()
        except Exception as e:  # noqa: BLE001
            problem(f"{t.name}: stop failed: {e}")
        time.sleep(0.2)
        left = []
        for m in marks:
            left += find_marked(m)
        left += find_cmd_containing(t.work)
        if t.daemon_pid and alive(t.daemon_pid):
            left.append(t.daemon_pid)
        left = sorted(set(left))
        if left:
            problem(f"{t.name}: {len(left)} process(es) still running after a graceful stop "
                    f"(e.g. {[b' '.join(cmdline(p) or []).decode(errors='replace')[:80] for p in left[:3]]})")
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        if t in self.active:
            self.active.remove(t)

    def cleanup(self):
        for t in list(self.active):
            try:
                if t.name == "pm2":
                    t.run(["pm2", "kill"], timeout=60)
                elif t.proc and t.proc.poll() is None:
                    os.killpg(t.proc.pid, signal.SIGKILL)
            except Exception:  # noqa: BLE001
                pass
        for m in (IDLE_MARK, RESTART_MARK):
            for p in find_marked(m):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        for p in find_cmd_containing(self.root):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if self.pm2_rot_home:
            subprocess.run(["pm2", "kill"], env=dict(self.env, PM2_HOME=self.pm2_rot_home),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ scenario 1 + 3

    def idle(self):
        q = self.args.quick
        sizes = [1, 100] if q else [1, 100, 1000]
        rounds = {1: 1 if q else 3, 100: 1 if q else 3, 1000: 1}
        cap = {1: 30, 100: 30, 1000: 60}
        cli_runs = 10 if q else 20
        res = {}
        for n in sizes:
            for tool in TOOLS:
                r = res.setdefault(f"{tool}/{n}", {"start": [], "rss": [], "cpu": [], "capped": [], "cli": []})
                for rnd in range(rounds[n]):
                    log(f"idle: {tool} with {n} programs, round {rnd + 1}/{rounds[n]}")
                    t = self.tool(tool)
                    t.write([{"name": "idle", "argv": IDLE_MARK, "instances": n, "policy": "default"}])
                    old = set(pids())
                    t0 = time.perf_counter()
                    t.start()
                    el, cnt = wait_count(IDLE_MARK, n, t0, cap[n], old)
                    if el is None:
                        r["capped"].append(cnt)
                        note(f"{TOOL_LABEL[tool]}: only {cnt}/{n} programs running after the {cap[n]} s cap")
                    r["start"].append(el)
                    if tool == "pm2":
                        t.find_daemon()
                        if t.cli:
                            try:
                                t.cli.wait(timeout=max(1, cap[n]))
                            except subprocess.TimeoutExpired:
                                pass
                    time.sleep(1.0)  # settle
                    dp = t.daemon_pid
                    c0, w0 = cpu_ns(dp), time.perf_counter()
                    time.sleep(5.0)
                    c1, w1 = cpu_ns(dp), time.perf_counter()
                    if c0 is not None and c1 is not None:
                        r["cpu"].append((c1 - c0) / 1e9 / (w1 - w0) * 100)
                    r["rss"].append((rss_kib(dp) or 0) / 1024)
                    if n == 100:
                        cmd = t.status_cmd()
                        t.run(cmd, timeout=60)  # warm-up
                        for _ in range(cli_runs):
                            a = time.perf_counter()
                            t.run(cmd, timeout=60)
                            r["cli"].append((time.perf_counter() - a) * 1000)
                        if tool == "ward":
                            self.check_ward_status(t, n)
                            # same request, but without finding/parsing the config first
                            sock = f"{t.work}/state/ward.sock"
                            r.setdefault("cli_socket", [])
                            for _ in range(cli_runs):
                                a = time.perf_counter()
                                t.run([t.bin, "--socket", sock, "status"], timeout=60)
                                r["cli_socket"].append((time.perf_counter() - a) * 1000)
                    self.finish(t, [IDLE_MARK])
        self.results["idle"] = res

    def check_ward_status(self, t, n):
        r = t.run([t.bin, "-c", t.conf, "status", "--json"], quiet=False)
        try:
            rep = json.loads(r.stdout)
            progs = rep["programs"]
            running = [p for p in progs if p["state"] == "running"]
            real = set(find_marked(IDLE_MARK))
            reported = {p["pid"] for p in running}
            if len(running) != n or reported != real:
                problem(f"ward status: {len(running)}/{n} reported running; pids match /proc: {reported == real}")
        except Exception as e:  # noqa: BLE001
            problem(f"ward status --json unparsable: {e}")

    # ------------------------------------------------------------ scenario 2

    def restart(self):
        samples = 10 if self.args.quick else 20
        res = {}
        for tool in TOOLS:
            log(f"restart latency: {tool}")
            t = self.tool(tool)
            t.write([{"name": "victim", "argv": RESTART_MARK, "policy": "min"}])
            old = set(pids())
            t0 = time.perf_counter()
            t.start()
            el, _ = wait_count(RESTART_MARK, 1, t0, 30, old)
            if tool == "pm2":
                t.find_daemon()
                t.cli.wait(timeout=30)
            lat, missed = [], 0
            time.sleep(1.2)
            for i in range(samples):
                cur = find_marked(RESTART_MARK)
                if len(cur) != 1:
                    problem(f"{tool}: {len(cur)} copies of the restart victim before sample {i}")
                    if not cur:
                        break
                pid = cur[0]
                known = set(pids())
                a = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                found = None
                while time.perf_counter() - a < 10:
                    for p in os.listdir("/proc"):
                        if p.isdigit():
                            ip = int(p)
                            if ip not in known and ip != pid and is_mark(ip, RESTART_MARK):
                                found = ip
                                break
                    if found:
                        break
                b = time.perf_counter()
                if found:
                    lat.append((b - a) * 1000)
                else:
                    missed += 1
                time.sleep(0.3)
            if missed:
                note(f"{TOOL_LABEL[tool]}: {missed}/{samples} kills not followed by a restart within 10 s")
            res[tool] = {"lat": lat, "missed": missed}
            self.finish(t, [RESTART_MARK])
        self.results["restart"] = res

    # ------------------------------------------------------------ scenario 4

    def logs(self):
        q = self.args.quick
        n = self.args.lines
        rounds = 1 if q else 3
        expected = sum(len(str(i)) + 1 for i in range(1, n + 1))
        res = {}
        # the limit: writer | cat > file
        base = []
        for rnd in range(rounds):
            d = tempfile.mkdtemp(dir=self.root)
            sf, out = f"{d}/start", f"{d}/out.log"
            subprocess.run(f'"{self.args.writer}" {n} "{sf}" | cat > "{out}"', shell=True, check=True)
            end = time.time_ns()
            start = int(open(sf).read())
            base.append((end - start) / 1e9)
            lost, dup, _ = verify([out], n)
            if lost or dup:
                problem(f"baseline cat lost {lost} dup {dup}")
        res["cat"] = {"time": base}
        modes = ["norot"] if q else ["norot", "rot"]
        for mode in modes:
            for tool in TOOLS:
                key = f"{tool}/{mode}"
                r = res.setdefault(key, {"time": [], "lost": [], "dup": [], "files": [], "skipped": None})
                home = None
                if tool == "pm2" and mode == "rot":
                    home = self.pm2_logrotate_home()
                    if home is None:
                        r["skipped"] = "pm2-logrotate could not be installed"
                        continue
                for rnd in range(rounds):
                    log(f"log throughput: {tool} {mode} round {rnd + 1}/{rounds}")
                    t = self.tool(tool, home)
                    sf, out = f"{t.work}/start", f"{t.work}/out/writer.log"
                    os.makedirs(f"{t.work}/out")
                    t.write([{"name": "writer", "argv": [self.args.writer, str(n), sf], "policy": "never",
                              "log": {"stdout": out, "max_size": "10MiB" if mode == "rot" else "100GiB",
                                      "keep": 50}}])
                    t.start()
                    # wait until every byte is on disk, or nothing moved for 5 s
                    last_size, last_change, done = -1, time.time_ns(), None
                    deadline = time.time() + 120
                    while time.time() < deadline:
                        files = t.log_files(out)
                        size = 0
                        for f in files:
                            try:
                                size += os.path.getsize(f)
                            except OSError:
                                pass
                        now = time.time_ns()
                        if size != last_size:
                            last_size, last_change = size, now
                        if size >= expected:
                            done = now
                            break
                        if os.path.exists(sf) and (now - last_change) > 5e9:
                            break
                        time.sleep(0.002)
                    end = done or last_change
                    time.sleep(0.5 if done else 0)
                    try:
                        start = int(open(sf).read())
                    except (OSError, ValueError):
                        problem(f"{tool} {mode}: writer never started")
                        self.finish(t)
                        continue
                    files = t.log_files(out)
                    lost, dup, total = verify(files, n)
                    r["time"].append((end - start) / 1e9)
                    r["lost"].append(lost)
                    r["dup"].append(dup)
                    r["files"].append(len(files))
                    if not done:
                        note(f"{TOOL_LABEL[tool]} ({mode}): only {last_size}/{expected} bytes reached disk; "
                             f"time is to the last growth")
                    if tool == "ward" and (lost or dup):
                        problem(f"ward log {mode}: {lost} lines lost, {dup} duplicated of {n} "
                                f"(files: {[os.path.basename(f) for f in files]})")
                    self.finish(t)
        self.results["logs"] = res
        self.results["logs_expected"] = expected

    def pm2_logrotate_home(self):
        if self.pm2_rot_home is not None:
            return self.pm2_rot_home or None
        home = f"{self.root}/pm2-logrotate-home"
        os.makedirs(home)
        e = dict(self.env, PM2_HOME=home)
        log("installing pm2-logrotate into a temporary PM2_HOME (may take a minute)")
        try:
            r = subprocess.run(["pm2", "install", "pm2-logrotate"], env=e, timeout=180,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            ok = r.returncode == 0 and os.path.isdir(f"{home}/modules/pm2-logrotate")
            if ok:
                for k, v in [("max_size", "10M"), ("retain", "50"), ("workerInterval", "1"),
                             ("compress", "false")]:
                    subprocess.run(["pm2", "set", f"pm2-logrotate:{k}", v], env=e, timeout=60,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                ver = "?"
                try:
                    ver = json.load(open(f"{home}/modules/pm2-logrotate/node_modules/pm2-logrotate/package.json"))["version"]
                except (OSError, ValueError, KeyError):
                    pass
                self.results["pm2_logrotate"] = ver
        except subprocess.TimeoutExpired:
            ok = False
        subprocess.run(["pm2", "kill"], env=e, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pm2_rot_home = home if ok else ""
        if not ok:
            note("pm2-logrotate did not install; PM2's rotation case is skipped")
        return home if ok else None

    # ------------------------------------------------------------ scenario 5

    def crash(self):
        dur = 10 if self.args.quick else 30
        res = {}
        for policy in ["default", "min"]:
            for tool in TOOLS:
                log(f"crash loop: {tool} {policy} policy, {dur} s")
                t = self.tool(tool)
                cf = f"{t.work}/starts"
                t.write([{"name": "crasher", "argv": ["/bin/sh", "-c", f"echo x >> {cf}; exit 1"],
                          "policy": policy}])
                t.start()
                if tool == "pm2":
                    t.find_daemon()
                dp = t.daemon_pid
                c0, a = cpu_ticks_s(dp), time.perf_counter()
                time.sleep(dur)
                c1, b = cpu_ticks_s(dp), time.perf_counter()
                try:
                    starts = sum(1 for _ in open(cf))
                except OSError:
                    starts = 0
                alive_d = alive(dp)
                rss = (rss_kib(dp) or 0) / 1024
                self.finish(t)
                res[f"{tool}/{policy}"] = {
                    "starts": starts, "per_min": starts / dur * 60,
                    "cpu": (c1 - c0) / (b - a) * 100 if c0 is not None and c1 is not None else None,
                    "alive": alive_d, "rss": rss, "dur": dur}
                if not alive_d:
                    problem(f"{tool}: daemon died during the crash loop ({policy})")
        self.results["crash"] = res


def verify(files, n):
    """Concatenate files; every number 1..n must occur exactly once."""
    seen = bytearray(n + 1)
    lost = dup = total = 0
    for f in files:
        with open(f, "rb") as fh:
            for line in fh:
                total += 1
                try:
                    v = int(line)
                except ValueError:
                    continue
                if 1 <= v <= n:
                    if seen[v]:
                        dup += 1
                    seen[v] = 1
    lost = n - sum(seen[1:])
    return lost, dup, total


# ---------------------------------------------------------------- report

def fmt(s, unit="", digits=1):
    if s is None:
        return "n/a"
    m, lo, hi = s["median"], s["min"], s["max"]
    f = f"{{:.{digits}f}}"
    if s["n"] > 1:
        return f"{f.format(m)}{unit} ({f.format(lo)}–{f.format(hi)})"
    return f"{f.format(m)}{unit}"


def ratio(a, b):
    if a is None or b is None or b["median"] == 0:
        return "n/a"
    return f"{a['median'] / b['median']:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


KEEP_MARKER = "<!-- kept across reruns of bench/run.sh -->"


def report(b, meta, path):
    R = b.results
    q = b.args.quick
    L = []
    L.append("# Benchmarks: ward vs supervisord vs PM2\n")
    L.append("Generated by `bench/run.sh" + (" --quick" if q else "") + "`; do not edit by hand, rerun instead.")
    if q:
        L.append("\n**This is a `--quick` run**: one round per case, 1 and 100 programs only, "
                 "no log rotation case, 10 s crash loop.")
    L.append("")
    L.append(CAVEAT + "\n")
    L.append("## Machine and versions\n")
    L.append(table(["", ""], [[k, v] for k, v in meta.items()]))
    L.append("\nCells are *median (min–max)* over the rounds; the ratio columns are ward's median "
             "divided by the peer's (below 1 is better for ward, except throughput where above 1 is better).\n")
    targets = []

    if "idle" in R:
        I = R["idle"]
        sizes = sorted({int(k.split("/")[1]) for k in I})
        L.append("## 1. Idle programs: daemon memory, idle CPU, time to start\n")
        L.append("N programs `sleep 987650` (run directly, no shell: ward `command = [\"sleep\", \"987650\"]`, "
                 "supervisord `command=sleep 987650`, PM2 `interpreter: none`). *Start* is from launching the "
                 "daemon (ward: `ward up`; supervisord: `supervisord -n`; PM2: `pm2 start ecosystem.json`, which "
                 "also spawns its God daemon) until N such processes exist in /proc. *RSS* is VmRSS of the daemon "
                 "process only (PM2: the God daemon), 1 s after all started. *Idle CPU* is the daemon's CPU time "
                 "(all threads, /proc/PID/task/*/schedstat) over the next 5 s.\n")
        rows = []
        for n in sizes:
            for metric, key, unit, dg in [("start", "start", " s", 3), ("RSS", "rss", " MiB", 1),
                                          ("idle CPU", "cpu", " %", 3)]:
                s = {t: stats(I[f"{t}/{n}"][key]) for t in TOOLS}
                cells = [fmt(s[t], unit, dg) for t in TOOLS]
                for i, t in enumerate(TOOLS):
                    if key == "start" and I[f"{t}/{n}"]["capped"]:
                        cells[i] = f"> cap ({I[f'{t}/{n}']['capped'][0]}/{n} running)"
                rows.append([f"{n}", metric] + cells + [ratio(s["ward"], s["supervisord"]), ratio(s["ward"], s["pm2"])])
        L.append(table(["N", "metric", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"], rows))
        L.append("")

        def med(n, k):
            s = stats(I.get(f"ward/{n}", {}).get(k, []))
            return s["median"] if s else None
        for n, lim in [(100, 0.5), (1000, 2.0)]:
            m = med(n, "start")
            if f"ward/{n}" in I:
                targets.append((f"{n} programs running within {lim} s", f"{m:.3f} s" if m is not None else "capped",
                                m is not None and m < lim))
        m = med(100, "rss")
        if m is not None:
            targets.append(("daemon RSS with 100 programs < 8 MiB", f"{m:.1f} MiB", m < 8))
        for n in sizes:
            m = med(n, "cpu")
            if m is not None:
                targets.append((f"idle CPU with {n} programs < 0.1 %", f"{m:.3f} %", m < 0.1))

    if "restart" in R:
        S = R["restart"]
        L.append("## 2. Restart latency after SIGKILL\n")
        L.append("The child `sleep 987651` is SIGKILLed; the time is until a new process with that exact argv "
                 "exists (a tight /proc scan, not the tool's status). Minimum delay each tool allows: ward "
                 "`restart = \"always\"`, `min_uptime = \"0s\"`, `backoff = { initial = \"0s\", max = \"0s\" }`; "
                 "supervisord `startsecs=0`, `autorestart=true`; PM2 `restart_delay: 0`, `min_uptime: 0`. "
                 "0.3 s between kills.\n")
        st = {t: stats(S[t]["lat"]) for t in TOOLS}
        rows = [["median", *[fmt_one(st[t], "median") for t in TOOLS], ratio(st["ward"], st["supervisord"]),
                 ratio(st["ward"], st["pm2"])],
                ["p90", *[fmt_one(st[t], "p90") for t in TOOLS],
                 rat(st["ward"], st["supervisord"], "p90"), rat(st["ward"], st["pm2"], "p90")],
                ["min–max", *[f"{st[t]['min']:.2f}–{st[t]['max']:.2f} ms" if st[t] else "n/a" for t in TOOLS], "", ""],
                ["samples", *[f"{S[t]['missed'] and str(len(S[t]['lat'])) + ' (+' + str(S[t]['missed']) + ' missed)' or len(S[t]['lat'])}" for t in TOOLS], "", ""]]
        L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"], rows))
        L.append("")
        if st["ward"]:
            targets.append(("restart latency median < 3 ms", f"{st['ward']['median']:.2f} ms", st["ward"]["median"] < 3))

    if "idle" in R and any(R["idle"].get(f"{t}/100", {}).get("cli") for t in TOOLS):
        I = R["idle"]
        L.append("## 3. CLI status latency, 100 programs\n")
        L.append("Wall time of one status command, from exec to exit (`ward status`, `supervisorctl status`, "
                 "`pm2 jlist`), after one warm-up run.\n")
        st = {t: stats(I[f"{t}/100"]["cli"]) for t in TOOLS}
        L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"],
                       [["status", *[fmt(st[t], " ms", 1) for t in TOOLS], ratio(st["ward"], st["supervisord"]),
                         ratio(st["ward"], st["pm2"])]]))
        cs = stats(I["ward/100"].get("cli_socket", []))
        if cs:
            L.append(f"\nFor diagnosis: `ward --socket PATH status` (the same request without locating and "
                     f"parsing the config file first) takes {fmt(cs, ' ms', 1)}.")
        L.append("")
        if st["ward"]:
            targets.append(("`ward status` with 100 programs < 5 ms", f"{st['ward']['median']:.2f} ms",
                            st["ward"]["median"] < 5))

    if "logs" in R:
        G = R["logs"]
        n = b.args.lines
        mib = R["logs_expected"] / 1048576
        L.append("## 4. Log throughput\n")
        L.append(f"A C writer (`bench/writer.c`) prints {n:,} numbered lines ({mib:.1f} MiB) as fast as it can, "
                 "under each supervisor, to a log file. Time is from the writer's own start (it records it) until "
                 "every byte is on disk. All files (rotated ones in order, then the live one) are then read back "
                 "and every number must appear exactly once. The limit is `writer | cat > file`. "
                 "Rotation: ward `max_size = \"10MiB\"`, `keep = 50`; supervisord `stdout_logfile_maxbytes=10MB`, "
                 "`stdout_logfile_backups=50`; PM2 via pm2-logrotate (`max_size 10M`, `workerInterval 1`, "
                 "`retain 50`), which copies and truncates on a timer.\n")
        cat = stats(G["cat"]["time"])
        rows = [["`writer \\| cat`", fmt(cat, " s", 3), "", "", "", "", ""]]
        for mode, label in [("norot", "no rotation"), ("rot", "rotate every 10 MiB")]:
            if f"ward/{mode}" not in G:
                continue
            cells_t, cells_x, cells_l = [], [], []
            sts = {}
            for t in TOOLS:
                r = G[f"{t}/{mode}"]
                if r.get("skipped"):
                    cells_t.append(f"skipped: {r['skipped']}")
                    cells_x.append("")
                    cells_l.append("")
                    sts[t] = None
                    continue
                s = stats(r["time"])
                sts[t] = s
                cells_t.append(fmt(s, " s", 3))
                cells_x.append(f"{cat['median'] / s['median']:.2f}×" if s and cat else "n/a")
                cells_l.append(f"{max(r['lost'] or [0]):,} / {max(r['dup'] or [0]):,} (files: {max(r['files'] or [0])})")
            rows.append([f"{label}: time", *cells_t, ratio(sts["ward"], sts["supervisord"]), ratio(sts["ward"], sts["pm2"])])
            rows.append([f"{label}: speed vs `cat`", *cells_x, "", ""])
            rows.append([f"{label}: lost / duplicated (worst round)", *cells_l, "", ""])
            if sts["ward"] and cat:
                x = cat["median"] / sts["ward"]["median"]
                targets.append((f"log throughput ({label}) ≥ 0.9× `cat`", f"{x:.2f}×", x >= 0.9))
                wl = G[f"ward/{mode}"]
                targets.append((f"no line lost or duplicated ({label})",
                                f"lost {max(wl['lost'])}, dup {max(wl['dup'])}",
                                max(wl["lost"]) == 0 and max(wl["dup"]) == 0))
        L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"],
                       [[r[0], *r[1:4], r[4] if len(r) > 4 else "", r[5] if len(r) > 5 else ""] for r in rows]))
        L.append("")

    if "crash" in R:
        C = R["crash"]
        dur = next(iter(C.values()))["dur"]
        L.append("## 5. Crash loop\n")
        L.append(f"A program that exits with status 1 at once (`sh -c 'echo x >> starts; exit 1'`), for {dur} s. "
                 "*Starts/min* counts the lines it appended. *CPU* is the daemon's own utime+stime over the window "
                 "(children not included). Default policy: nothing set (ward: on-failure, backoff 1 s→60 s, gives "
                 "up after 10; supervisord: startsecs=1, startretries=3, autorestart=unexpected; PM2: autorestart, "
                 "min_uptime 1 s, max_restarts 16). Minimum delay: as in scenario 2, never giving up.\n")
        rows = []
        for pol, label in [("default", "default policy"), ("min", "minimum delay")]:
            r = {t: C.get(f"{t}/{pol}") for t in TOOLS}
            rows.append([f"{label}: starts/min", *[f"{r[t]['per_min']:.0f}" if r[t] else "n/a" for t in TOOLS],
                         rr(r["ward"], r["supervisord"], "per_min"), rr(r["ward"], r["pm2"], "per_min")])
            rows.append([f"{label}: daemon CPU", *[f"{r[t]['cpu']:.1f} %" if r[t] and r[t]["cpu"] is not None else "n/a" for t in TOOLS],
                         rr(r["ward"], r["supervisord"], "cpu"), rr(r["ward"], r["pm2"], "cpu")])
            rows.append([f"{label}: CPU ms per start", *[f"{r[t]['cpu'] * 10 * r[t]['dur'] / max(1, r[t]['starts']):.2f}" if r[t] and r[t]["cpu"] is not None else "n/a" for t in TOOLS],
                         "", ""])
        L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"], rows))
        L.append("")

    L.append("## Targets (from the issue)\n")
    L.append(table(["target", "ward", "met?"], [[a, v, "yes" if ok else "**no**"] for a, v, ok in targets]))
    L.append("")
    if PROBLEMS or NOTES:
        L.append("## Observations\n")
        for p in PROBLEMS:
            L.append(f"- **problem**: {p}")
        for n_ in NOTES:
            L.append(f"- {n_}")
        L.append("")
    L.append("## Rerun\n")
    L.append("```sh\nbench/run.sh            # full suite (< 15 min): builds ward, installs supervisor and pm2 if missing\n"
             "bench/run.sh --quick    # ~3 min subset\n```\n")
    L.append("Everything runs on loopback with its own temporary directories (PM2_HOME, the supervisord "
             "socket and ward's state_dir are all under one temp dir), and every process started is stopped at "
             "the end. See `bench/README.md`.")
    # Sections written by other scripts (bench/heartbeat.sh) sit below this
    # marker in the existing report; keep them across reruns.
    kept = ""
    try:
        old = open(path).read()
        if KEEP_MARKER in old:
            kept = "\n" + old[old.index(KEEP_MARKER):]
    except OSError:
        pass
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n" + kept)
    return targets


def fmt_one(s, k):
    return f"{s[k]:.2f} ms" if s else "n/a"


def rat(a, b, k):
    return f"{a[k] / b[k]:.2f}×" if a and b and b[k] else "n/a"


def rr(a, b, k):
    return f"{a[k] / b[k]:.2f}×" if a and b and a.get(k) is not None and b.get(k) else "n/a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ward", required=True)
    ap.add_argument("--writer", required=True)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--only", default="idle,restart,logs,crash")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", help="also dump raw results here")
    ap.add_argument("--meta", required=True, help="JSON with machine/version info")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    b = Bench(args)

    def on_signal(sig, _):
        log(f"signal {sig}: cleaning up")
        b.cleanup()
        sys.exit(130)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.time()
    try:
        for s in args.only.split(","):
            getattr(b, s)()
    finally:
        b.cleanup()
    meta = json.load(open(args.meta))
    meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["suite wall time"] = f"{time.time() - t0:.0f} s" + (" (--quick)" if args.quick else "")
    if "pm2_logrotate" in b.results:
        meta["pm2-logrotate"] = b.results["pm2_logrotate"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": b.results, "notes": NOTES, "problems": PROBLEMS, "meta": meta}, f, indent=1)
    targets = report(b, meta, args.out)
    for a, v, ok in targets:
        log(f"target {'MET ' if ok else 'MISSED'}: {a}: {v}")
    for p in PROBLEMS:
        log("problem: " + p)


if __name__ == "__main__":
    main()
