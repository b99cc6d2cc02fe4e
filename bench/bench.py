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
import errno
import glob
import hashlib
import http.client
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
# In the order they run; `--only` takes a comma-separated subset.
# Idle CPU is measured over this long: ward's store refresh period, so a
# window holds one refresh (5 s windows held one or none, by luck).
IDLE_WINDOW = 10.0
# ...and starts this long after all N programs run, for every tool: by then
# the start's aftermath is over (ward: each program's `starting -> running`
# transition after the default `min_uptime` of 1 s, and the first sampling of
# every program, which writes every row; a window 1 s after the start held
# both, and with 1,000 programs they were two thirds of its CPU).
IDLE_SETTLE = 12.0
SCENARIOS = ["idle", "restart", "logs", "crash", "heartbeat", "store", "churn"]
TOOLS = ["ward", "supervisord", "pm2"]
TOOL_LABEL = {"ward": "ward", "supervisord": "supervisord", "pm2": "PM2"}

# Marker argvs: `sleep 98765N.<pid>`. The suffix (this driver's pid) keeps
# them apart from other runs' and other people's sleeps on a shared machine:
# processes are found, counted as leaked and killed by exact argv.
RUN_SUFFIX = f".{os.getpid():07d}"
IDLE_MARK = ["sleep", "987650" + RUN_SUFFIX]
RESTART_MARK = ["sleep", "987651" + RUN_SUFFIX]

CAVEAT = "**Read with care.** Timings of a few milliseconds (restart latency, `ward status`) and the 2,000,000-line log runs (about 0.1–0.5 s each for 14 MiB) are sensitive to other load on the machine: look at the ranges, not only the medians. The heartbeat load generators and the churn driver run on the same cores as ward. PM2's rotation case uses pm2-logrotate, which rotates by copy and truncate on a 1 s timer and names rotated files `<name>__<date>.log`; the bench looks for those (by that name pattern), so lines counted lost there are lines missing from every file it found."

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


# ---------------------------------------------------------------- kernel process events

class ProcEvents:
    """fork, exec and exit events of every process, from the kernel's proc connector.

    A netlink socket (NETLINK_CONNECTOR, multicast group CN_IDX_PROC) to which
    the kernel sends one message per event, stamped with ktime_get_ns(), i.e.
    CLOCK_MONOTONIC, the clock of time.monotonic_ns(). The driver sleeps on
    the socket instead of scanning /proc, so it does not occupy a core while
    a supervisor restarts a program, and the times are the kernel's, not the
    moment a poller happened to look. Older kernels let only root subscribe
    (bind fails with EPERM; recent ones let any user listen), and a
    container may accept the subscription and send nothing:
    `open_proc_events()` returns None and the reason when the socket cannot
    be opened or no event arrives for a test process within 2 s.
    """

    NETLINK_CONNECTOR = 11
    CN_IDX_PROC = 1
    CN_VAL_PROC = 1
    PROC_CN_MCAST_LISTEN = 1
    PROC_CN_MCAST_IGNORE = 2
    NLMSG_DONE = 3  # the connector's message type
    FORK, EXEC, EXIT = 1, 2, 0x80000000
    HDR = 16 + 20  # nlmsghdr + cn_msg; then what, cpu, timestamp_ns; event data at +16
    # An exec'd pid whose argv is not (yet) the marker is read again for up to
    # 50 ms, every 1 ms, in case the event came before /proc showed the new argv.
    RECHECK_NS = 50_000_000
    RECHECK_S = 0.001

    def __init__(self):
        self.overflows = 0  # ENOBUFS: the kernel dropped events (receive buffer full)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        try:
            # Room for bursts (a parallel build nearby); as root beyond rmem_max.
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                    break
                except OSError:
                    pass
            self.sock.bind((0, self.CN_IDX_PROC))  # port id chosen by the kernel; EPERM if not allowed
            self.subscribed = True  # from here on, close() sends IGNORE (best effort)
            self._control(self.PROC_CN_MCAST_LISTEN)
            self.sock.setblocking(False)
            self._self_test()
        except BaseException:
            self.close()
            raise

    def _control(self, op):
        port = self.sock.getsockname()[0]
        body = struct.pack("=I", op)
        cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, self.CN_VAL_PROC, 0, 0, len(body), 0) + body
        self.sock.sendto(struct.pack("=IHHII", 16 + len(cn), self.NLMSG_DONE, 0, 0, port) + cn, (0, 0))

    def _self_test(self):
        """Raise unless the exit event of a short-lived child arrives within 2 s."""
        p = subprocess.Popen(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        p.wait()
        end = time.monotonic() + 2
        while time.monotonic() < end:
            select.select([self.sock], [], [], max(0.0, end - time.monotonic()))
            if any(w == self.EXIT and d[1] == p.pid for w, _, d in self.drain()):
                return
        raise OSError(errno.ENODATA, "subscribed, but no event came for a test process within 2 s")

    def close(self):
        if self.sock is None:
            return
        if getattr(self, "subscribed", False):
            # Unsubscribe explicitly: the kernel counts listeners by LISTEN/IGNORE
            # messages, not by open sockets, and builds events while the count is > 0.
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
                self._control(self.PROC_CN_MCAST_IGNORE)
            except OSError:
                pass
        self.sock.close()
        self.sock = None

    def drain(self):
        """Every event queued now, without blocking: [(what, ts_ns, data)], data
        (parent_pid, parent_tgid, child_pid, child_tgid) for FORK, (pid, tgid)
        for EXEC, (pid, tgid, exit_code, exit_signal) for EXIT."""
        out = []
        while True:
            try:
                d = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overflows += 1
                    continue
                raise
            off = 0
            while off + 16 <= len(d):
                ln, typ = struct.unpack_from("=IH", d, off)
                if ln < 16 or off + ln > len(d):
                    break
                if typ == self.NLMSG_DONE and ln >= self.HDR + 16 \
                        and struct.unpack_from("=II", d, off + 16) == (self.CN_IDX_PROC, self.CN_VAL_PROC):
                    what, _cpu, ts = struct.unpack_from("=IIQ", d, off + self.HDR)
                    at = off + self.HDR + 16
                    if what == self.FORK and ln >= self.HDR + 32:
                        out.append((what, ts, struct.unpack_from("=iiii", d, at)))
                    elif what == self.EXEC and ln >= self.HDR + 24:
                        out.append((what, ts, struct.unpack_from("=ii", d, at)))
                    elif what == self.EXIT and ln >= self.HDR + 32:
                        out.append((what, ts, struct.unpack_from("=iiII", d, at)))
                off += (ln + 3) & ~3

    def wait_replacement(self, mark, victim, a, cap):
        """After `victim` was SIGKILLed at monotonic ns `a`: sleep on the socket
        until a process other than the victim execs with argv exactly `mark`
        (`cap` s at most). Returns None, or a dict of kernel timestamps (ns):
        exec (of the replacement), exit (of the victim), fork (of the
        replacement), and seen (monotonic ns when this driver saw it)."""
        end = a + int(cap * 1e9)
        events, pending, found = [], {}, None
        while found is None:
            now = time.monotonic_ns()
            if now >= end:
                break
            timeout = (end - now) / 1e9
            if pending:
                timeout = min(timeout, self.RECHECK_S)
            select.select([self.sock], [], [], timeout)
            new = self.drain()
            events += new
            now = time.monotonic_ns()
            for what, ts, d in new:
                if what == self.EXEC and ts >= a and d[1] != victim:
                    pending[d[1]] = now + self.RECHECK_NS
            for pid in list(pending):
                if is_mark(pid, mark):
                    found = pid
                    break
                if now >= pending[pid] or cmdline(pid) is None:
                    del pending[pid]
        seen = time.monotonic_ns()
        if found is None:
            return None
        events += self.drain()  # the rest of this restart's events, if any were still on the way
        execs = [ts for what, ts, d in events if what == self.EXEC and ts >= a and d[1] == found]
        exits = [ts for what, ts, d in events if what == self.EXIT and ts >= a and d[0] == victim and d[1] == victim]
        forks = [ts for what, ts, d in events
                 if what == self.FORK and ts >= a and d[2] == found and d[3] == found]
        # the last exec: were there two (a shell exec'ing the program), the program's
        return {"pid": found, "exec": max(execs), "exit": exits[0] if exits else None,
                "fork": forks[0] if forks else None, "seen": seen}


def open_proc_events():
    """(ProcEvents, None), or (None, why it could not be used)."""
    try:
        return ProcEvents(), None
    except OSError as e:
        return None, f"{e.strerror or e} ({errno.errorcode.get(e.errno, e.errno)})"


def one_copy(mark, cap=2.0):
    """Live processes with argv `mark`, polled every 10 ms for up to `cap` s until there is exactly one."""
    end = time.monotonic() + cap
    while True:
        cur = find_marked(mark)
        if len(cur) == 1 or time.monotonic() >= end:
            return cur
        time.sleep(0.01)


def scan_for_replacement(mark, victim, known, a, cap):
    """The busy /proc scan of earlier reports: loop over /proc without pausing
    until a pid not in `known` has argv `mark`; True if found within `cap` s
    of perf_counter() `a`."""
    while time.perf_counter() - a < cap:
        for p in os.listdir("/proc"):
            if p.isdigit():
                ip = int(p)
                if ip not in known and ip != victim and is_mark(ip, mark):
                    return True
    return False


# ---------------------------------------------------------------- heartbeat and churn helpers

CHURN_MARK = ["sleep", "987652" + RUN_SUFFIX]
VICTIM_MARK = ["sleep", "987653" + RUN_SUFFIX]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_when_written(path, cap):
    """The stripped contents of `path` once it ends with a newline ('' after `cap` s)."""
    end = time.time() + cap
    while time.time() < end:
        try:
            with open(path) as f:
                text = f.read()
            if text.endswith("\n") and text.strip():
                return text.strip()
        except OSError:
            pass
        time.sleep(0.01)
    return ""


def parse_kv(text):
    """`key=value` words of the last line that has any."""
    kv = {}
    for line in text.splitlines():
        words = dict(w.split("=", 1) for w in line.split() if "=" in w)
        if words:
            kv = words
    return kv


class RssSampler:
    """VmRSS of a process every 50 ms in a thread, until stop(); keeps the peak (KiB)."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid) or 0)

    def stop(self):
        self.done.set()
        self.thread.join()


class Heartbeats:
    """Beats over one keep-alive HTTP connection; reads of the control socket and of the table."""

    def __init__(self, tool, port, tokens):
        self.port, self.tok = port, tokens
        self.sock = f"{tool.work}/state/ward.sock"
        self.db_path = f"{tool.work}/state/ward.db"
        self.db = None
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def close(self):
        self.conn.close()
        if self.db is not None:
            self.db.close()

    def beat(self, name, body):
        self.conn.request("POST", f"/v1/heartbeat/{name}", body=json.dumps(body),
                          headers={"Authorization": f"Bearer {self.tok[name]}",
                                   "Content-Type": "application/json"})
        r = self.conn.getresponse()
        r.read()
        return r.status

    def status_raw(self, name):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.sock)
            s.sendall(json.dumps({"cmd": "status", "names": [name]}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                c = s.recv(65536)
                if not c:
                    break
                buf += c
        return buf

    def live_jobs(self, name):
        rep = json.loads(self.status_raw(name))
        for p in rep.get("data", {}).get("programs", []):
            if p["name"] == name:
                return (p.get("heartbeat") or {}).get("jobs_processed") or 0
        return 0

    def settled_live_jobs(self, name, cap):
        """jobs_processed once it stopped moving for 300 ms (the actor drained its queue)."""
        last, since, end = None, time.perf_counter(), time.perf_counter() + cap
        while time.perf_counter() < end:
            v = self.live_jobs(name)
            if v != last:
                last, since = v, time.perf_counter()
            elif time.perf_counter() - since > 0.3:
                break
            time.sleep(0.02)
        return last

    def settle_with_table(self, name, since, cap):
        """Follow jobs_processed live and in the table until the live count has
        not moved for 300 ms and the table holds it: (that count, ms from
        `since` until the table first held it; None after `cap` s)."""
        samples, last, moved, end = [], None, time.perf_counter(), time.perf_counter() + cap
        while time.perf_counter() < end:
            live, row = self.live_jobs(name), self.row(name)
            now = time.perf_counter()
            samples.append((now, row[0] if row else None))
            if live != last:
                last, moved = live, now
            elif now - moved > 0.3 and samples[-1][1] == live:
                first = next(t for t, v in samples if v == live)
                return live, (first - since) * 1000
            time.sleep(0.005)
        return last, None

    def row(self, name):
        """(jobs_processed, current_task) of the row, None before it exists."""
        if self.db is None:
            if not os.path.exists(self.db_path):
                return None
            self.db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return self.db.execute("SELECT jobs_processed, current_task FROM worker_status WHERE name = ?",
                                   (name,)).fetchone()
        except sqlite3.Error:
            return None

    def wait_table(self, name, cond, cap):
        end = time.perf_counter() + cap
        while time.perf_counter() < end:
            if cond(self.row(name)):
                return True
            time.sleep(0.01)
        return False

    def table_reaches(self, name, jobs, since, cap):
        """ms from `since` until the row's jobs_processed is `jobs` (None after `cap` s)."""
        ok = self.wait_table(name, lambda r: r is not None and (r[0] or 0) >= jobs, cap)
        return (time.perf_counter() - since) * 1000 if ok else None

    def probe(self, task):
        """Send a beat naming `task` to `probe`: ms until status shows it, ms until its row does."""
        t0 = time.perf_counter()
        if self.beat("probe", {"current_task": task}) != 200:
            problem("heartbeat: a probe beat was refused")
            return None, None
        needle = json.dumps(task).encode()
        s_ms = t_ms = None
        end = t0 + 5
        while time.perf_counter() < end:
            if needle in self.status_raw("probe"):
                s_ms = (time.perf_counter() - t0) * 1000
                break
            time.sleep(0.001)
        while time.perf_counter() < end:
            r = self.row("probe")
            if r is not None and r[1] == task:
                t_ms = (time.perf_counter() - t0) * 1000
                break
            time.sleep(0.001)
        if s_ms is None or t_ms is None:
            problem(f"heartbeat: probe {task} not seen within 5 s (status: {s_ms}, table: {t_ms})")
        return s_ms, t_ms


def churn_loop(ward_pid, rate, dur, ev):
    """For `dur` s: SIGKILL `rate` churn programs a second (random ones, from a
    /proc scan refreshed every second), and kill the victim and time its
    restart, 0.3 s after the last. With `ev` (ProcEvents) the victim's restart
    is timed as in scenario 2, kill → exec of the replacement by the kernel's
    timestamps, the driver sleeping on the socket meanwhile (10 s at most);
    without, by the busy /proc scan of earlier reports. Returns (kills, victim
    figures in ms: {"exec", "exit", "fork"} (kill → exec, kill → exit, exit → fork;
    only "exec" without `ev`), victims not restarted within 10 s, ward CPU %)."""
    rng = random.Random(987652)
    kills, missed = 0, 0
    vic = {"exec": [], "exit": [], "fork": []}
    c0 = cpu_ticks_s(ward_pid)
    start = time.perf_counter()
    pool, scanned = [], -1.0
    next_victim = start + 0.25
    while True:
        now = time.perf_counter()
        el = now - start
        if el >= dur:
            break
        if el - scanned >= 1.0:
            pool, scanned = find_marked(CHURN_MARK), el
            rng.shuffle(pool)
        # kills due by now, at `rate` per second
        while kills < int(el * rate) and pool:
            try:
                os.kill(pool.pop(), signal.SIGKILL)
                kills += 1
            except OSError:
                pass
        if now >= next_victim:
            next_victim = now + 0.3
            cur = find_marked(VICTIM_MARK)
            if len(cur) == 1:
                if ev is not None:
                    ev.drain()  # events since the last sample: not this one's
                    a = time.monotonic_ns()
                    os.kill(cur[0], signal.SIGKILL)
                    got = ev.wait_replacement(VICTIM_MARK, cur[0], a, 10)
                    if got:
                        vic["exec"].append((got["exec"] - a) / 1e6)
                        if got["exit"] is not None:
                            vic["exit"].append((got["exit"] - a) / 1e6)
                            if got["fork"] is not None:
                                vic["fork"].append((got["fork"] - got["exit"]) / 1e6)
                    else:
                        missed += 1
                else:
                    known = set(pids())
                    a = time.perf_counter()
                    os.kill(cur[0], signal.SIGKILL)
                    if scan_for_replacement(VICTIM_MARK, cur[0], known, a, 10):
                        vic["exec"].append((time.perf_counter() - a) * 1000)
                    else:
                        missed += 1
        time.sleep(0.005)
    c1 = cpu_ticks_s(ward_pid)
    cpu = (c1 - c0) / (time.perf_counter() - start) * 100 if c0 is not None and c1 is not None else None
    return kills, vic, missed, cpu


def table_catches_up(t, n, cap):
    """ms until every row of worker_status has the live restarts count (None after `cap` s)."""
    a = time.perf_counter()
    db = f"{t.work}/state/ward.db"
    end = a + cap
    con = None
    while time.perf_counter() < end:
        try:
            r = t.run([t.bin, "-c", t.conf, "status", "--json"], quiet=False, timeout=30)
            live = {p["name"]: p["restarts"] for p in json.loads(r.stdout)["programs"]}
            if con is None and os.path.exists(db):
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            rows = dict(con.execute("SELECT name, restarts FROM worker_status").fetchall()) if con else {}
            if len(live) == n and all(rows.get(k) == v for k, v in live.items()):
                return (time.perf_counter() - a) * 1000
        except (ValueError, KeyError, sqlite3.Error, subprocess.TimeoutExpired):
            pass
        time.sleep(0.02)
    problem(f"churn: the status table did not match the live restart counts within {cap} s")
    return None


# ---------------------------------------------------------------- the tools

class Tool:
    """Start a daemon with a set of programs, find its pid, status, stop."""

    def __init__(self, name, work, env):
        self.name = name
        self.work = work
        self.env = env
        self.proc = None
        self.daemon_pid = None

    def timed(self, args, timeout=60):
        """Wall time (ms) of `args` run to exit, output discarded. Not
        `subprocess.run(timeout=...)`: with a timeout, Python polls for the
        exit with sleeps of 1, 2, 4, 8 ms..., so a 4 ms command measured 7-8 ms.
        A blocking wait, bounded by a timer that kills the command instead."""
        a = time.perf_counter()
        p = subprocess.Popen(args, env=dict(self.env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        guard = threading.Timer(timeout, p.kill)
        guard.start()
        p.wait()
        b = time.perf_counter()
        guard.cancel()
        return (b - a) * 1000

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

    def write(self, progs, supervisor=(), store_enabled=True):
        """`supervisor`: extra `[supervisor]` lines; `store_enabled`: `[store] enabled`."""
        lines = [f'[supervisor]\nstate_dir = "{self.work}/state"', *supervisor, ""]
        if not store_enabled:
            lines.append("[store]\nenabled = false\n")
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
        self.ev = None  # the ProcEvents socket while a scenario uses it
        self.ev_why = None  # why the proc connector could not be used (noted once)

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

    def open_events(self):
        """The proc connector, or None after noting (once) why it cannot be used."""
        if self.ev_why is not None:
            return None
        ev, why = open_proc_events()
        if ev is None:
            self.ev_why = why
            note(f"the kernel's process events (proc connector) could not be used: {why}; restart latency "
                 f"(scenarios 2 and 8) is timed by the busy /proc scan only, kernel-timed figures are unavailable")
        self.ev = ev
        return ev

    def close_events(self):
        if self.ev is not None:
            if self.ev.overflows:
                note(f"proc connector: {self.ev.overflows} receive-buffer overflow(s) (events dropped "
                     f"by the kernel; samples missing an exit or fork event have no breakdown)")
            self.ev.close()
            self.ev = None

    def cleanup(self):
        if self.ev is not None:
            self.ev.close()
            self.ev = None
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
                    time.sleep(IDLE_SETTLE)
                    dp = t.daemon_pid
                    c0, w0 = cpu_ns(dp), time.perf_counter()
                    time.sleep(IDLE_WINDOW)
                    c1, w1 = cpu_ns(dp), time.perf_counter()
                    if c0 is not None and c1 is not None:
                        r["cpu"].append((c1 - c0) / 1e9 / (w1 - w0) * 100)
                    r["rss"].append((rss_kib(dp) or 0) / 1024)
                    if n == 100:
                        cmd = t.status_cmd()
                        t.run(cmd, timeout=60)  # warm-up
                        for _ in range(cli_runs):
                            r["cli"].append(t.timed(cmd))
                        if tool == "ward":
                            self.check_ward_status(t, n)
                            # same request, but without finding/parsing the config first
                            sock = f"{t.work}/state/ward.sock"
                            r.setdefault("cli_socket", [])
                            for _ in range(cli_runs):
                                r["cli_socket"].append(t.timed([t.bin, "--socket", sock, "status"]))
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
        """Per tool, two rounds of `samples` kills of the one child: first timed
        by the kernel's process events (kill → exec of the replacement, with
        kill → exit and exit → fork), then by the busy /proc scan of earlier
        reports (kill → the replacement seen in /proc)."""
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
            r = res[tool] = {"exec": [], "exit": [], "fork": [], "seen": [], "missed": 0,
                             "kernel": False, "scan": [], "scan_missed": 0}
            time.sleep(1.2)
            ev = self.open_events()
            if ev is not None:
                r["kernel"] = True
                try:
                    for i in range(samples):
                        pid = self.restart_victim(tool, i, "kernel-timed")
                        if pid is None:
                            break
                        ev.drain()  # events since the last sample: not this one's
                        a = time.monotonic_ns()
                        os.kill(pid, signal.SIGKILL)
                        got = ev.wait_replacement(RESTART_MARK, pid, a, 10)
                        if got:
                            r["exec"].append((got["exec"] - a) / 1e6)
                            r["seen"].append((got["seen"] - a) / 1e6)
                            if got["exit"] is not None:
                                r["exit"].append((got["exit"] - a) / 1e6)
                                if got["fork"] is not None:
                                    r["fork"].append((got["fork"] - got["exit"]) / 1e6)
                        else:
                            r["missed"] += 1
                        time.sleep(0.3)
                finally:
                    self.close_events()  # not open during the scan round
            for i in range(samples):
                pid = self.restart_victim(tool, i, "busy scan")
                if pid is None:
                    break
                known = set(pids())
                a = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                if scan_for_replacement(RESTART_MARK, pid, known, a, 10):
                    r["scan"].append((time.perf_counter() - a) * 1000)
                else:
                    r["scan_missed"] += 1
                time.sleep(0.3)
            for key, label in [("missed", "kernel-timed"), ("scan_missed", "busy scan")]:
                if r[key]:
                    note(f"{TOOL_LABEL[tool]}: {r[key]}/{samples} kills ({label}) not followed by a restart within 10 s")
            self.finish(t, [RESTART_MARK])
        self.results["restart"] = res

    def restart_victim(self, tool, i, label):
        """The one live copy of the restart victim before sample i (waits up to
        2 s for exactly one); None when there is none."""
        cur = one_copy(RESTART_MARK)
        if len(cur) != 1:
            problem(f"{tool}: {len(cur)} copies of the restart victim before sample {i} ({label})")
            if not cur:
                return None
        return cur[0]

    # ------------------------------------------------------------ scenario 4

    def logs(self):
        q = self.args.quick
        # The check: 2,000,000 lines, every one exactly once (two
        # rounds: the throughput figure comes from the long run below).
        n = self.args.lines
        self.results["logs"] = self.log_case(n, 1 if q else 2, exact=True)
        self.results["logs_expected"] = expected_bytes(n)
        # Throughput on a run long enough (~170 MiB, 1-3 s) for the ratio to
        # hold still; the output is compared whole (size and SHA-256).
        big = min(self.args.big_lines, 5_000_000) if q else self.args.big_lines
        if big > 0:
            self.results["logs_big"] = self.log_case(big, 1 if q else 3, exact=False)
            self.results["logs_big_lines"] = big
            self.results["logs_big_expected"] = expected_bytes(big)

    def log_case(self, n, rounds, exact):
        """`writer n` under each tool, with and without rotation, `rounds` each.
        exact: check every number once (lost/dup); else compare the files'
        concatenation with the writer's output (intact) and delete them."""
        q = self.args.quick
        expected = expected_bytes(n)
        res = {}
        # the limit: writer | cat > file
        base, ref = [], None
        for rnd in range(rounds):
            d = tempfile.mkdtemp(dir=self.root)
            sf, out = f"{d}/start", f"{d}/out.log"
            subprocess.run(f'"{self.args.writer}" {n} "{sf}" | cat > "{out}"', shell=True, check=True)
            end = time.time_ns()
            start = int(open(sf).read())
            base.append((end - start) / 1e9)
            if exact:
                lost, dup, _ = verify([out], n)
                if lost or dup:
                    problem(f"baseline cat lost {lost} dup {dup}")
            else:
                h = sha256_files([out])
                if os.path.getsize(out) != expected or (ref is not None and h != ref):
                    problem(f"baseline cat: {os.path.getsize(out)} bytes of {expected}, or output differs")
                ref = ref or h
            shutil.rmtree(d, ignore_errors=True)
        res["cat"] = {"time": base}
        modes = ["norot"] if q else ["norot", "rot"]
        for mode in modes:
            for tool in TOOLS:
                key = f"{tool}/{mode}"
                r = res.setdefault(key, {"time": [], "lost": [], "dup": [], "intact": [], "files": [],
                                         "skipped": None})
                home = None
                if tool == "pm2" and mode == "rot":
                    home = self.pm2_logrotate_home()
                    if home is None:
                        r["skipped"] = "pm2-logrotate could not be installed"
                        continue
                for rnd in range(rounds):
                    log(f"log throughput ({n:,} lines): {tool} {mode} round {rnd + 1}/{rounds}")
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
                    r["time"].append((end - start) / 1e9)
                    r["files"].append(len(files))
                    if not done:
                        note(f"{TOOL_LABEL[tool]} ({mode}, {n:,} lines): only {last_size}/{expected} bytes "
                             f"reached disk; time is to the last growth")
                    if exact:
                        lost, dup, _ = verify(files, n)
                        r["lost"].append(lost)
                        r["dup"].append(dup)
                        if tool == "ward" and (lost or dup):
                            problem(f"ward log {mode}: {lost} lines lost, {dup} duplicated of {n} "
                                    f"(files: {[os.path.basename(f) for f in files]})")
                    else:
                        intact = sum(os.path.getsize(f) for f in files) == expected and sha256_files(files) == ref
                        r["intact"].append(intact)
                        if tool == "ward" and not intact:
                            problem(f"ward log {mode}: the {n:,}-line output differs from the writer's")
                    self.finish(t)
                    if not exact:
                        shutil.rmtree(f"{t.work}/out", ignore_errors=True)
        return res

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

    # ------------------------------------------------------------ scenario 6

    def heartbeat(self):
        """ward only (the peers have no heartbeat registry): HTTP and sd_notify
        ingest rates, RSS under the floods, and how long a beat takes to reach
        `ward status` and its row in the status table (SQLite)."""
        q = self.args.quick
        rounds = 1 if q else 3
        secs = 3 if q else 5
        probes = 10 if q else 20
        res = {"http": [], "http_table_ms": [], "http_exact": [], "wrk": [], "notify": [],
               "notify_counted": [], "notify_table_ms": [], "status_ms": [], "table_ms": [],
               "flood_table_ms": [], "rss_idle": None, "rss_peak": None, "rss_after": None,
               "secs": secs, "wrk_used": bool(shutil.which("wrk"))}
        t = self.tool("ward")
        port = free_port()
        progs = [{"name": n, "policy": "default",
                  "argv": ["/bin/sh", "-c", f'echo "$WARD_HEARTBEAT_TOKEN" > {t.work}/tok.{n}; '
                           f'echo "$NOTIFY_SOCKET" > {t.work}/sock.{n}; exec sleep 987654{RUN_SUFFIX}']}
                 for n in ("sink", "probe")]
        t.write(progs, supervisor=[f'http = "127.0.0.1:{port}"'])
        t.start()
        loaders = []
        try:
            tok = {n: read_when_written(f"{t.work}/tok.{n}", 30) for n in ("sink", "probe")}
            sock = read_when_written(f"{t.work}/sock.sink", 30)
            if not (tok["sink"] and tok["probe"] and sock):
                problem("heartbeat: the programs never wrote their token and NOTIFY_SOCKET")
                return
            hb = Heartbeats(t, port, tok)
            hb.wait_table("sink", lambda row: row is not None, 30)
            time.sleep(1.0)  # settle
            res["rss_idle"] = (rss_kib(t.daemon_pid) or 0) / 1024
            sampler = RssSampler(t.daemon_pid)
            for rnd in range(rounds):
                log(f"heartbeat: round {rnd + 1}/{rounds}: HTTP flood ({secs} s), sd_notify flood")
                # HTTP, request/response in lockstep on 8 connections: every beat answered 200
                # was taken by the actor (the queue cannot fill), so the count must be exact.
                j0 = hb.settled_live_jobs("sink", 10)
                out = self.run_load(["http", f"127.0.0.1:{port}", "/v1/heartbeat/sink", tok["sink"], "8", str(secs)],
                                    secs + 30)
                end = time.perf_counter()
                kv = parse_kv(out)
                if "beats_per_sec" in kv:
                    res["http"].append(float(kv["beats_per_sec"]))
                    want = j0 + int(kv["http_beats"])
                    res["http_table_ms"].append(hb.table_reaches("sink", want, end, 10))
                    live = hb.live_jobs("sink")
                    res["http_exact"].append(live == want)
                    if live != want:
                        problem(f"heartbeat: {int(kv['http_beats'])} HTTP beats answered 200, "
                                f"but jobs_processed went from {j0} to {live}")
                if res["wrk_used"]:
                    rps = self.run_wrk(port, tok["sink"], secs)
                    if rps is not None:
                        res["wrk"].append(rps)
                # sd_notify: one sender, 200,000 datagrams (a send waits while ward's socket is full).
                j0 = hb.settled_live_jobs("sink", 10)
                n = 50_000 if q else 200_000
                out = self.run_load(["notify", sock, str(n)], 120)
                end = time.perf_counter()
                kv = parse_kv(out)
                if "datagrams_per_sec" in kv:
                    res["notify"].append(float(kv["datagrams_per_sec"]))
                    live, ms = hb.settle_with_table("sink", end, 10)
                    res["notify_counted"].append((live - j0) / max(1, int(kv["datagrams"])) * 100)
                    res["notify_table_ms"].append(ms)
            # A beat naming a fresh task: time until `ward status` shows it, then until its row does.
            log(f"heartbeat: {probes} probes idle, {probes} under an HTTP flood")
            for i in range(probes):
                s_ms, t_ms = hb.probe(f"idle-{i}")
                res["status_ms"].append(s_ms)
                res["table_ms"].append(t_ms)
                time.sleep(0.05 + 0.2 * ((i * 7919) % 100) / 100)  # spread over the publish window
            # The flood outlasts the probes (bounded all the same); stopped once they are done.
            flood = subprocess.Popen([self.args.load, "http", f"127.0.0.1:{port}", "/v1/heartbeat/sink", tok["sink"],
                                      "8", str(probes + 10)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            loaders.append(flood)
            time.sleep(0.5)
            for i in range(probes):
                _, t_ms = hb.probe(f"flood-{i}")
                res["flood_table_ms"].append(t_ms)
                time.sleep(0.05 + 0.2 * ((i * 7919) % 100) / 100)
            flood.terminate()
            flood.wait(timeout=30)
            sampler.stop()
            res["rss_peak"] = sampler.peak / 1024
            res["rss_after"] = (rss_kib(t.daemon_pid) or 0) / 1024
            hb.close()
        finally:
            for p in loaders:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.finish(t)
        self.results["heartbeat"] = res

    def run_load(self, args, timeout):
        """Run the Rust load generator; its stdout ('' and a problem on failure)."""
        try:
            r = subprocess.run([self.args.load, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            problem(f"heartbeat_load {args[0]} did not finish within {timeout} s")
            return ""
        if r.returncode != 0:
            problem(f"heartbeat_load {args[0]} failed: {r.stderr.strip()[:200]}")
        return r.stdout

    def run_wrk(self, port, token, secs):
        script = f"{self.root}/beat.lua"
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'{"jobs_delta":1}\'\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        try:
            r = subprocess.run(["wrk", "-t2", "-c32", f"-d{secs}s", "-s", script,
                                f"http://127.0.0.1:{port}/v1/heartbeat/sink"],
                               capture_output=True, text=True, timeout=secs + 30)
        except subprocess.TimeoutExpired:
            problem("wrk did not finish")
            return None
        rps = None
        for line in r.stdout.splitlines():
            if line.startswith("Requests/sec:"):
                rps = float(line.split()[1])
            if "Non-2xx" in line:
                problem(f"wrk: {line.strip()}")
        return rps

    # ------------------------------------------------------------ scenario 7

    def store(self):
        """Status-table write rate: the store test binary's ignored benchmark,
        which writes `worker_status` batches through ward's own writer code to
        a SQLite file and to a PostgreSQL server it starts on loopback."""
        rounds = 1 if self.args.quick else 3
        res = {}
        if not self.args.store_bench:
            note("status tables: no store benchmark binary given (--store-bench); skipped")
            return
        for backend in ["sqlite", "postgres"]:
            log(f"status tables: {backend}, {rounds} round(s)")
            env = dict(self.env, WARD_BENCH_ROUNDS=str(rounds))
            try:
                r = subprocess.run([self.args.store_bench, "--ignored", "--exact", f"{backend}::bench",
                                    "--nocapture", "--test-threads", "1"],
                                   env=env, capture_output=True, text=True, timeout=300, cwd=self.root)
            except subprocess.TimeoutExpired:
                problem(f"status tables: the {backend} benchmark did not finish within 300 s")
                continue
            got = {}
            for line in r.stdout.splitlines():
                # The harness may print `test NAME ... ` on the same line first.
                if "store-bench " in line:
                    kv = parse_kv(line[line.index("store-bench "):])
                    got.setdefault(int(kv["batch"]), []).append(float(kv["rows_per_sec"]))
            if r.returncode != 0 or not got:
                problem(f"status tables: the {backend} benchmark failed: "
                        f"{(r.stderr or r.stdout).strip()[-300:]}")
                continue
            res[backend] = got
        self.results["store"] = res

    # ------------------------------------------------------------ scenario 8 (issue #4)

    def churn(self):
        """1,000 programs, 10 of them SIGKILLed per second (ward restarts each
        at once): restart latency of one more program and ward's CPU, with the
        status tables on (SQLite) and off; with them on, how soon the table
        matches the live state once the churn stops."""
        q = self.args.quick
        n = 1000
        dur = 8 if q else 15
        rounds = 1 if q else 2
        rate = 10
        res = {m: {"lat": [], "exit": [], "fork": [], "cpu": [], "rate": [], "caught_up_ms": [], "missed": 0}
               for m in ("on", "off")}
        res.update({"n": n, "dur": dur, "rate": rate, "kernel": None})
        order = [("on", "off"), ("off", "on")]
        for rnd in range(rounds):
            for mode in order[rnd % 2]:
                log(f"churn: {n} programs, {rate} kills/s for {dur} s, store {mode}, round {rnd + 1}/{rounds}")
                r = res[mode]
                t = self.tool("ward")
                t.write([{"name": "churn", "argv": CHURN_MARK, "instances": n, "policy": "min"},
                         {"name": "victim", "argv": VICTIM_MARK, "policy": "min"}],
                        store_enabled=(mode == "on"))
                old = set(pids())
                t0 = time.perf_counter()
                t.start()
                el, cnt = wait_count(CHURN_MARK, n, t0, 60, old)
                if el is None:
                    problem(f"churn: only {cnt}/{n} programs started within 60 s")
                    self.finish(t, [CHURN_MARK, VICTIM_MARK])
                    continue
                time.sleep(1.0)  # settle
                ev = self.open_events()
                try:
                    kills, vic, missed, cpu = churn_loop(t.daemon_pid, rate, dur, ev)
                finally:
                    self.close_events()
                # kernel-timed only if every round was
                res["kernel"] = (ev is not None) if res["kernel"] is None else (res["kernel"] and ev is not None)
                r["lat"] += vic["exec"]
                r["exit"] += vic["exit"]
                r["fork"] += vic["fork"]
                r["missed"] += missed
                r["cpu"].append(cpu)
                r["rate"].append(kills / dur)
                if mode == "on":
                    r["caught_up_ms"].append(table_catches_up(t, n + 1, 10))
                self.finish(t, [CHURN_MARK, VICTIM_MARK])
        if res["on"]["missed"] or res["off"]["missed"]:
            note(f"churn: victim kills not followed by a restart within 10 s: "
                 f"store on {res['on']['missed']}, off {res['off']['missed']}")
        self.results["churn"] = res


def expected_bytes(n):
    """Bytes of the lines 1..n, each with its newline."""
    total, d = 0, 1
    while 10 ** (d - 1) <= n:
        total += (min(n, 10 ** d - 1) - 10 ** (d - 1) + 1) * (d + 1)
        d += 1
    return total


def sha256_files(files):
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while True:
                b = fh.read(1 << 20)
                if not b:
                    break
                h.update(b)
    return h.hexdigest()


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
    f = f"{{:,.{digits}f}}" if digits == 0 else f"{{:.{digits}f}}"
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
                 "no log rotation case, 5,000,000 lines for log throughput, 10 s crash loop, shorter heartbeat "
                 "floods, 8 s of churn.")
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
        L.append("N programs `sleep 987650.RUN` (run directly, no shell: ward `command = [\"sleep\", \"987650.RUN\"]`, "
                 "supervisord `command=sleep 987650.RUN`, PM2 `interpreter: none`; RUN is the driver's pid). *Start* is from launching the "
                 "daemon (ward: `ward up`; supervisord: `supervisord -n`; PM2: `pm2 start ecosystem.json`, which "
                 "also spawns its God daemon) until N such processes exist in /proc. *RSS* is VmRSS of the daemon "
                 f"process only (PM2: the God daemon), read at the end of the idle window. *Idle CPU* is the daemon's CPU time "
                 f"(all threads, /proc/PID/task/*/schedstat) over a {IDLE_WINDOW:.0f} s window that starts "
                 f"{IDLE_SETTLE:.0f} s after all N run, for every tool: the window is one `[store] refresh` period of ward "
                 "(10 s), so it holds one sampling of every program's CPU and RSS, as on average; the wait before it lets "
                 "the start's aftermath pass (ward: each program's `starting → running` after the default `min_uptime` "
                 "of 1 s, and the first sampling, which writes every row; a window 1 s after the start held both: "
                 "0.21 % instead of 0.08 % with 1,000 programs in a check run).\n")
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
        kernel = any(S[t].get("kernel") for t in TOOLS if t in S)
        L.append("## 2. Restart latency after SIGKILL\n")
        L.append("The child `sleep 987651.RUN` is SIGKILLed, and the time is until its replacement runs, "
                 "measured the same way for every tool (not through the tool's status). Minimum delay each "
                 "tool allows: ward `restart = \"always\"`, `min_uptime = \"0s\"`, `backoff = { initial = \"0s\", "
                 "max = \"0s\" }`; supervisord `startsecs=0`, `autorestart=true`; PM2 `restart_delay: 0`, "
                 "`min_uptime: 0`. 0.3 s between kills; each tool gets two rounds of the same number of kills.\n")
        L.append("*Kill → exec (kernel-timed)*, the first round and the figure the target is read against: the "
                 "driver subscribes to the kernel's process events (the proc connector, a netlink socket; "
                 "older kernels allow it to root only) and sleeps on that socket until a new process execs with exactly the marker argv (for "
                 "PM2, the exec that follows its fork of node). The time is from just before `kill()` "
                 "(CLOCK_MONOTONIC) to the kernel's timestamp of that exec (the same clock). The same events give "
                 "the breakdown: *kill → exit* is the victim's exit event, *exit → fork* the time from it to "
                 "the fork of the replacement.\n")
        L.append("*Busy /proc scan (as in earlier reports)*, the second round: the driver scans /proc in a loop "
                 "without pause until a new process with the marker argv exists, and takes the time when it "
                 f"sees it. That loop occupies a whole core (of the {os.cpu_count()} here), so the supervisor "
                 "runs on what is left and its wake-ups can wait for a scheduler tick, and the scan's own period "
                 "(one pass over /proc) adds to every figure: these measure the measurement as much as the "
                 "supervisor, and are still shown so that earlier reports stay comparable.\n")
        if not kernel:
            L.append("**The kernel's process events could not be used in this run** (see Observations): only the "
                     "busy-scan figures are available.\n")
        st = {t: stats(S[t]["exec"]) for t in TOOLS}
        sx = {t: stats(S[t]["exit"]) for t in TOOLS}
        sf = {t: stats(S[t]["fork"]) for t in TOOLS}
        sc = {t: stats(S[t]["scan"]) for t in TOOLS}

        def mm(x):
            return f"{x['min']:.2f}–{x['max']:.2f} ms" if x else "n/a"

        def count(lat, missed):
            return f"{len(lat)} (+{missed} missed)" if missed else str(len(lat))
        rows = [] if not kernel else [
                ["kill → exec, median", *[fmt_one(st[t], "median") for t in TOOLS],
                 ratio(st["ward"], st["supervisord"]), ratio(st["ward"], st["pm2"])],
                ["kill → exec, p90", *[fmt_one(st[t], "p90") for t in TOOLS],
                 rat(st["ward"], st["supervisord"], "p90"), rat(st["ward"], st["pm2"], "p90")],
                ["kill → exec, min–max", *[mm(st[t]) for t in TOOLS], "", ""],
                ["kill → exit (victim), median", *[fmt_one(sx[t], "median") for t in TOOLS], "", ""],
                ["exit → fork (replacement), median", *[fmt_one(sf[t], "median") for t in TOOLS],
                 ratio(sf["ward"], sf["supervisord"]), ratio(sf["ward"], sf["pm2"])],
                ["kill → exec, samples", *[count(S[t]["exec"], S[t]["missed"]) if S[t]["kernel"] else "n/a"
                                           for t in TOOLS], "", ""]]
        rows += [["busy /proc scan (as in earlier reports): median", *[fmt_one(sc[t], "median") for t in TOOLS],
                 ratio(sc["ward"], sc["supervisord"]), ratio(sc["ward"], sc["pm2"])],
                ["busy /proc scan: p90", *[fmt_one(sc[t], "p90") for t in TOOLS],
                 rat(sc["ward"], sc["supervisord"], "p90"), rat(sc["ward"], sc["pm2"], "p90")],
                ["busy /proc scan: min–max", *[mm(sc[t]) for t in TOOLS], "", ""],
                ["busy /proc scan: samples", *[count(S[t]["scan"], S[t]["scan_missed"]) for t in TOOLS], "", ""]]
        L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"], rows))
        L.append("")
        if st["ward"]:
            targets.append(("restart latency median < 3 ms",
                            f"{st['ward']['median']:.2f} ms (kill → exec, kernel-timed; busy scan "
                            + (f"{sc['ward']['median']:.2f} ms)" if sc["ward"] else "n/a)"),
                            st["ward"]["median"] < 3))
        elif sc["ward"]:
            targets.append(("restart latency median < 3 ms",
                            f"{sc['ward']['median']:.2f} ms (busy /proc scan; kernel-timed unavailable)",
                            sc["ward"]["median"] < 3))

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
        n = b.args.lines
        mib = R["logs_expected"] / 1048576
        big = R.get("logs_big_lines")
        L.append("## 4. Log throughput\n")
        L.append(f"A C writer (`bench/writer.c`) prints numbered lines as fast as it can, under each supervisor, "
                 "to a log file. Time is from the writer's own start (it records it) until every byte is on disk. "
                 "The limit is `writer | cat > file`. Rotation: ward `max_size = \"10MiB\"`, `keep = 50`; "
                 "supervisord `stdout_logfile_maxbytes=10MB`, `stdout_logfile_backups=50`; PM2 via pm2-logrotate "
                 "(`max_size 10M`, `workerInterval 1`, `retain 50`), which copies and truncates on a timer.\n")
        L.append(f"**{n:,} lines ({mib:.1f} MiB), every line checked**: all files (rotated ones in order, then "
                 "the live one) are read back and every number must appear exactly once. A run takes about "
                 "0.1 s, too short for its speed ratio to hold still from run to run.\n")
        def log_table(key, exact):
            rows, ratios = log_rows(R[key], exact)
            L.append(table(["", "ward", "supervisord", "PM2", "ward/supervisord", "ward/PM2"], rows) + "\n")
            return ratios

        ratios = log_table("logs", True)
        for label, _, wl in ratios:
            targets.append((f"no line lost or duplicated ({label}, {n:,} lines)",
                            f"lost {max(wl['lost'])}, dup {max(wl['dup'])}",
                            max(wl["lost"]) == 0 and max(wl["dup"]) == 0))
        if big:
            bmib = R["logs_big_expected"] / 1048576
            L.append(f"**{big:,} lines ({bmib:.0f} MiB), throughput**: the same runs, long enough for the ratio "
                     "to `cat` to be read; the files' concatenation is compared whole with the writer's output "
                     "(size and SHA-256), and *intact* says in how many rounds it was identical.\n")
            ratios = log_table("logs_big", False)
        for label, x, wl in ratios:
            targets.append((f"log throughput ({label}, {big or n:,} lines) ≥ 0.9× `cat`", f"{x:.2f}×", x >= 0.9))
            if big:
                targets.append((f"log output intact ({label}, {big:,} lines)",
                                f"{sum(wl['intact'])}/{len(wl['intact'])} rounds",
                                bool(wl["intact"]) and all(wl["intact"])))

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

    if "heartbeat" in R:
        H = R["heartbeat"]
        L.append("## 6. Heartbeat ingest (ward only)\n")
        L.append("supervisord and PM2 have no heartbeat registry, so this is ward alone, with its status tables on "
                 "(SQLite, the default). Two programs (`exec sleep`): `sink` takes the floods, `probe` the latency "
                 f"probes. Per round: `examples/heartbeat_load.rs http` ({H['secs']} s, 8 keep-alive connections, "
                 "request and response in lockstep, `POST /v1/heartbeat/sink` with `{\"jobs_delta\":1}` and the "
                 "bearer token)"
                 + (f"; `wrk -t2 -c32 -d{H['secs']}s` with the same request" if H["wrk_used"] else "")
                 + "; `heartbeat_load notify`, one sender of `X_WARD_JOBS=+1` datagrams (a send waits while "
                 "ward's socket is full, so this is ward's drain rate). After each flood, the time from its end "
                 "until `worker_status.jobs_processed` holds every accepted beat. A probe is a beat naming a fresh "
                 "`current_task`; the time is until `ward status` (the control socket, polled every 1 ms) shows it, "
                 "and until its row does (the SQLite file, polled every 1 ms), idle and during an HTTP flood on "
                 "`sink`. RSS is the daemon's VmRSS, sampled every 50 ms through the floods. The load generators "
                 "share the machine with ward.\n")
        st = lambda k: stats(H[k])  # noqa: E731
        rows = [
            ["HTTP heartbeats/s (heartbeat_load, 8 connections)", fmt(st("http"), "/s", 0), "≥ 50,000/s"],
        ]
        if H["wrk_used"]:
            rows.append(["HTTP heartbeats/s (wrk, 32 connections)", fmt(st("wrk"), "/s", 0), "≥ 50,000/s"])
        rows += [
            ["every accepted HTTP beat counted", f"{sum(H['http_exact'])}/{len(H['http_exact'])} rounds", "all"],
            ["flood end → all HTTP beats in the table", fmt(st("http_table_ms"), " ms", 0), "≤ 1,000 ms"],
            ["sd_notify datagrams/s", fmt(st("notify"), "/s", 0), "≥ 100,000/s"],
            ["sd_notify datagrams counted", fmt(st("notify_counted"), " %", 1), ""],
            ["flood end → counted datagrams in the table", fmt(st("notify_table_ms"), " ms", 0), "≤ 1,000 ms"],
            ["beat → `ward status`, idle", fmt(st("status_ms"), " ms", 1), ""],
            ["beat → row in the table, idle", fmt(st("table_ms"), " ms", 1), "≤ 1,000 ms"],
            ["beat → row in the table, during an HTTP flood", fmt(st("flood_table_ms"), " ms", 1), "≤ 1,000 ms"],
            ["daemon RSS: idle / peak under the floods / after",
             " / ".join(f"{H[k]:.1f} MiB" if H[k] is not None else "n/a"
                        for k in ("rss_idle", "rss_peak", "rss_after")), "bounded"],
        ]
        L.append(table(["", "ward", "target"], rows))
        L.append("\nProbe latencies are *median (min–max)* over the probes; p90: "
                 + ", ".join(f"{lbl} {st(k)['p90']:.1f} ms" for lbl, k in
                             [("status", "status_ms"), ("table idle", "table_ms"), ("table in a flood", "flood_table_ms")]
                             if st(k)) + ".\n")
        for label, k in [("HTTP heartbeats ≥ 50,000/s (heartbeat_load)", "http"),
                         ("HTTP heartbeats ≥ 50,000/s (wrk)", "wrk")]:
            if st(k):
                targets.append((label, f"{st(k)['median']:,.0f}/s", st(k)["median"] >= 50_000))
        if st("notify"):
            targets.append(("sd_notify ≥ 100,000 datagrams/s", f"{st('notify')['median']:,.0f}/s",
                            st("notify")["median"] >= 100_000))
        worst = [x for k in ("http_table_ms", "notify_table_ms", "table_ms", "flood_table_ms") for x in H[k]]
        ok = bool(worst) and None not in worst and max(worst) <= 1000 and all(H["http_exact"])
        targets.append(("every accepted beat reflected in the table within 1 s",
                        f"worst {max(x for x in worst if x is not None):.0f} ms" if any(x is not None for x in worst)
                        else "never", ok))
        if H["rss_peak"] is not None:
            targets.append(("daemon RSS under the floods < 64 MiB", f"{H['rss_peak']:.1f} MiB", H["rss_peak"] < 64))

    if "store" in R and R["store"]:
        S = R["store"]
        L.append("## 7. Status-table write rate\n")
        L.append("`worker_status` upserts in one transaction per batch, through ward's own writer code (the "
                 "ignored `bench` test of `tests/store`, release build): a SQLite file in WAL mode with "
                 "`synchronous = NORMAL`, and a PostgreSQL server the test starts on loopback (`fsync = off`, "
                 "`synchronous_commit = off`). 2,000 rows one at a time, 100,000 rows in batches of 100 and of "
                 "1,000. ward's writer batches by itself: changes that arrive while a write is in flight go into "
                 "the next transaction, one row per worker.\n")
        rows = []
        for backend, label in [("sqlite", "SQLite"), ("postgres", "PostgreSQL (loopback)")]:
            if backend in S:
                rows.append([label, *[fmt(stats(S[backend].get(bs, [])), " rows/s", 0) for bs in (1, 100, 1000)]])
                s100 = stats(S[backend].get(100, []))
                if s100:
                    targets.append((f"status-table writes ≥ 20,000 rows/s in batches of 100 ({label})",
                                    f"{s100['median']:,.0f} rows/s", s100["median"] >= 20_000))
        L.append(table(["backend", "batch of 1", "batch of 100", "batch of 1000"], rows))
        L.append("")

    if "churn" in R:
        C = R["churn"]
        L.append("## 8. Supervision under churn, with and without the status tables\n")
        kernel = C.get("kernel")
        how = ("its restart is timed as in scenario 2, kill → exec of the replacement by the kernel's "
               "timestamps, the driver sleeping on the proc connector's socket meanwhile (so it does not occupy "
               "a core); earlier reports timed it with the busy /proc scan, which kept a whole core "
               "busy, so their figures are not comparable with these. The victim's kill → exit and exit → fork "
               "medians are the breakdown"
               if kernel else
               "its restart is timed with the busy /proc scan of earlier reports (the kernel's process events "
               "could not be used in this run, see Observations)")
        L.append(f"{C['n']:,} programs (`sleep 987652.RUN`) and one more, the victim (`sleep 987653.RUN`), all at the minimum "
                 f"restart delay. For {C['dur']} s, {C['rate']} random programs a second are SIGKILLed (ward "
                 "restarts each at once: about 4 state changes and 4 events each), and every 0.3 s the victim is "
                 f"SIGKILLed: {how}. *Store on*: "
                 "the default SQLite status tables; *off*: `[store] enabled = false`. With the store on, *table "
                 "caught up* is the time from the end of the churn until every row's `restarts` equals the live "
                 "count. ward's CPU is its utime+stime over the churn window.\n")
        on, off = C["on"], C["off"]
        lo, lf = stats(on["lat"]), stats(off["lat"])
        what = "kill → exec" if kernel else "busy /proc scan"
        rows = [
            [f"victim restart latency ({what}), median", fmt_one(lo, "median"), fmt_one(lf, "median"), ratio(lo, lf)],
            [f"victim restart latency ({what}), p90", fmt_one(lo, "p90"), fmt_one(lf, "p90"), rat(lo, lf, "p90")],
            [f"victim restart latency ({what}), min–max",
             *[f"{s['min']:.2f}–{s['max']:.2f} ms" if s else "n/a" for s in (lo, lf)], ""],
        ]
        if kernel:
            xo, xf = stats(on.get("exit", [])), stats(off.get("exit", []))
            fo, ff = stats(on.get("fork", [])), stats(off.get("fork", []))
            rows += [
                ["victim kill → exit, median", fmt_one(xo, "median"), fmt_one(xf, "median"), ""],
                ["victim exit → fork, median", fmt_one(fo, "median"), fmt_one(ff, "median"), ratio(fo, ff)],
            ]
        rows += [
            ["samples", str(len(on["lat"])), str(len(off["lat"])), ""],
            ["churn kills/s achieved", fmt(stats(on["rate"]), "/s", 1), fmt(stats(off["rate"]), "/s", 1), ""],
            ["ward CPU during the churn", fmt(stats(on["cpu"]), " %", 1), fmt(stats(off["cpu"]), " %", 1),
             ratio(stats(on["cpu"]), stats(off["cpu"]))],
            ["table caught up after the churn", fmt(stats(on["caught_up_ms"]), " ms", 0), "", ""],
        ]
        L.append(table(["", "store on (SQLite)", "store off", "on/off"], rows))
        L.append("")
        if lo and lf:
            x = lo["median"] / lf["median"]
            targets.append((f"{C['n']:,} programs churning: restart latency with the store ≤ 1.2× without (median)",
                            f"{x:.2f}× ({lo['median']:.2f} vs {lf['median']:.2f} ms, {what})", x <= 1.2))
        cu = on["caught_up_ms"]
        if cu:
            targets.append(("under churn, the table matches the live state within 1 s of the last change",
                            f"worst {max(c for c in cu if c is not None):.0f} ms" if any(c is not None for c in cu)
                            else "never", None not in cu and max(cu) <= 1000))

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
             "bench/run.sh --quick    # ~5 min subset\n```\n")
    L.append("Everything runs on loopback with its own temporary directories (PM2_HOME, the supervisord "
             "socket and ward's state_dir are all under one temp dir), and every process started is stopped at "
             "the end. See `bench/README.md`.")
    # Notes written by hand sit below this marker in the existing report;
    # keep them across reruns.
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


def log_rows(G, exact):
    """Rows of a log table, and (label, ward's speed vs cat, ward's results) per mode."""
    cat = stats(G["cat"]["time"])
    rows = [["`writer \\| cat`", fmt(cat, " s", 3), "", "", "", ""]]
    ratios = []
    for mode, label in [("norot", "no rotation"), ("rot", "rotate every 10 MiB")]:
        if f"ward/{mode}" not in G:
            continue
        cells_t, cells_x, cells_l = [], [], []
        sts = {}
        for t in TOOLS:
            r = G[f"{t}/{mode}"]
            s = None if r.get("skipped") else stats(r["time"])
            sts[t] = s
            if r.get("skipped"):
                cells_t.append(f"skipped: {r['skipped']}")
                cells_x.append("")
                cells_l.append("")
                continue
            cells_t.append(fmt(s, " s", 3))
            cells_x.append(f"{cat['median'] / s['median']:.2f}×" if s and cat else "n/a")
            if exact:
                cells_l.append(f"{max(r['lost'] or [0]):,} / {max(r['dup'] or [0]):,} (files: {max(r['files'] or [0])})")
            else:
                cells_l.append(f"{sum(r['intact'])}/{len(r['intact'])} (files: {max(r['files'] or [0])})")
        rows.append([f"{label}: time", *cells_t, ratio(sts["ward"], sts["supervisord"]), ratio(sts["ward"], sts["pm2"])])
        rows.append([f"{label}: speed vs `cat`", *cells_x, "", ""])
        rows.append([f"{label}: " + ("lost / duplicated (worst round)" if exact else "intact rounds"),
                     *cells_l, "", ""])
        if sts["ward"] and cat:
            ratios.append((label, cat["median"] / sts["ward"]["median"], G[f"ward/{mode}"]))
    return rows, ratios


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
    ap.add_argument("--load", help="the heartbeat_load example binary (scenario 6)")
    ap.add_argument("--store-bench", help="the store test binary, built with --release (scenario 7)")
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines of the exact log check")
    ap.add_argument("--big-lines", type=int, default=20_000_000, help="lines of the log throughput run (0: none)")
    ap.add_argument("--only", default=",".join(SCENARIOS))
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
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if "heartbeat" in only and not args.load:
        ap.error("the heartbeat scenario needs --load (bench/run.sh builds it)")
    took = {}
    try:
        for s in only:
            a = time.time()
            try:
                getattr(b, s)()
            except Exception as e:  # noqa: BLE001 -- one broken scenario must not lose the others' report
                problem(f"scenario {s} stopped with {type(e).__name__}: {e}")
            took[s] = time.time() - a
    finally:
        b.cleanup()
    meta = json.load(open(args.meta))
    meta["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["suite wall time"] = f"{time.time() - t0:.0f} s" + (" (--quick)" if args.quick else "")
    meta["per scenario"] = ", ".join(f"{k} {v:.0f} s" for k, v in took.items())
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
