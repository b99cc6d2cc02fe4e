#!/usr/bin/env bash
# Run every benchmark for ward, supervisord and PM2 and write docs/BENCHMARKS.md.
#   bench/run.sh           full suite (~18 min)
#   bench/run.sh --quick   ~5 min subset
# Extra flags go to bench/bench.py (e.g. --only heartbeat,store --out /tmp/b.md --keep).
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

say "building the heartbeat load generator, the store benchmark and ward (release)"
# The load generator and the store benchmark are built with the
# dev-dependencies, whose tokio features (a multi-thread runtime) cargo merges
# into every crate of that build, the `ward` binary included. So ward is built
# last, on its own, as `cargo build --release` builds it for users, and copied
# out of target/ before anything can rebuild it.
(cd "$repo" && cargo build --release --quiet --example heartbeat_load)
load="$repo/target/release/examples/heartbeat_load"
# The status-table benchmark is the ignored `bench` test of tests/store (it
# starts its own PostgreSQL from the machine's binaries, like the store tests).
store_bench="$(cd "$repo" && cargo test --release --quiet --test store --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "store" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$store_bench" ]] || { echo "could not build the store benchmark (cargo test --release --test store --no-run)" >&2; exit 1; }
(cd "$repo" && cargo build --release --quiet --bin ward)
ward="$tmp/ward"
cp "$repo/target/release/ward" "$ward"

if ! command -v supervisord >/dev/null || ! command -v supervisorctl >/dev/null; then
    say "installing supervisor (pip)"
    python3 -m pip install --quiet supervisor
fi
if ! command -v pm2 >/dev/null; then
    say "installing pm2 (npm)"
    npm install -g --silent pm2
fi
# wrk is a second HTTP load generator for the heartbeat scenario (optional);
# PostgreSQL's binaries are needed by the status-table scenario.
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing ${missing[*]} (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || true
    fi
fi
command -v gcc >/dev/null || { echo "gcc is needed for bench/writer.c" >&2; exit 1; }
gcc -O2 -o "$tmp/writer" "$here/writer.c"

# Versions, without starting a PM2 daemon (`pm2 --version` would start one in ~/.pm2).
pm2_version="$(node -e 'console.log(require(process.argv[1]).version)' "$(npm root -g)/pm2/package.json" 2>/dev/null || echo '?')"
python3 - "$tmp/meta.json" "$ward" "$pm2_version" "$repo" <<'PY'
import json, platform, subprocess, sys, os
path, ward, pm2v, repo = sys.argv[1:5]
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
    "ward": f"{run(ward, '--version')} (git {run('git', '-C', repo, 'rev-parse', '--short', 'HEAD')}, release build)",
    "supervisord": run("supervisord", "--version"),
    "PM2": pm2v,
    "node": run("node", "--version"),
    "python": platform.python_version(),
}
json.dump(meta, open(path, "w"), indent=1)
PY

say "running the benchmarks"
python3 "$here/bench.py" --ward "$ward" --writer "$tmp/writer" --meta "$tmp/meta.json" \
    --load "$load" --store-bench "$store_bench" \
    --out "$out" --json "$tmp/results.json" "$@" &
pyd=$!
wait "$pyd"
pyd=""
say "done (report: docs/BENCHMARKS.md unless --out was given)"
