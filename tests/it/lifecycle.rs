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
        header.starts_with(&["NAME", "STATE", "PID", "UPTIME", "RESTARTS"]),
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
