//! Start, stop and restart through the CLI, and the status table.

use crate::support::{alive, TestEnv};

const TWO_SLEEPERS: &str = r#"
[[program]]
name = "alpha"
command = "exec sleep 1000"
min_uptime = "100ms"

[[program]]
name = "beta"
command = "exec sleep 1000"
min_uptime = "100ms"
"#;

#[test]
fn restart_changes_pid_stop_kills_and_start_brings_back() {
    let env = TestEnv::with_config(TWO_SLEEPERS);
    env.up();
    let first = env.running_pid("alpha");

    let out = env.ward_ok(&["restart", "alpha"]);
    env.check(
        out.stdout.contains("alpha") && out.stdout.contains("running"),
        format!("restart output\n{out}"),
    );
    let second = env.running_pid("alpha");
    env.check(second != first, format!("restart kept pid {first}"));
    env.check(
        !alive(first),
        format!("old pid {first} still alive after restart"),
    );

    env.ward_ok(&["stop", "alpha"]);
    // `stop` returns once the effect was taken: no polling needed here.
    let p = env.prog("alpha");
    env.check(
        p["state"] == "stopped" && p["pid"].is_null(),
        format!("after stop: {p}"),
    );
    env.check(!alive(second), format!("pid {second} alive after stop"));
    env.check(
        env.state("beta") == "running",
        "stopping alpha touched beta",
    );

    env.ward_ok(&["start", "alpha"]);
    let p = env.prog("alpha");
    env.check(
        p["state"] == "running",
        format!("start returned before running: {p}"),
    );
    let third = p["pid"].as_i64().unwrap() as i32;
    env.check(third != second && alive(third), format!("after start: {p}"));
}

#[test]
fn status_table_has_header_and_summary() {
    let env = TestEnv::with_config(TWO_SLEEPERS);
    env.up();
    env.running_pid("alpha");
    env.running_pid("beta");
    let out = env.ward_ok(&["status"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    env.check(
        header.starts_with(&["NAME", "STATE", "HEALTH", "PID", "UPTIME", "RESTARTS"]),
        format!("header\n{out}"),
    );
    env.check(
        lines
            .iter()
            .any(|l| l.starts_with("alpha") && l.contains("running")),
        format!("alpha row\n{out}"),
    );
    env.check(
        lines.last() == Some(&"2/2 running"),
        format!("summary\n{out}"),
    );

    env.ward_ok(&["stop", "beta"]);
    let out = env.ward_ok(&["ps"]);
    env.check(
        out.stdout.trim_end().ends_with("1/2 running, 1 stopped"),
        format!("summary after stop\n{out}"),
    );
}

#[test]
fn unknown_name_fails_and_lists_known_programs() {
    let env = TestEnv::with_config(TWO_SLEEPERS);
    env.up();
    for verb in ["start", "stop", "restart"] {
        let out = env.ward(&[verb, "gamma"]);
        env.check(out.code() == Some(1), format!("exit code\n{out}"));
        env.check(
            out.stderr.contains("unknown program `gamma`"),
            format!("message\n{out}"),
        );
        env.check(
            out.stderr.contains("alpha, beta"),
            format!("known programs listed\n{out}"),
        );
    }
    let out = env.ward(&["status", "gamma"]);
    env.check(
        out.code() == Some(1) && out.stderr.contains("alpha, beta"),
        format!("status of unknown\n{out}"),
    );
}

#[test]
fn status_without_daemon_fails_and_says_how_to_start() {
    let env = TestEnv::with_config(TWO_SLEEPERS);
    let out = env.ward(&["status"]);
    env.check(out.code() == Some(1), format!("exit code\n{out}"));
    env.check(
        out.stderr.contains("ward is not running"),
        format!("message\n{out}"),
    );
    env.check(out.stderr.contains("ward up"), format!("hint\n{out}"));
}

#[test]
fn start_brings_up_dependencies_first() {
    let env = TestEnv::with_config(
        r#"
[defaults]
autostart = false
min_uptime = "100ms"

[[program]]
name = "web"
command = "exec sleep 1000"
depends_on = ["db"]

[[program]]
name = "db"
command = "exec sleep 1000"
"#,
    );
    env.up();
    let s = env.status_json();
    env.check(
        s["programs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "stopped"),
        format!("autostart = false: {s}"),
    );
    env.ward_ok(&["start", "web"]);
    let db = env.prog("db");
    let web = env.prog("web");
    env.check(
        db["state"] == "running" && web["state"] == "running",
        format!("after `start web`: {db} {web}"),
    );
    env.check(
        web["started_at_ms"].as_u64() >= db["started_at_ms"].as_u64(),
        format!("web started before db: {db} {web}"),
    );

    env.ward_ok(&["stop", "all"]);
    let out = env.ward_ok(&["status"]);
    env.check(
        out.stdout.trim_end().ends_with("0/2 running, 2 stopped"),
        format!("after `stop all`\n{out}"),
    );
    env.ward_ok(&["start", "all"]);
    let out = env.ward_ok(&["status"]);
    env.check(
        out.stdout.trim_end().ends_with("2/2 running"),
        format!("after `start all`\n{out}"),
    );
}

#[test]
fn start_of_a_command_that_cannot_run_fails_with_the_reason() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "ghost"
command = ["/nonexistent/ghost"]
autostart = false
restart = "never"
"#,
    );
    env.up();
    let out = env.ward(&["start", "ghost"]);
    env.check(out.code() == Some(1), format!("exit code\n{out}"));
    env.check(
        out.stderr.contains("ghost  error:")
            && out.stderr.contains("cannot execute `/nonexistent/ghost`"),
        format!("message\n{out}"),
    );
    env.check(env.state("ghost") == "exited", "state after a failed spawn");
}

#[test]
fn status_json_has_the_documented_schema() {
    let env = TestEnv::with_config(TWO_SLEEPERS);
    env.up();
    env.running_pid("alpha");
    let s = env.status_json();
    for key in [
        "host",
        "version",
        "pid",
        "config",
        "started_at_ms",
        "programs",
    ] {
        env.check(
            s.get(key).is_some(),
            format!("top-level `{key}` missing: {s}"),
        );
    }
    env.check(
        s["pid"] == env.daemon_pid(),
        format!("pid is not the daemon's: {s}"),
    );
    let p = &s["programs"][0];
    let keys = [
        "name",
        "program",
        "instance",
        "state",
        "pid",
        "started_at_ms",
        "since_ms",
        "restarts",
        "streak",
        "last_exit",
        "next_start_ms",
        "message",
        "history",
        "uptime_ms",
        "cpu_percent",
        "rss_bytes",
        "log",
    ];
    for key in keys {
        env.check(
            p.get(key).is_some(),
            format!("program `{key}` missing: {p}"),
        );
    }
    for key in ["bytes_written", "bytes_dropped", "last_error"] {
        env.check(
            p["log"].get(key).is_some(),
            format!("log `{key}` missing: {p}"),
        );
    }
    env.check(
        p["name"] == "alpha" && p["program"] == "alpha" && p["instance"] == 0,
        format!("identity: {p}"),
    );
    env.check(
        p["rss_bytes"].as_u64() > Some(0) && p["uptime_ms"].is_u64(),
        format!("process facts: {p}"),
    );

    env.ward_ok(&["restart", "alpha"]);
    let p = env.prog("alpha");
    env.check(
        p["last_exit"]["exit"]["signal"] == 15,
        format!("last_exit after a restart: {p}"),
    );
    env.check(
        p["last_exit"]["at_ms"].is_u64() && p["last_exit"]["ran_for_ms"].is_u64(),
        format!("last_exit fields: {p}"),
    );
    let h = p["history"].as_array().unwrap();
    env.check(
        h.iter()
            .any(|t| t["from"] == "stopping" && t["to"] == "stopped"),
        format!("history: {p}"),
    );
}
