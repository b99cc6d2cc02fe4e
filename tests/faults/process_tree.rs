//! Children that misbehave: 500 grandchildren, SIGTERM ignored by the whole
//! tree, stdout closed early, and a flood of output.

use std::fs;
use std::time::{Duration, Instant};

use crate::support::{
    alive, group_members, processes_with_env, rss_bytes, zombie_children, TestEnv, DEADLINE,
};

/// An environment marker unique to this env and program.
fn marker(env: &TestEnv, program: &str) -> String {
    format!("WARD_FAULT_MARK={}/{program}", env.root.display())
}

#[test]
fn five_hundred_grandchildren_are_all_stopped() {
    let env = TestEnv::new();
    let (m1, m2) = (marker(&env, "forker"), marker(&env, "holder"));
    let val = |m: &str| m.split_once('=').unwrap().1.to_string();
    env.config(&format!(
        r#"
[[program]]
name = "forker"
command = "for i in $(seq 500); do sleep 1000 & done; until [ -e go ]; do sleep 0.01; done; exit 0"
min_uptime = "0s"
restart = "never"
env = {{ WARD_FAULT_MARK = "{}" }}

[[program]]
name = "holder"
command = "for i in $(seq 500); do sleep 1000 & done; wait"
min_uptime = "0s"
autostart = false
env = {{ WARD_FAULT_MARK = "{}" }}
"#,
        val(&m1),
        val(&m2)
    ));
    env.up();
    let ward = env.daemon_pid();
    // The main process exits; ward stops what is left in its group.
    let pgid = env.running_pid("forker");
    env.wait_until("501 processes in the forker's group", DEADLINE, || {
        group_members(pgid).len() == 501
    });
    fs::write(env.root.join("go"), "").unwrap();
    let p = env.wait_state("forker", "exited");
    env.check(
        p["last_exit"]["exit"]["code"] == 0,
        format!("forker's exit: {p}"),
    );
    env.check(
        group_members(pgid).is_empty() && processes_with_env(&m1).is_empty(),
        format!(
            "left after the forker exited: group {:?}, marked {:?}",
            group_members(pgid),
            processes_with_env(&m1)
        ),
    );
    env.wait_until("ward reaped the 500 orphans", DEADLINE, || {
        zombie_children(ward).is_empty()
    });

    // The main process stays; `ward stop` stops all 501.
    env.ward_ok(&["start", "holder"]);
    let pgid = env.running_pid("holder");
    env.wait_until("501 processes in the holder's group", DEADLINE, || {
        group_members(pgid).len() == 501
    });
    env.ward_ok(&["stop", "holder"]);
    env.check(
        group_members(pgid).is_empty() && processes_with_env(&m2).is_empty(),
        format!(
            "left after `ward stop`: group {:?}, marked {:?}",
            group_members(pgid),
            processes_with_env(&m2)
        ),
    );

    // Once more, stopped by ward's exit.
    env.ward_ok(&["start", "holder"]);
    let pgid = env.running_pid("holder");
    env.wait_until("501 processes again", DEADLINE, || {
        group_members(pgid).len() == 501
    });
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(DEADLINE);
    env.check(
        group_members(pgid).is_empty() && processes_with_env(&m2).is_empty(),
        format!(
            "left after `ward down`: group {:?}, marked {:?}",
            group_members(pgid),
            processes_with_env(&m2)
        ),
    );
}

#[test]
fn a_tree_ignoring_sigterm_is_killed_after_stop_timeout() {
    let env = TestEnv::new();
    let m = marker(&env, "deaf");
    env.config(&format!(
        r#"
[[program]]
name = "deaf"
command = "trap '' TERM; sleep 1000 & sleep 1000 & wait"
min_uptime = "0s"
stop_timeout = "500ms"
env = {{ WARD_FAULT_MARK = "{}" }}
"#,
        m.split_once('=').unwrap().1
    ));
    env.up();
    for how in ["stop", "down"] {
        if how == "stop" {
            // (autostarted)
        } else {
            env.ward_ok(&["start", "deaf"]);
        }
        let pgid = env.running_pid("deaf");
        env.wait_until("the shell and both sleeps run", DEADLINE, || {
            group_members(pgid).len() == 3
        });
        let t0 = Instant::now();
        let out = env.ward_ok(&[how, "deaf"][..if how == "stop" { 2 } else { 1 }]);
        let took = t0.elapsed();
        if how == "down" {
            env.wait_daemon_exit(DEADLINE);
        }
        env.check(
            took >= Duration::from_millis(500),
            format!("`ward {how}` took {took:?}, less than stop_timeout\n{out}"),
        );
        env.check(
            out.stdout.contains("SIGKILL"),
            format!("`ward {how}` says it used SIGKILL\n{out}"),
        );
        env.check(
            group_members(pgid).is_empty() && processes_with_env(&m).is_empty(),
            format!("left after `ward {how}`: {:?}", processes_with_env(&m)),
        );
    }
}

#[test]
fn a_child_that_closes_stdout_is_still_supervised() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "closer"
command = "echo before; exec >&-; echo after-close >&2; while :; do sleep 0.05; done"
min_uptime = "0s"
"#,
    );
    env.up();
    let pid = env.running_pid("closer");
    let (out, err) = (
        env.log_path("closer.out.log"),
        env.log_path("closer.err.log"),
    );
    env.wait_until("both lines are in the logs", DEADLINE, || {
        fs::read_to_string(&out).is_ok_and(|t| t == "before\n")
            && fs::read_to_string(&err).is_ok_and(|t| t == "after-close\n")
    });
    let p = env.prog("closer");
    env.check(
        p["state"] == "running" && p["pid"] == pid,
        format!("after closing stdout: {p}"),
    );
    env.ward_ok(&["restart", "closer"]);
    let pid2 = env.running_pid("closer");
    env.check(pid2 != pid && !alive(pid), "restart replaced the process");
    env.wait_until("the new run wrote to fresh pipes", DEADLINE, || {
        fs::read_to_string(&out).is_ok_and(|t| t == "before\nbefore\n")
    });
    let t0 = Instant::now();
    env.ward_ok(&["stop", "closer"]);
    env.check(
        t0.elapsed() < Duration::from_secs(3),
        format!(
            "stop took {:?} (stop_timeout is 5s: SIGTERM should do)",
            t0.elapsed()
        ),
    );
    let p = env.prog("closer");
    env.check(
        p["state"] == "stopped" && group_members(pid2).is_empty(),
        format!("after stop: {p}"),
    );
}

/// How long the flood lasts (the point of the test, not a wait).
const SPAM_FOR: Duration = Duration::from_secs(5);
const STATUS_DEADLINE: Duration = Duration::from_secs(1);
const RSS_LIMIT: u64 = 64 << 20;

#[test]
fn a_flood_of_output_leaves_ward_responsive_and_small() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "spam"
command = "exec yes 'spam spam spam spam spam spam spam spam spam spam spam spam spam spam'"
min_uptime = "0s"
log = { max_size = "8MiB", keep = 1 }
"#,
    );
    env.up();
    let ward = env.daemon_pid();
    let pid = env.running_pid("spam");
    let written = || {
        env.prog("spam")["log"]["bytes_written"]
            .as_u64()
            .unwrap_or(0)
    };
    let (t0, bytes0) = (Instant::now(), written());
    let (mut slowest, mut max_rss, mut calls) = (Duration::ZERO, 0u64, 0);
    while t0.elapsed() < SPAM_FOR {
        let t = Instant::now();
        let out = env.ward(&["status"]);
        let took = t.elapsed();
        env.check(out.status.success(), format!("status failed\n{out}"));
        slowest = slowest.max(took);
        calls += 1;
        max_rss = max_rss.max(rss_bytes(ward).unwrap_or(0));
    }
    let elapsed = t0.elapsed();
    let rate = (written() - bytes0) as f64 / elapsed.as_secs_f64() / 1e6;
    eprintln!(
        "flood: {rate:.0} MB/s into the log; {calls} `ward status` calls, slowest {slowest:?}; ward RSS max {} KiB",
        max_rss / 1024
    );
    env.check(
        rate > 10.0,
        format!("only {rate:.1} MB/s reached the log: not a flood"),
    );
    env.check(
        slowest < STATUS_DEADLINE,
        format!("`ward status` took {slowest:?} during the flood"),
    );
    env.check(
        max_rss < RSS_LIMIT,
        format!("ward's RSS reached {} KiB", max_rss / 1024),
    );
    let t = Instant::now();
    env.ward_ok(&["stop", "spam"]);
    env.check(
        t.elapsed() < Duration::from_secs(3) && !alive(pid) && group_members(pid).is_empty(),
        format!(
            "stop took {:?}; pid {pid} alive: {}",
            t.elapsed(),
            alive(pid)
        ),
    );
}
