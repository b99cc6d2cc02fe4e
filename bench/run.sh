#!/usr/bin/env bash
# Run every benchmark for ward, supervisord and PM2 and write docs/BENCHMARKS.md.
#   bench/run.sh           full suite (< 15 min)
#   bench/run.sh --quick   ~3 min subset
# Extra flags go to bench/bench.py (e.g. --only restart,logs --keep).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="$repo/docs/BENCHMARKS.md"
tmp="$(mktemp -d -t wardbench-run.XXXXXX)"
pyd=""

cleanup() {
    local rc=$?
    if [[ -n "$pyd" ]] && kill -0 "$pyd" 2>/dev/null; then
        kill -TERM "$pyd" 2>/dev/null || true   # the driver cleans up what it started
        wait "$pyd" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '==> %s\n' "$*" >&2; }

say "building ward (release)"
(cd "$repo" && cargo build --release --quiet)
ward="$repo/target/release/ward"

if ! command -v supervisord >/dev/null || ! command -v supervisorctl >/dev/null; then
    say "installing supervisor (pip)"
    python3 -m pip install --quiet supervisor
fi
if ! command -v pm2 >/dev/null; then
    say "installing pm2 (npm)"
    npm install -g --silent pm2
fi
command -v gcc >/dev/null || { echo "gcc is needed for bench/writer.c" >&2; exit 1; }
gcc -O2 -o "$tmp/writer" "$here/writer.c"

# Versions, without starting a PM2 daemon (`pm2 --version` would start one in ~/.pm2).
pm2_version="$(node -e 'console.log(require(process.argv[1]).version)' "$(npm root -g)/pm2/package.json" 2>/dev/null || echo '?')"
python3 - "$tmp/meta.json" "$ward" "$pm2_version" <<'PY'
import json, platform, subprocess, sys, os
path, ward, pm2v = sys.argv[1:4]
def run(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return "?"
model = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        model = line.split(":", 1)[1].strip(); break
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
meta = {
    "CPU": f"{model} ({os.cpu_count()} cores, nproc {run('nproc')})",
    "memory": f"{int(mem) / 1048576:.1f} GiB",
    "kernel": run("uname", "-sr"),
    "ward": f"{run(ward, '--version')} (git {run('git', '-C', os.path.dirname(ward), 'rev-parse', '--short', 'HEAD')}, release build)",
    "supervisord": run("supervisord", "--version"),
    "PM2": pm2v,
    "node": run("node", "--version"),
    "python": platform.python_version(),
}
json.dump(meta, open(path, "w"), indent=1)
PY

say "running the benchmarks"
python3 "$here/bench.py" --ward "$ward" --writer "$tmp/writer" --meta "$tmp/meta.json" \
    --out "$out" --json "$tmp/results.json" "$@" &
pyd=$!
wait "$pyd"
pyd=""
say "done (report: docs/BENCHMARKS.md unless --out was given)"
