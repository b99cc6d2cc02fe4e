//! docs/HEARTBEATS.md, "Jobs that must run on time": `period`/`schedule`
//! with `grace`, fed by `ward run` and the `/ping` routes; `late` in status
//! and in `worker_events`, and back on the next run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::heartbeats::{http, read_when_written, with_http};
use crate::support::{TestEnv, DEADLINE};

const PERIOD_MS: u64 = 300;
const GRACE_MS: u64 = 300;
/// How long after being due a `late` may take to show.
const SLACK: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn health(env: &TestEnv, name: &str) -> String {
    env.prog(name)["health"].as_str().unwrap_or("?").to_string()
}

/// Run `ward run nightly -- CMD` and, unless the machine was so slow that
/// period + grace passed meanwhile, check the health it leaves; the status.
fn run_job(env: &TestEnv, cmd: &str, want: &str) -> Value {
    let out = env.ward(&["run", "nightly", "--", cmd]);
    let ran = Instant::now();
    env.check(out.code().is_some(), format!("{out}"));
    let p = env.prog("nightly");
    if ran.elapsed() < Duration::from_millis(PERIOD_MS + GRACE_MS) {
        env.check(
            p["health"] == want && p["state"] == "stopped",
            format!("right after `ward run nightly -- {cmd}`, {want}: {p}"),
        );
    }
    p
}

/// Wait until `name`'s health is `want`, at most `deadline`; its status then.
fn wait_health(env: &TestEnv, name: &str, want: &str, deadline: Duration) -> Value {
    let mut last = Value::Null;
    env.wait_until(&format!("`{name}` is {want}"), deadline, || {
        last = env.prog(name);
        last["health"] == want
    });
    last
}

/// The `worker_events` of `name`, oldest first.
fn events(env: &TestEnv, name: &str) -> Vec<Value> {
    let out = env.ward_ok(&["events", name, "--json", "-n", "1000"]);
    let mut evs: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| env.fail(&format!("{l:?}: {e}"))))
        .collect();
    evs.sort_by_key(|e| e["at_ms"].as_i64());
    evs
}

/// Wait until `name` has `n` events of kind `kind`; the last one.
fn wait_event(env: &TestEnv, name: &str, kind: &str, n: usize) -> Value {
    let mut found = Vec::new();
    env.wait_until(
        &format!("{n} `{kind}` event(s) of `{name}`"),
        DEADLINE,
        || {
            found = events(env, name)
                .into_iter()
                .filter(|e| e["event"] == kind)
                .collect();
            found.len() >= n
        },
    );
    found.pop().unwrap_or(Value::Null)
}

fn job(period_ms: u64, grace_ms: u64) -> String {
    format!(
        r#"
[[program]]
name = "nightly"
command = "true"          # cron runs it, through `ward run`
autostart = false
[program.heartbeat]
period = "{period_ms}ms"
grace = "{grace_ms}ms"
"#
    )
}

#[test]
fn a_ward_run_job_goes_late_without_a_run_and_comes_back_with_the_next() {
    let env = TestEnv::with_config(&job(PERIOD_MS, GRACE_MS));
    let up = Instant::now();
    env.up();
    let p = env.prog("nightly");
    if up.elapsed() < Duration::from_millis(PERIOD_MS + GRACE_MS) {
        env.check(
            p["health"] == "ready" && p["job"]["late_at_ms"].is_u64(),
            format!("before its first run: {p}"),
        );
    }
    let before = now_ms();
    let p = run_job(&env, "true", "healthy");
    env.check(
        p["job"]["last_run_ok"] == true,
        format!("its clock: {}", p["job"]),
    );
    // No further run: late within period + grace (+ slack).
    let p = wait_health(
        &env,
        "nightly",
        "late",
        Duration::from_millis(PERIOD_MS + GRACE_MS) + SLACK,
    );
    let since = p["job"]["late_since_ms"].as_u64().unwrap_or(0);
    env.check(
        since >= before + PERIOD_MS + GRACE_MS,
        format!(
            "late no earlier than period + grace after the run: {}",
            p["job"]
        ),
    );
    env.check(
        p["state"] == "stopped" && p["job"]["late_at_ms"].is_null(),
        format!("{p}"),
    );
    let text = env.ward_ok(&["status", "nightly"]).stdout;
    env.check(
        text.contains(" late ") && text.contains("late for "),
        format!("ward status shows it:\n{text}"),
    );
    let late = wait_event(&env, "nightly", "late", 1);
    let detail = late["detail"].as_str().unwrap_or("");
    env.check(
        detail.starts_with("health: healthy -> late; no finished run for ")
            && detail.ends_with("(period 300ms + grace 300ms)"),
        format!("the late event: {late}"),
    );
    // The next run ends it, and says so.
    run_job(&env, "true", "healthy");
    let back = wait_event(&env, "nightly", "on_time", 1);
    env.check(
        back["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("health: late -> healthy; on time again: a run succeeded"),
        format!("the on-time event: {back}"),
    );
    // And without runs it is late again: a second `late` event.
    wait_health(
        &env,
        "nightly",
        "late",
        Duration::from_millis(PERIOD_MS + GRACE_MS) + SLACK,
    );
    wait_event(&env, "nightly", "late", 2);
    // A failed run is on time but failed.
    let p = run_job(&env, "false", "crashed");
    env.check(
        p["job"]["last_run_ok"] == false,
        format!("a failed run: {}", p["job"]),
    );
}

/// docs/SCHEMA.md: the event is chosen by what happened, never by the words
/// in `detail`; a run whose output says `hung`, `stale` or `late` is a
/// `health` event.
#[test]
fn a_jobs_output_never_decides_its_event() {
    // Never due during the test: only the runs make events.
    let env = TestEnv::with_config(&job(3_600_000, 60_000));
    env.up();
    for script in [
        "echo 'queue stale'; echo 'the worker hung, orders late'",
        "echo 'health: ready -> hung; stale'; exit 3",
    ] {
        let out = env.ward(&["run", "nightly", "--", "sh", "-c", script]);
        env.check(out.code().is_some(), format!("{out}"));
    }
    let last = wait_event(&env, "nightly", "health", 4);
    let evs = events(&env, "nightly");
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    env.check(
        kinds == ["health"; 4],
        format!("two runs, a start and a finish each: {kinds:?}\n{evs:?}"),
    );
    let detail = last["detail"].as_str().unwrap_or("");
    env.check(
        detail.starts_with("job exited 3 after ")
            && detail.ends_with(": health: ready -> hung; stale"),
        format!("the failed run's event quotes its output: {last}"),
    );
    let finished = &evs[1];
    env.check(
        finished["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with(": the worker hung, orders late")),
        format!("the first run's finish: {finished}"),
    );
}

#[test]
fn pings_start_a_run_that_must_finish_within_grace() {
    let (env, port) = with_http(&format!(
        r#"
[[program]]
name = "worker"
command = "echo $WARD_HEARTBEAT_TOKEN > token; exec sleep 1000"
ready = "started"
[program.heartbeat]
period = "1h"
grace = "{GRACE_MS}ms"
"#
    ));
    env.up();
    env.running_pid("worker");
    let token = read_when_written(&env, &env.root.join("token"));
    let ping = |path: &str| {
        let (code, body) = http(port, "GET", path, Some(&token), b"");
        env.check(code == 200, format!("GET {path}: {code} {body}"));
    };
    ping("/ping/worker");
    wait_health(&env, "worker", "healthy", DEADLINE);
    let started = Instant::now();
    ping("/ping/worker/start");
    let p = wait_health(
        &env,
        "worker",
        "late",
        Duration::from_millis(GRACE_MS) + SLACK,
    );
    env.check(
        started.elapsed() >= Duration::from_millis(GRACE_MS),
        "late no earlier than grace after the start",
    );
    env.check(
        p["state"] == "running" && p["job"]["run_started_ms"].is_u64(),
        format!("{p}"),
    );
    let late = wait_event(&env, "worker", "late", 1);
    env.check(
        late["detail"]
            .as_str()
            .unwrap_or("")
            .contains("has not finished within grace (300ms)"),
        format!("the late event: {late}"),
    );
    // `/v1/status` says the same.
    let (_, status) = http(port, "GET", "/v1/status", None, b"");
    env.check(
        status["programs"][0]["health"] == "late",
        format!("GET /v1/status: {status}"),
    );
    // The finish ends it; a failure is a failure, not lateness.
    ping("/ping/worker");
    env.check(
        health(&env, "worker") == "healthy",
        "healthy after the finish",
    );
    wait_event(&env, "worker", "on_time", 1);
    ping("/ping/worker/start");
    ping("/ping/worker/fail");
    env.check(
        health(&env, "worker") == "crashed",
        "crashed after /ping/worker/fail",
    );
    // A log line is no run: still crashed.
    ping("/ping/worker/log");
    env.check(health(&env, "worker") == "crashed", "a log ping is no run");
}

/// The next `hh:mm` UTC after `after_ms`, in Unix ms.
fn next_utc(after_ms: u64, hour: u64, minute: u64) -> u64 {
    let day = 86_400_000;
    let at = hour * 3_600_000 + minute * 60_000;
    let today = after_ms - after_ms % day + at;
    if today > after_ms {
        today
    } else {
        today + day
    }
}

#[test]
fn a_schedule_is_due_at_its_next_time_plus_grace() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "backup"
command = "true"
autostart = false
[program.heartbeat]
schedule = "30 3 * * *"
tz = "UTC"
grace = "10m"

[[program]]
name = "minutely"
command = "true"
autostart = false
[program.heartbeat]
schedule = "* * * * *"
grace = "2s"
"#,
    );
    let before = now_ms();
    env.up();
    let after = now_ms();
    let p = env.prog("backup");
    let late_at = p["job"]["late_at_ms"].as_u64().unwrap_or(0);
    // Due at the next 03:30 UTC after ward started, late ten minutes later.
    let due = [next_utc(before, 3, 30), next_utc(after, 3, 30)];
    env.check(
        due.iter().any(|d| late_at == d + 600_000) && p["health"] == "ready",
        format!("backup: {p}"),
    );
    let text = env.ward_ok(&["status", "backup"]).stdout;
    env.check(text.contains("late in "), &text);
    // Every minute: due at the next minute boundary (in any zone), late 2 s after.
    let p = env.prog("minutely");
    let late_at = p["job"]["late_at_ms"].as_u64().unwrap_or(0);
    env.check(
        late_at % 60_000 == 2_000 && late_at > before && late_at <= after + 62_000,
        format!("minutely: {p}"),
    );
    // A run at any time moves the due time past it.
    env.ward_ok(&["run", "minutely", "--", "true"]);
    let p = env.prog("minutely");
    let moved = p["job"]["late_at_ms"].as_u64().unwrap_or(0);
    env.check(
        moved % 60_000 == 2_000 && moved >= late_at && p["health"] == "healthy",
        format!("after a run: {p}"),
    );
}

/// A second job whose settings a reload leaves alone.
const OTHER: &str = r#"
[[program]]
name = "other"
command = "true"
autostart = false
[program.heartbeat]
period = "300ms"
grace = "300ms"
"#;

#[test]
fn a_reload_that_changes_the_period_rearms_the_clock() {
    let env = TestEnv::with_config(&format!("{}{}", job(PERIOD_MS, GRACE_MS), OTHER));
    env.up();
    wait_health(
        &env,
        "nightly",
        "late",
        Duration::from_millis(PERIOD_MS + GRACE_MS) + SLACK,
    );
    wait_health(&env, "other", "late", DEADLINE);
    // nightly now runs hourly: a fresh clock from the reload; other is untouched.
    env.config(&format!("{}{}", job(3_600_000, GRACE_MS), OTHER));
    let before = now_ms();
    let out = env.ward_ok(&["reload"]);
    env.check(
        out.stdout.contains("changed:   nightly"),
        format!("reload: {out}"),
    );
    let p = env.prog("nightly");
    let late_at = p["job"]["late_at_ms"].as_u64().unwrap_or(0);
    env.check(
        p["health"] == "ready" && late_at >= before + 3_600_000 + GRACE_MS,
        format!("re-armed: {p}"),
    );
    env.check(
        health(&env, "other") == "late",
        "an unchanged job stays late",
    );
}
