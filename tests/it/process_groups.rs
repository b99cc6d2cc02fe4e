//! Stopping a program stops its whole process group.

use std::fs;
use std::time::Instant;

use serde_json::Value;

use crate::support::{alive, group_members, proc_stat, TestEnv, DEADLINE};

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
    let bg = logged_pids(&env, "leaver", 1)[0];
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

/// A program whose first run leaves a child that ignores SIGTERM in its
/// group and exits 1 half a second later; the next runs just sleep. The
/// first run prints `MAIN_PID CHILD_PID` to its log.
fn leaver(name: &str, stop_timeout: &str, autostart: bool) -> String {
    format!(
        r#"
[[program]]
name = "{name}"
command = "if [ -e ran-$WARD_NAME ]; then exec sleep 1000; fi; touch ran-$WARD_NAME; trap '' TERM; sleep 1000 & echo $$ $!; sleep 0.5; exit 1"
min_uptime = "0s"
stop_timeout = "{stop_timeout}"
backoff = {{ initial = "100ms", jitter = 0.0 }}
autostart = {autostart}
"#
    )
}

/// The `n` pids `name` prints to stdout, once it has printed them.
fn logged_pids(env: &TestEnv, name: &str, n: usize) -> Vec<i32> {
    let log = env.log_path(&format!("{name}.out.log"));
    let mut pids = Vec::new();
    env.wait_until(&format!("`{name}` logged its pids"), DEADLINE, || {
        pids = fs::read_to_string(&log)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
            .collect();
        pids.len() == n
    });
    pids
}

/// The main pid and the SIGTERM-proof child of a `leaver`'s first run.
fn leaver_pids(env: &TestEnv, name: &str) -> (i32, i32) {
    let pids = logged_pids(env, name, 2);
    (pids[0], pids[1])
}

/// `name`'s `worker_status` row (the default SQLite database), if written.
fn db_row(env: &TestEnv, name: &str) -> Option<Value> {
    let out = env.ward(&["status", "--db", "--json", name]);
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
}

/// The `worker_events` of `name`, oldest first.
fn events(env: &TestEnv, name: &str) -> Vec<Value> {
    let out = env.ward_ok(&["events", name, "--json", "-n", "1000"]);
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| env.fail(&format!("{l:?}: {e}"))))
        .collect()
}

/// docs/ARCHITECTURE.md, "Status never lies": once the main process is gone,
/// neither `ward status` nor the `worker_status` row says it runs while the
/// rest of its group is stopped; they say `stopping` with the exit recorded.
#[test]
fn drain_after_an_exit_shows_stopping_with_the_exit_not_the_dead_pid() {
    let env = TestEnv::with_config(&leaver("leaver", "2s", true));
    env.up();
    let (main, child) = leaver_pids(&env, "leaver");
    env.wait_until("the main process is gone from /proc", DEADLINE, || {
        proc_stat(main).is_none()
    });
    let (mut drain_seen, mut row_seen, mut text_seen) = (false, false, false);
    let mut restarted = Value::Null;
    env.wait_until("`leaver` runs again after the drain", DEADLINE, || {
        let p = env.prog("leaver");
        let pid = p["pid"].as_i64();
        // Never running with the dead pid; only the status call's own
        // verdict may name it, between the reaping and the actor's snapshot.
        env.check(
            pid != Some(i64::from(main)) || p["state"] == "unknown",
            format!("status still has the dead pid {main}: {p}"),
        );
        // Looked at after the status call: alive now, so alive then.
        if p["state"] == "stopping" && alive(child) {
            env.check(
                pid.is_none()
                    && p["uptime_ms"].is_null()
                    && p["last_exit"]["exit"]["code"] == 1
                    && p["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("stopping what is left of its process group")),
                format!("during the drain: {p}"),
            );
            drain_seen = true;
            // The table's INFO column says why it is stopping.
            let text = env.ward_ok(&["status"]).stdout;
            if text
                .lines()
                .any(|l| l.starts_with("leaver") && l.contains(" stopping "))
            {
                env.check(
                    text.contains("stopping what is left of its process group"),
                    format!("`ward status` during the drain:\n{text}"),
                );
                text_seen = true;
            }
            let row = db_row(&env, "leaver").unwrap_or_default();
            if row_seen || (row["state"] == "stopping" && alive(child)) {
                env.check(
                    row["state"] == "stopping"
                        && row["pid"].is_null()
                        && row["last_exit_code"] == 1,
                    format!("worker_status during the drain: {row}"),
                );
                row_seen = true;
            }
        }
        restarted = p;
        restarted["state"] == "running" && pid.is_some_and(|p| p != i64::from(main))
    });
    env.check(drain_seen, "status never showed the drain");
    env.check(text_seen, "`ward status` never showed the drain");
    env.check(
        row_seen,
        "worker_status never showed the drain while the child lived",
    );
    env.check(
        !alive(child) && group_members(main).is_empty(),
        format!(
            "child {child} or group {main} survived the drain: {:?}",
            group_members(main)
        ),
    );
    env.check(
        restarted["restarts"] == 1,
        format!("one restart: {restarted}"),
    );
    // The exit is an event when it happens; the drain's end, the backoff
    // and the restart follow it.
    let mut evs = Vec::new();
    env.wait_until("the restart is in worker_events", DEADLINE, || {
        evs = events(&env, "leaver");
        evs.iter().any(|e| e["event"] == "restarted")
    });
    let names: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    env.check(
        names
            == [
                "started",
                "exited",
                "stopping",
                "drained",
                "backoff",
                "restarted",
            ],
        format!("events: {names:?}"),
    );
    let (exited, drained) = (&evs[1], &evs[3]);
    env.check(
        exited["exit_code"] == 1
            && exited["pid"] == main
            && exited["to_state"] == "stopping"
            && drained["pid"] == main,
        format!("exited: {exited}; drained: {drained}"),
    );
    let took = drained["at_ms"].as_i64().unwrap_or(0) - exited["at_ms"].as_i64().unwrap_or(0);
    env.check(
        took >= 1900,
        format!("the exit was recorded {took} ms before the drain ended, not when it happened (stop_timeout is 2s)"),
    );
}

/// `ward stop` and `ward restart` sent while the rest of a group is being
/// stopped return once they have taken effect, with nothing of it left.
#[test]
fn drain_stop_and_restart_during_it_return_when_done() {
    let env = TestEnv::with_config(&format!(
        "{}{}",
        leaver("tostop", "1s", false),
        leaver("torestart", "1s", false)
    ));
    env.up();
    for (name, verb) in [("tostop", "stop"), ("torestart", "restart")] {
        env.ward_ok(&["start", name]);
        let (main, child) = leaver_pids(&env, name);
        env.wait_until(&format!("`{name}` drains its group"), DEADLINE, || {
            env.prog(name)["state"] == "stopping" && alive(child)
        });
        let out = env.ward_ok(&[verb, name]);
        env.check(
            !alive(child) && group_members(main).is_empty(),
            format!("after `ward {verb} {name}`, child {child} or group {main} is left\n{out}"),
        );
        let p = env.prog(name);
        let ok = match verb {
            "stop" => p["state"] == "stopped" && p["pid"].is_null(),
            _ => {
                p["state"] == "running"
                    && p["pid"].as_i64().is_some_and(|p| p != i64::from(main))
                    && out.stdout.contains("running")
            }
        };
        env.check(ok, format!("after `ward {verb} {name}`: {p}\n{out}"));
    }
}

/// With a zero backoff, the restart policy would start the program again the
/// moment the drain ends: a `ward stop` or `ward restart` sent during the
/// drain replaces it (no run started only to be stopped, no second restart).
#[test]
fn drain_a_request_during_it_replaces_the_restart_policy() {
    let zero = |name: &str| {
        leaver(name, "1s", false).replace(
            r#"backoff = { initial = "100ms", jitter = 0.0 }"#,
            r#"backoff = { initial = "0s", max = "0s", jitter = 0.0 }"#,
        )
    };
    let env = TestEnv::with_config(&format!("{}{}", zero("tostop"), zero("torestart")));
    env.up();
    for (name, verb, restarts) in [("tostop", "stop", 0), ("torestart", "restart", 1)] {
        env.ward_ok(&["start", name]);
        let (main, child) = leaver_pids(&env, name);
        env.wait_until(&format!("`{name}` drains its group"), DEADLINE, || {
            env.prog(name)["state"] == "stopping" && alive(child)
        });
        let out = env.ward_ok(&[verb, name]);
        let p = env.prog(name);
        let state = if verb == "stop" { "stopped" } else { "running" };
        env.check(
            p["state"] == state && p["restarts"] == restarts && !alive(child),
            format!("after `ward {verb} {name}` during the drain of group {main}: {p}\n{out}"),
        );
    }
}

/// A stop whose main process exits on SIGTERM but leaves a child that
/// ignores it: while the child is waited for, status has the exit and no pid.
#[test]
fn drain_during_a_stop_shows_the_exit_not_the_dead_pid() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "halfdeaf"
command = "trap '' TERM; sleep 1000 & echo $!; trap - TERM; exec sleep 1000"
min_uptime = "0s"
stop_timeout = "1s"
"#,
    );
    env.up();
    let main = env.running_pid("halfdeaf");
    let child = logged_pids(&env, "halfdeaf", 1)[0];
    let mut stop = env
        .command(&["stop", "halfdeaf"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ward stop");
    env.wait_until("the main process is gone from /proc", DEADLINE, || {
        proc_stat(main).is_none()
    });
    let mut drain_seen = false;
    env.wait_until("`halfdeaf` is stopped", DEADLINE, || {
        let p = env.prog("halfdeaf");
        // Only the status call's own verdict may still name it, in the
        // moment between the reaping and the actor's next snapshot.
        env.check(
            p["pid"] != main || p["state"] == "unknown",
            format!("status still has the dead pid {main}: {p}"),
        );
        if p["state"] == "stopping" && alive(child) {
            env.check(
                p["pid"].is_null() && p["last_exit"]["exit"]["signal"] == 15,
                format!("during the drain: {p}"),
            );
            drain_seen = true;
        }
        p["state"] == "stopped"
    });
    let status = stop.wait().expect("wait for ward stop");
    env.check(status.success(), format!("ward stop: {status}"));
    env.check(drain_seen, "status never showed the drain");
    env.check(
        !alive(child) && group_members(main).is_empty(),
        format!("child {child} or group {main} survived the stop"),
    );
}

/// The second SIGTERM to ward kills every group, including one whose main
/// process is gone and whose rest is being stopped (status has no pid then).
#[test]
fn drain_is_cut_short_by_a_second_sigterm() {
    let env = TestEnv::with_config(&leaver("leaver", "60s", true));
    env.up();
    let (_, child) = leaver_pids(&env, "leaver");
    env.wait_until("`leaver` drains its group", DEADLINE, || {
        env.prog("leaver")["state"] == "stopping" && alive(child)
    });
    env.signal_daemon(libc::SIGTERM);
    env.wait_until("ward began its shutdown", DEADLINE, || {
        fs::read_to_string(env.state_dir.join("ward.log"))
            .is_ok_and(|l| l.contains("SIGTERM: stopping every program"))
    });
    env.signal_daemon(libc::SIGTERM);
    // Far less than the 60s stop_timeout.
    let status = env.wait_daemon_exit(DEADLINE);
    env.check(
        status.code() == Some(0),
        format!("ward exited with {status}"),
    );
    env.wait_until("the child is gone", DEADLINE, || !alive(child));
}
