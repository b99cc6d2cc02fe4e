#!/usr/bin/env bash
# Heartbeat benchmark: HTTP beats/s (keep-alive, loopback), sd_notify
# datagrams/s, ward's RSS under the flood, and the time from a beat to its
# visibility in `ward status --json`. Figures go to docs/BENCHMARKS.md by hand.
#
#   bench/heartbeat.sh [SECONDS]      (default 5 per HTTP run)
#
# Uses wrk when installed (installs it with apt-get when run as root), else
# the Rust load generator in examples/heartbeat_load.rs. Loopback only;
# every load loop is bounded in time or count.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
PORT=${WARD_BENCH_PORT:-19751}

cargo build --release --quiet --bin ward --example heartbeat_load
WARD=$PWD/target/release/ward
LOAD=$PWD/target/release/examples/heartbeat_load

if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq wrk >/dev/null 2>&1 || true
fi

DIR=$(mktemp -d /tmp/ward-bench.XXXXXX)
cleanup() {
    "$WARD" -c "$DIR/supervisor.toml" down >/dev/null 2>&1 || true
    [ -n "${RSS_PID:-}" ] && kill "$RSS_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

cat > "$DIR/supervisor.toml" <<TOML
[supervisor]
state_dir = "$DIR/state"
http = "127.0.0.1:$PORT"

[[program]]
name = "sink"
command = "echo \$WARD_HEARTBEAT_TOKEN > $DIR/token; echo \$NOTIFY_SOCKET > $DIR/sock; exec sleep 100000"
TOML

"$WARD" -c "$DIR/supervisor.toml" up --detach >/dev/null
for _ in $(seq 200); do [ -s "$DIR/sock" ] && [ -s "$DIR/token" ] && break; sleep 0.05; done
TOKEN=$(cat "$DIR/token")
SOCK=$(cat "$DIR/sock")
WARD_PID=$("$WARD" -c "$DIR/supervisor.toml" status --json | sed -n 's/^  "pid": \([0-9]*\),$/\1/p' | head -1)
URL_PATH=/v1/heartbeat/sink

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$WARD_PID/status"; }
echo "cpus=$(nproc) ward_pid=$WARD_PID rss_idle_kib=$(rss_kib)"

# Peak RSS while the floods run.
( peak=0; for _ in $(seq 2000); do r=$(rss_kib 2>/dev/null || echo 0); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$DIR/rss_peak"; sleep 0.05; done ) &
RSS_PID=$!

if command -v wrk >/dev/null; then
    cat > "$DIR/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"jobs_delta":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
    echo "--- wrk: 2 threads, 32 keep-alive connections, ${SECS}s"
    wrk -t2 -c32 -d"${SECS}s" -s "$DIR/post.lua" "http://127.0.0.1:$PORT$URL_PATH" | grep -E "Requests/sec|Latency|Non-2xx|requests in"
fi
echo "--- heartbeat_load http: 8 keep-alive connections, ${SECS}s"
"$LOAD" http "127.0.0.1:$PORT" "$URL_PATH" "$TOKEN" 8 "$SECS"

echo "--- heartbeat_load notify: 200000 datagrams"
"$LOAD" notify "$SOCK" 200000

sleep 0.3
echo "rss_peak_kib=$(cat "$DIR/rss_peak") rss_after_kib=$(rss_kib)"
echo "--- beat -> visible in status"
"$LOAD" latency "127.0.0.1:$PORT" "$URL_PATH" "$TOKEN" "$DIR/state/ward.sock" sink 20
"$WARD" -c "$DIR/supervisor.toml" status sink
