//! Stopping a program stops its whole process group.

use std::fs;
use std::time::Instant;

use crate::support::{alive, group_members, TestEnv, DEADLINE};

#[test]
fn stop_leaves_no_process_of_the_group() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "family"
command = "sleep 1000 & sleep 1000 & wait"
min_uptime = "100ms"
"#,
    );
    env.up();
    let pgid = env.running_pid("family");
    env.wait_until(
        "the shell and both sleeps are in the group",
        DEADLINE,
        || group_members(pgid).len() == 3,
    );
    let members = group_members(pgid);
    env.ward_ok(&["stop", "family"]);
    // `stop` returns once the effect was taken: the group must be empty now.
    let left = group_members(pgid);
    env.check(
        left.is_empty(),
        format!("left in group {pgid} after stop: {left:?} (was {members:?})"),
    );
    for pid in members {
        env.check(!alive(pid), format!("pid {pid} alive after stop"));
    }
}

#[test]
fn a_program_ignoring_sigterm_is_killed_after_stop_timeout() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "stubborn"
command = "trap '' TERM; exec sleep 1000"
min_uptime = "100ms"
stop_timeout = "300ms"
"#,
    );
    env.up();
    let pid = env.running_pid("stubborn");
    let t0 = Instant::now();
    let out = env.ward_ok(&["stop", "stubborn"]);
    let took = t0.elapsed();
    env.check(
        took.as_millis() >= 300,
        format!("stop took {took:?}, less than stop_timeout"),
    );
    env.check(
        out.stdout.contains("SIGKILL"),
        format!("stop output\n{out}"),
    );
    let p = env.prog("stubborn");
    env.check(p["state"] == "stopped", format!("after stop: {p}"));
    env.check(
        p["last_exit"]["exit"]["signal"] == 9,
        format!("last_exit should be signal 9: {p}"),
    );
    env.check(
        !alive(pid) && group_members(pid).is_empty(),
        format!("pid {pid} or its group survived"),
    );
}

#[test]
fn background_children_are_killed_when_the_main_process_exits() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "leaver"
command = "sleep 1000 & echo $!; while [ ! -e go ]; do sleep 0.02; done"
min_uptime = "0s"
restart = "never"
"#,
    );
    env.up();
    let pgid = env.running_pid("leaver");
    let log = env.log_path("leaver.out.log");
    let mut bg = 0;
    env.wait_until("the background pid is in the log", DEADLINE, || {
        bg = fs::read_to_string(&log)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        bg > 0
    });
    env.check(
        alive(bg) && group_members(pgid).contains(&bg),
        format!("background sleep {bg} not running in group {pgid}"),
    );
    fs::write(env.root.join("go"), "").unwrap();
    let p = env.wait_state("leaver", "exited");
    env.check(
        p["last_exit"]["exit"]["code"] == 0,
        format!("main process exit: {p}"),
    );
    env.check(
        !alive(bg),
        format!("background sleep {bg} survived its main process"),
    );
    env.check(
        group_members(pgid).is_empty(),
        format!("group {pgid} not empty: {:?}", group_members(pgid)),
    );
}
