//! The heartbeat registry end to end: sd_notify (`systemd-notify`, `ward
//! beat`), HTTP (with tokens), Node IPC, `ward run`, readiness and hang
//! detection, and every kind of bad input.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ward_bin, TestEnv, DEADLINE};

/// A loopback port nobody listens on (right now).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// An env whose `[supervisor]` has `http` on a free port.
pub(crate) fn with_http(programs: &str) -> (TestEnv, u16) {
    let env = TestEnv::new();
    let port = free_port();
    env.write_config(&format!(
        "[supervisor]\nstate_dir = \"{}\"\nhttp = \"127.0.0.1:{port}\"\n\n{programs}",
        env.state_dir.display()
    ));
    (env, port)
}

/// One HTTP/1.1 request; the status code and the body parsed as JSON
/// (`Value::Null` when it is not JSON).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the HTTP endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a big body.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Wait until `file` exists and is not empty; its trimmed contents.
pub(crate) fn read_when_written(env: &TestEnv, file: &Path) -> String {
    let mut text = String::new();
    env.wait_until(&format!("{} is written", file.display()), DEADLINE, || {
        text = fs::read_to_string(file).unwrap_or_default();
        text.ends_with('\n')
    });
    text.trim().to_string()
}

fn hb(env: &TestEnv, name: &str) -> Value {
    env.prog(name)["heartbeat"].clone()
}

#[test]
fn systemd_notify_ready_returns_at_once_and_watchdog_beats_keep_it_healthy() {
    let env = TestEnv::new();
    let root = env.root.display().to_string();
    let cmd = |tag: &str, flags: &str| {
        format!(
            "date +%s%N > {root}/{tag}.before; systemd-notify --ready {flags}; date +%s%N > {root}/{tag}.after; \
             while true; do systemd-notify WATCHDOG=1; sleep 0.2; done"
        )
    };
    env.config(&format!(
        r#"
[[program]]
name = "blocking"
command = "{}"
ready = "notify"
[program.heartbeat]
interval = "1s"

[[program]]
name = "noblock"
command = "{}"
ready = "notify"
[program.heartbeat]
interval = "1s"
"#,
        cmd("blocking", ""),
        cmd("noblock", "--no-block")
    ));
    env.up();
    for name in ["blocking", "noblock"] {
        env.running_pid(name);
        env.wait_until(&format!("{name} is healthy"), DEADLINE, || {
            env.prog(name)["health"] == "healthy"
        });
        let before: u64 = read_when_written(&env, &env.root.join(format!("{name}.before")))
            .parse()
            .unwrap();
        let after: u64 = read_when_written(&env, &env.root.join(format!("{name}.after")))
            .parse()
            .unwrap();
        let took = Duration::from_nanos(after - before);
        env.check(
            took < Duration::from_secs(1),
            format!("`systemd-notify --ready` ({name}) took {took:?}"),
        );
    }
}

#[test]
fn a_silent_child_turns_stale_then_hung_and_is_restarted_with_the_watchdog_signal() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "quiet"
command = "systemd-notify --ready; systemd-notify WATCHDOG=1; exec sleep 1000"
ready = "notify"
[program.heartbeat]
interval = "200ms"
stale_after = "600ms"
hung_after = "2s"
"#,
    );
    env.up();
    let pid = env.running_pid("quiet");
    env.wait_until("quiet is stale", DEADLINE, || {
        env.prog("quiet")["health"] == "stale"
    });
    let stale_at = Instant::now();
    // Hung at 2s of silence; stale at 0.6s: within hung_after + 1s of stale.
    env.wait_until("quiet is restarted", Duration::from_secs(3), || {
        let p = env.prog("quiet");
        p["pid"].as_i64().is_some_and(|p| p as i32 != pid) || p["last_exit"].is_object()
    });
    env.check(
        stale_at.elapsed() < Duration::from_secs(3),
        "restart within hung_after + 1s",
    );
    let p = env.prog("quiet");
    env.check(
        p["last_exit"]["exit"]["signal"] == 6,
        format!("killed with SIGABRT: {p}"),
    );
    let history = p["history"].to_string();
    env.check(history.contains("hung"), format!("history: {history}"));
    let new = env.running_pid("quiet");
    env.check(new != pid, "a new pid after the watchdog restart");
}

#[test]
fn http_beats_with_counters_show_in_status_and_ward_beat_uses_the_url() {
    let (env, port) = with_http(&format!(
        r#"
[[program]]
name = "curler"
command = """
curl -sf -X POST -H "authorization: Bearer $WARD_HEARTBEAT_TOKEN" -H 'content-type: application/json' \
  -d '{{"jobs_delta":2,"error_count":1,"status":"busy","current_task":"t1","metadata":{{"q":3}}}}' "$WARD_HEARTBEAT_URL" &&
curl -sf -X POST -H "authorization: Bearer $WARD_HEARTBEAT_TOKEN" -d '{{"jobs_delta":2}}' "$WARD_HEARTBEAT_URL/ready" &&
exec sleep 1000
"""
ready = "heartbeat"

[[program]]
name = "viaward"
command = "unset NOTIFY_SOCKET; {ward} beat --ready --jobs 7 --status via-http && {ward} beat --errors +2 && exec sleep 1000"
ready = "notify"

[[program]]
name = "looper"
command = "for i in 1 2 3; do {ward} beat --jobs +1 --task loop-$i; done; exec sleep 1000"
"#,
        ward = ward_bin()
    ));
    env.up();
    env.running_pid("curler");
    env.wait_until("curler's counters", DEADLINE, || {
        hb(&env, "curler")["jobs_processed"] == 4
    });
    let h = hb(&env, "curler");
    env.check(
        h["error_count"] == 1
            && h["status"] == "busy"
            && h["current_task"] == "t1"
            && h["metadata"]["q"] == 3,
        format!("curler's heartbeat: {h}"),
    );
    // `ward beat` inside the program, without NOTIFY_SOCKET: over HTTP; --ready makes it ready.
    env.running_pid("viaward");
    env.wait_until("viaward's beats", DEADLINE, || {
        let h = hb(&env, "viaward");
        h["jobs_processed"] == 7 && h["error_count"] == 2 && h["status"] == "via-http"
    });
    // `ward beat` from a shell loop: NOTIFY_SOCKET.
    env.wait_until("looper's beats", DEADLINE, || {
        let h = hb(&env, "looper");
        h["jobs_processed"] == 3 && h["current_task"] == "loop-3"
    });
    // The status endpoint: what `ward status --json` prints.
    let (code, status) = http(port, "GET", "/v1/status", None, b"");
    env.check(code == 200, format!("GET /v1/status: {code}"));
    let names: Vec<&str> = status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    env.check(
        names == ["curler", "viaward", "looper"],
        format!("{status}"),
    );
}

#[test]
fn ward_run_reports_a_failing_job_and_propagates_its_exit_code() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "nightly"
command = "true"
autostart = false
[program.heartbeat]
interval = "24h"
"#,
    );
    env.up();
    let out = env.ward(&[
        "run",
        "nightly",
        "--",
        "sh",
        "-c",
        // The two pipes are read apart: a pause keeps the order of the lines.
        "echo first line; echo to stderr >&2; sleep 0.2; echo the last words; exit 3",
    ]);
    env.check(
        out.code() == Some(3),
        format!("exit code propagated\n{out}"),
    );
    env.check(
        out.stdout.contains("first line") && out.stderr.contains("to stderr"),
        format!("output passed through\n{out}"),
    );
    let p = env.prog("nightly");
    let history = p["history"].as_array().unwrap();
    let last = history.last().unwrap()["detail"].as_str().unwrap_or("");
    env.check(
        last.starts_with("job exited 3 after ") && last.ends_with(": the last words"),
        format!("history: {history:?}"),
    );
    env.check(
        history.iter().any(|t| {
            t["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with("job started")
        }),
        "the start is in the history",
    );
    let h = &p["heartbeat"];
    env.check(
        h["error_count"] == 1 && h["jobs_processed"] == 1 && h["metadata"]["exit_code"] == 3,
        format!("heartbeat: {h}"),
    );
    let ok = env.ward(&["run", "nightly", "--", "true"]);
    env.check(ok.code() == Some(0), format!("{ok}"));
    let unknown = env.ward(&["run", "nope", "--", "touch", "ran"]);
    env.check(
        unknown.code() == Some(2) && !env.root.join("ran").exists(),
        format!("an unknown job is refused before running\n{unknown}"),
    );
}

#[test]
fn node_process_send_ready_makes_an_ipc_program_ready() {
    if !Path::new("/usr/bin/node").exists() {
        println!("skipped: /usr/bin/node is absent");
        return;
    }
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "node"
command = "/usr/bin/node -e \"setTimeout(() => process.send('ready'), 100); setInterval(() => {}, 1000)\""
ready = "ipc"
ready_timeout = "20s"
"#,
    );
    env.up();
    let p = env.wait_state("node", "running");
    let history = p["history"].to_string();
    env.check(
        history.contains("process.send('ready')"),
        format!("it waited for the IPC message: {history}"),
    );
}

#[test]
fn depends_on_waits_for_ready_1() {
    let env = TestEnv::new();
    let go = env.root.join("go");
    env.config(&format!(
        r#"
[[program]]
name = "db"
command = "while [ ! -e {} ]; do sleep 0.02; done; systemd-notify --ready; exec sleep 1000"
ready = "notify"

[[program]]
name = "app"
command = "exec sleep 1000"
depends_on = ["db"]
"#,
        go.display()
    ));
    env.up();
    env.wait_until("db starting and app waiting", DEADLINE, || {
        let s = env.status_json();
        let state = |n: &str| {
            s["programs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == n)
                .map(|p| p["state"].clone())
                .unwrap_or_default()
        };
        state("db") == "starting" && state("app") == "waiting"
    });
    fs::write(&go, "").unwrap();
    env.running_pid("app");
    let db = env.prog("db");
    let app = env.prog("app");
    env.check(
        app["started_at_ms"].as_u64() >= db["since_ms"].as_u64(),
        format!("app started after db was ready: db {db} app {app}"),
    );
}

#[test]
fn ready_timeout_fails_a_program_that_never_signals() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "mute"
command = "exec sleep 1000"
ready = "notify"
ready_timeout = "500ms"

[[program]]
name = "extended"
command = "systemd-notify EXTEND_TIMEOUT_USEC=18446744073709551615 && echo > extended; exec sleep 1000"
ready = "notify"
ready_timeout = "500ms"
"#,
    );
    env.up();
    read_when_written(&env, &env.root.join("extended"));
    env.wait_until("mute fails its start", DEADLINE, || {
        env.prog("mute")["history"]
            .to_string()
            .contains("not ready within ready_timeout (500ms)")
    });
    let p = env.prog("mute");
    env.check(
        p["state"] != "running",
        format!("never running: {}", p["state"]),
    );
    // EXTEND_TIMEOUT_USEC pushed its deadline (u64::MAX µs is capped, not an overflow).
    let e = env.prog("extended");
    env.check(
        e["state"] == "starting" && e["restarts"] == 0,
        format!("extended is still starting: {e}"),
    );
    env.ward_ok(&["stop", "extended"]);
}

#[test]
fn an_old_runs_token_is_refused_after_a_restart_and_changes_nothing() {
    let (env, port) = with_http(
        r#"
[[program]]
name = "tok"
command = "echo $WARD_HEARTBEAT_TOKEN > token.$WARD_RUN_ID; exec sleep 1000"
"#,
    );
    env.up();
    env.running_pid("tok");
    let old = read_when_written(&env, &env.root.join("token.1"));
    let (code, body) = http(
        port,
        "POST",
        "/v1/heartbeat/tok",
        Some(&old),
        br#"{"jobs_processed":5}"#,
    );
    env.check(code == 200, format!("the current token: {code} {body}"));
    env.ward_ok(&["restart", "tok"]);
    let new = read_when_written(&env, &env.root.join("token.2"));
    env.check(new != old, "a new token per run");
    let before = hb(&env, "tok");
    let (code, body) = http(
        port,
        "POST",
        "/v1/heartbeat/tok",
        Some(&old),
        br#"{"jobs_processed":99}"#,
    );
    env.check(
        code == 409 && body["error"].as_str().unwrap_or("").contains("earlier run"),
        format!("old run's token: {code} {body}"),
    );
    let (code, body) = http(port, "POST", "/ping/tok/fail", Some(&old), b"");
    env.check(
        code == 409,
        format!("old run's token on /ping: {code} {body}"),
    );
    let after = hb(&env, "tok");
    env.check(
        after["jobs_processed"] == before["jobs_processed"]
            && after["last_beat_ms"] == before["last_beat_ms"]
            && after["rejected"].as_u64() == before["rejected"].as_u64().map(|r| r + 2),
        format!("unchanged but counted: before {before} after {after}"),
    );
    let (code, _) = http(port, "POST", &format!("/ping/tok?token={new}"), None, b"");
    env.check(code == 200, format!("the new token as ?token=: {code}"));
}

#[test]
fn concurrent_http_beats_are_merged_without_losing_a_count_and_pings_are_not() {
    let (env, port) = with_http(
        r#"
[[program]]
name = "busy"
command = "echo $WARD_HEARTBEAT_TOKEN > token; exec sleep 1000"
"#,
    );
    env.up();
    env.running_pid("busy");
    let token = read_when_written(&env, &env.root.join("token"));
    // Beats that arrive together are merged before the instance takes them:
    // every delta must still count, and the last status must win.
    let (threads, per_thread) = (4, 50);
    let senders: Vec<_> = (0..threads)
        .map(|t| {
            let token = token.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let body =
                        format!(r#"{{"jobs_delta":1,"errors_delta":2,"current_task":"t{t}-{i}"}}"#);
                    let (code, resp) = http(
                        port,
                        "POST",
                        "/v1/heartbeat/busy",
                        Some(&token),
                        body.as_bytes(),
                    );
                    assert_eq!(code, 200, "{resp}");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("a sender thread");
    }
    let (code, resp) = http(
        port,
        "POST",
        "/v1/heartbeat/busy",
        Some(&token),
        br#"{"current_task":"last"}"#,
    );
    env.check(code == 200, format!("the last beat: {code} {resp}"));
    let jobs = threads * per_thread;
    env.wait_until("every delta counted", DEADLINE, || {
        let h = hb(&env, "busy");
        h["jobs_processed"] == jobs && h["error_count"] == 2 * jobs && h["current_task"] == "last"
    });
    // Pings (a job's run reports) go through the queue one by one, in order.
    let (code, _) = http(port, "POST", "/ping/busy/start", Some(&token), b"");
    env.check(code == 200, format!("/ping start: {code}"));
    let (code, _) = http(port, "POST", "/ping/busy", Some(&token), b"");
    env.check(code == 200, format!("/ping success: {code}"));
    env.wait_until("the ping's success", DEADLINE, || {
        let h = hb(&env, "busy");
        h["jobs_processed"] == jobs + 1 && h["status"] == "ok" && h["rejected"] == 0
    });
}

/// The notify socket path of the current run (the program writes it).
fn notify_socket(env: &TestEnv) -> PathBuf {
    PathBuf::from(read_when_written(env, &env.root.join("sock")))
}

/// Send `X_WARD_TASK=m` until status shows it: every datagram before it has
/// been handled. Sent again on each poll, since a full queue coalesces it away.
fn mark(env: &TestEnv, client: &UnixDatagram, sock: &Path, m: &str) {
    env.wait_until(&format!("marker {m}"), DEADLINE, || {
        let _ = client.send_to(format!("X_WARD_TASK={m}").as_bytes(), sock);
        hb(env, "w")["current_task"] == m
    });
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Send `data` to `path` as uid/gid 65534 from a forked child; true if the
/// kernel accepted it.
fn send_as_nobody(path: &Path, data: &[u8]) -> bool {
    // Everything is prepared before fork: the child only makes system calls.
    // SAFETY: plain libc calls on valid, fully initialised memory.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        for (i, b) in bytes.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        let pid = libc::fork();
        if pid == 0 {
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(65534) == 0
                && libc::setuid(65534) == 0;
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            let sent = libc::sendto(
                fd,
                data.as_ptr().cast(),
                data.len(),
                0,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            libc::_exit(if ok && sent == data.len() as isize {
                0
            } else {
                1
            });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

#[test]
fn bad_heartbeats_are_refused_with_a_reason_and_change_nothing() {
    let (env, port) = with_http(
        r#"
[[program]]
name = "w"
command = "echo $NOTIFY_SOCKET > sock; echo $WARD_HEARTBEAT_TOKEN > token; exec sleep 1000"

[[program]]
name = "multi"
command = "exec sleep 1000"
instances = 2
"#,
    );
    env.up();
    env.running_pid("w");
    let token = read_when_written(&env, &env.root.join("token"));
    let sock = notify_socket(&env);
    let client = UnixDatagram::unbound().unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A known state, and a marker to know when later datagrams were handled.
    let mark = |m: &str| mark(&env, &client, &sock, m);
    client
        .send_to(b"X_WARD_JOBS=10\nX_WARD_ERROR=none\nSTATUS=good", &sock)
        .unwrap();
    mark("m1");
    let before = hb(&env, "w");

    // HTTP: every refusal is JSON with a reason and a precise code.
    let big = vec![b' '; 70 * 1024];
    let t = Some(token.as_str());
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);
    let cases: Vec<Case> = vec![
        ("oversized body", "/v1/heartbeat/w", t, &big, 413),
        (
            "malformed JSON",
            "/v1/heartbeat/w",
            t,
            b"{\"jobs_delta\":",
            400,
        ),
        ("unknown key", "/v1/heartbeat/w", t, br#"{"jobs":1}"#, 400),
        (
            "negative counter",
            "/v1/heartbeat/w",
            t,
            br#"{"jobs_processed":-4}"#,
            400,
        ),
        ("not an object", "/v1/heartbeat/w", t, b"[1,2]", 400),
        ("missing token", "/v1/heartbeat/w", None, b"", 401),
        ("wrong token", "/v1/heartbeat/w", Some("0123abcd"), b"", 401),
        ("unknown program", "/v1/heartbeat/ghost", t, b"", 404),
        ("ambiguous program", "/v1/heartbeat/multi", t, b"", 400),
        ("bad ping", "/ping/w/1000", t, b"", 404),
        ("bad route", "/v1/heartbeat/w/sideways", t, b"", 404),
    ];
    let mut refused_here = 0;
    for (what, path, token, body, want) in cases {
        let (code, reply) = http(port, "POST", path, token, body);
        env.check(
            code == want && reply["error"].as_str().is_some_and(|e| !e.is_empty()),
            format!("{what}: want {want} with a JSON reason, got {code} {reply}"),
        );
        // Counted against the instance: refusals that carried a token for it.
        if (path.starts_with("/v1/heartbeat/w/") || path == "/v1/heartbeat/w")
            && token.is_some()
            && [400, 401].contains(&code)
            && !what.contains("route")
        {
            refused_here += 1;
        }
        if what == "unknown program" {
            env.check(
                !reply.to_string().contains("multi"),
                format!("a 404 lists no programs: {reply}"),
            );
        }
    }

    // Datagrams: oversized, malformed, negative counters, another uid.
    client.send_to(&vec![b'x'; 70 * 1024], &sock).unwrap();
    client.send_to(b"garbage without equals", &sock).unwrap();
    client.send_to(b"X_WARD_JOBS=-5", &sock).unwrap();
    client.send_to(b"X_WARD_META=[1]", &sock).unwrap();
    // The socket is 0600: the kernel refuses another uid. Open it up to reach ward's own check.
    env.check(
        !send_as_nobody(&sock, b"X_WARD_JOBS=999"),
        "the kernel refuses another uid on a 0600 socket",
    );
    for dir in [
        &env.root,
        &env.state_dir,
        &sock.parent().unwrap().to_path_buf(),
    ] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711)).unwrap();
    }
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    env.check(
        send_as_nobody(&sock, b"X_WARD_JOBS=999"),
        "sent as uid 65534 to the opened socket",
    );
    mark("m2");
    let after = hb(&env, "w");
    for key in [
        "jobs_processed",
        "error_count",
        "last_error",
        "status",
        "metadata",
        "circuit_breaker_open",
    ] {
        env.check(
            after[key] == before[key],
            format!("`{key}` unchanged: before {before} after {after}"),
        );
    }
    let rejected = after["rejected"].as_u64().unwrap() - before["rejected"].as_u64().unwrap();
    env.check(
        rejected == refused_here + 5,
        format!("{rejected} refusals counted, want {}", refused_here + 5),
    );
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    env.check(
        log.contains("dropped a heartbeat datagram"),
        "dropped datagrams are logged",
    );
}

#[test]
fn stray_descriptors_are_closed_and_a_flood_is_survived() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "w"
command = "echo $NOTIFY_SOCKET > sock; exec sleep 1000"
"#,
    );
    env.up();
    env.running_pid("w");
    let sock = notify_socket(&env);
    let ward = env.daemon_pid();
    let client = UnixDatagram::unbound().unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    mark(&env, &client, &sock, "warm");
    let fds_before = fd_count(ward);
    // 200 datagrams with 8 descriptors each: every one must be closed by ward.
    let null = fs::File::open("/dev/null").unwrap();
    let fds = [null.as_raw_fd(); 8];
    let addr = nix::sys::socket::UnixAddr::new(&sock).unwrap();
    for _ in 0..200 {
        nix::sys::socket::sendmsg(
            client.as_raw_fd(),
            &[std::io::IoSlice::new(b"WATCHDOG=1")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            Some(&addr),
        )
        .unwrap();
    }
    mark(&env, &client, &sock, "after-fds");
    let fds_after = fd_count(ward);
    env.check(
        fds_after <= fds_before + 2,
        format!("ward's descriptors: {fds_before} before, {fds_after} after 1600 passed"),
    );

    // A flood: 10,000 datagrams as fast as they go.
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..10_000 {
        if client.send_to(b"X_WARD_JOBS=+1", &sock).is_ok() {
            sent += 1;
        }
    }
    let took = start.elapsed();
    mark(&env, &client, &sock, "after-flood");
    let h = hb(&env, "w");
    let jobs = h["jobs_processed"].as_u64().unwrap();
    env.check(
        jobs > 0 && jobs <= sent,
        format!("{sent} sent in {took:?}, {jobs} counted (excess coalesced)"),
    );
    env.check(env.state("w") == "running", "still running");
    env.check(crate::support::alive(ward), "ward survived");
}

#[test]
fn an_http_address_in_use_is_one_logged_error_and_ward_keeps_supervising() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let env = TestEnv::new();
    env.write_config(&format!(
        "[supervisor]\nstate_dir = \"{}\"\nhttp = \"127.0.0.1:{port}\"\n\n[[program]]\nname = \"p\"\ncommand = \"exec sleep 1000\"\n",
        env.state_dir.display()
    ));
    env.up();
    env.running_pid("p");
    let log = env.state_dir.join("ward.log");
    env.wait_until("the bind error is logged", DEADLINE, || {
        fs::read_to_string(&log).is_ok_and(|l| l.contains("cannot listen for heartbeats over HTTP"))
    });
    let text = fs::read_to_string(&log).unwrap();
    env.check(
        text.matches("cannot listen for heartbeats").count() == 1,
        "logged once",
    );
    env.ward_ok(&["restart", "p"]);
    drop(taken);
}
