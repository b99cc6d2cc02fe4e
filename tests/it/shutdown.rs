//! How the daemon ends: SIGTERM, SIGKILL (and the next start), dependency order.

use std::fs;

use crate::support::{alive, group_members, TestEnv, DEADLINE};

#[test]
fn sigterm_stops_every_program_and_exits_zero() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "one"
command = "exec sleep 1000"
min_uptime = "100ms"

[[program]]
name = "two"
command = "sleep 1000 & wait"
min_uptime = "100ms"
instances = 2
"#,
    );
    env.up();
    let pids: Vec<i32> = ["one", "two:0", "two:1"]
        .iter()
        .map(|n| env.running_pid(n))
        .collect();
    env.signal_daemon(libc::SIGTERM);
    let status = env.wait_daemon_exit(DEADLINE);
    env.check(
        status.code() == Some(0),
        format!("ward exited with {status}"),
    );
    for pid in pids {
        env.check(
            !alive(pid) && group_members(pid).is_empty(),
            format!("pid {pid} (or its group) survived SIGTERM to ward"),
        );
    }
    env.check(!env.socket().exists(), "the socket file is left behind");
}

#[test]
fn dependents_start_after_and_stop_before_their_dependencies() {
    // `web` comes first in the file: only depends_on makes it wait.
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "web"
command = "exec sleep 1000"
min_uptime = "100ms"
depends_on = ["db"]

[[program]]
name = "db"
command = "exec sleep 1000"
min_uptime = "300ms"
"#,
    );
    env.up();
    env.running_pid("web");
    let db = env.prog("db");
    let web = env.prog("web");
    let db_running_at = db["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["to"] == "running")
        .and_then(|t| t["at_ms"].as_u64())
        .unwrap_or_else(|| env.fail(&format!("db never became running: {db}")));
    let web_started = web["started_at_ms"].as_u64().unwrap();
    env.check(
        web_started >= db_running_at,
        format!("web started at {web_started}, before db was running at {db_running_at}"),
    );

    env.signal_daemon(libc::SIGTERM);
    let status = env.wait_daemon_exit(DEADLINE);
    env.check(
        status.code() == Some(0),
        format!("ward exited with {status}"),
    );
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap();
    let find = |program: &str, to: &str| {
        log.lines()
            .position(|l| {
                l.contains(&format!("program{{program={program}}}"))
                    && l.contains(&format!("to=\"{to}\""))
                    && l.contains("from=\"stopping\"") == (to == "stopped")
            })
            .unwrap_or_else(|| env.fail(&format!("no `{program}` -> {to} line in ward.log")))
    };
    let web_stopped = find("web", "stopped");
    let db_stopping = find("db", "stopping");
    env.check(
        web_stopped < db_stopping,
        format!(
            "db began stopping (line {db_stopping}) before web had stopped (line {web_stopped})"
        ),
    );
}

#[test]
fn after_a_sigkill_the_next_ward_kills_the_leftovers_and_starts_fresh() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "parent"
command = "sleep 1000 & exec sleep 1000"
min_uptime = "100ms"
"#,
    );
    env.up();
    let main = env.running_pid("parent");
    env.wait_until("the grandchild runs in the group", DEADLINE, || {
        group_members(main).len() == 2
    });
    let old: Vec<i32> = group_members(main);

    env.signal_daemon(libc::SIGKILL);
    env.wait_daemon_exit(DEADLINE);
    // The grandchild has no death signal: only the next ward can clean it up.
    let orphans: Vec<i32> = old.iter().copied().filter(|&p| alive(p)).collect();
    env.check(
        !orphans.is_empty(),
        format!("precondition: the grandchild should outlive ward (group was {old:?})"),
    );

    env.up();
    env.wait_until("every process of the old run is gone", DEADLINE, || {
        old.iter().all(|&p| !alive(p))
    });
    let p = env.prog("parent");
    let new_pid = p["pid"].as_i64().unwrap_or(0) as i32;
    env.check(
        !old.contains(&new_pid),
        format!("new run reuses an old pid: {p}"),
    );
    env.check(
        p["restarts"] == 0 && p["last_exit"].is_null(),
        format!("new run is not fresh: {p}"),
    );
    env.running_pid("parent");
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap();
    env.check(
        log.contains("left by a previous ward"),
        "ward.log does not report the killed leftovers",
    );
}

#[test]
fn a_second_sigterm_kills_programs_that_are_slow_to_stop() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "stubborn"
command = "trap '' TERM; exec sleep 1000"
min_uptime = "100ms"
stop_timeout = "60s"
"#,
    );
    env.up();
    let pid = env.running_pid("stubborn");
    env.signal_daemon(libc::SIGTERM);
    env.wait_until("stubborn is stopping", DEADLINE, || {
        fs::read_to_string(env.state_dir.join("ward.log"))
            .is_ok_and(|l| l.contains("to=\"stopping\""))
    });
    env.check(
        alive(pid),
        "the program stopped on SIGTERM although it ignores it",
    );
    env.signal_daemon(libc::SIGTERM);
    // Far less than the 60s stop_timeout.
    let status = env.wait_daemon_exit(DEADLINE);
    env.check(
        status.code() == Some(0),
        format!("ward exited with {status}"),
    );
    env.wait_until("the stubborn program is gone", DEADLINE, || !alive(pid));
}

#[test]
fn down_stops_every_program_and_the_foreground_daemon_exits_zero() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "one"
command = "exec sleep 1000"
min_uptime = "100ms"
"#,
    );
    env.up();
    let pid = env.running_pid("one");
    let out = env.ward_ok(&["down"]);
    env.check(
        out.stdout.contains("one") && out.stdout.contains("ward stopped"),
        format!("down output\n{out}"),
    );
    env.check(!alive(pid), format!("program {pid} survived `ward down`"));
    let status = env.wait_daemon_exit(DEADLINE);
    env.check(
        status.code() == Some(0),
        format!("ward exited with {status}"),
    );
}
