//! Restart policies, exponential backoff, max_restarts and min_uptime.

use serde_json::Value;

use crate::support::{TestEnv, DEADLINE};

/// `(at_ms, to)` of every transition in an instance's history.
fn transitions(p: &Value) -> Vec<(u64, String, String)> {
    p["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["at_ms"].as_u64().unwrap_or(0),
                t["to"].as_str().unwrap_or("").to_string(),
                t["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The delays announced when entering backoff (`restarting in 50ms`), in ms.
fn announced_delays(p: &Value) -> Vec<u64> {
    transitions(p)
        .iter()
        .filter(|(_, to, _)| to == "backoff")
        .map(|(_, _, d)| {
            let ms = d
                .rsplit("restarting in ")
                .next()
                .and_then(|s| s.strip_suffix("ms"))
                .unwrap_or("");
            ms.parse()
                .unwrap_or_else(|_| panic!("cannot read the delay in {d:?}"))
        })
        .collect()
}

/// Milliseconds between consecutive starts (transitions into `running`).
fn start_gaps(p: &Value) -> Vec<u64> {
    let starts: Vec<u64> = transitions(p)
        .iter()
        .filter(|(_, to, _)| to == "running")
        .map(|(at, _, _)| *at)
        .collect();
    starts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn crash_loop_backs_off_exponentially_then_goes_fatal() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "crashy"
command = "exit 3"
min_uptime = "0s"
backoff = { initial = "50ms", max = "400ms", multiplier = 2.0, jitter = 0.0 }
max_restarts = 4

[[program]]
name = "capped"
command = "exit 3"
min_uptime = "0s"
backoff = { initial = "50ms", max = "200ms", multiplier = 2.0, jitter = 0.0 }
max_restarts = 5
"#,
    );
    env.up();
    for (name, restarts, delays) in [
        ("crashy", 4, vec![50, 100, 200, 400]),
        ("capped", 5, vec![50, 100, 200, 200, 200]),
    ] {
        let p = env.wait_state(name, "fatal");
        env.check(
            p["restarts"] == restarts,
            format!("{name}: restarts should be {restarts}: {p}"),
        );
        env.check(
            p["last_exit"]["exit"]["code"] == 3,
            format!("{name}: last exit: {p}"),
        );
        env.check(
            announced_delays(&p) == delays,
            format!(
                "{name}: announced delays {:?}, want {delays:?}: {p}",
                announced_delays(&p)
            ),
        );
        let gaps = start_gaps(&p);
        env.check(
            gaps.len() == delays.len(),
            format!(
                "{name}: {} starts in history, want {}: {p}",
                gaps.len() + 1,
                delays.len() + 1
            ),
        );
        for (gap, delay) in gaps.iter().zip(&delays) {
            // Never earlier than the delay; the upper bound only rules out a
            // delay from the wrong step of the sequence on a loaded machine.
            env.check(
                gap >= delay,
                format!("{name}: gap {gap}ms shorter than its delay {delay}ms; gaps {gaps:?}"),
            );
            env.check(
                *gap < delay * 2 + 1500,
                format!("{name}: gap {gap}ms far longer than {delay}ms; gaps {gaps:?}"),
            );
        }
        env.check(
            gaps.last() > gaps.first(),
            format!("{name}: gaps do not grow: {gaps:?}"),
        );
        let msg = p["message"].as_str().unwrap_or("");
        env.check(
            msg.contains("max_restarts"),
            format!("{name}: fatal message: {p}"),
        );
    }

    // A manual start leaves fatal (and the loop starts over).
    let out = env.ward_ok(&["start", "crashy"]);
    env.check(
        out.stdout.contains("crashy"),
        format!("start output\n{out}"),
    );
    env.wait_until("crashy left fatal through a new start", DEADLINE, || {
        let p = env.prog("crashy");
        p["restarts"].as_u64() >= Some(5)
            && transitions(&p).iter().any(|(_, to, _)| to == "running")
    });
}

#[test]
fn restart_policies_decide_what_follows_an_exit() {
    let env = TestEnv::with_config(
        r#"
[defaults]
min_uptime = "0s"
backoff = { initial = "20ms", max = "20ms", jitter = 0.0 }
max_restarts = 0

[[program]]
name = "never"
command = "exit 1"
restart = "never"

[[program]]
name = "expected-code"
command = "exit 3"
restart = "on-failure"
exit_codes = [0, 3]

[[program]]
name = "unexpected-code"
command = "exit 4"
restart = "on-failure"
exit_codes = [0, 3]

[[program]]
name = "always"
command = "exit 0"
restart = "always"
"#,
    );
    env.up();
    // Once the restarting ones have restarted twice, the others had every chance to.
    env.wait_until(
        "`unexpected-code` and `always` restarted twice",
        DEADLINE,
        || {
            let s = env.status_json();
            let restarts = |n: &str| {
                s["programs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == n)
                    .unwrap()["restarts"]
                    .as_u64()
                    .unwrap()
            };
            restarts("unexpected-code") >= 2 && restarts("always") >= 2
        },
    );
    for (name, code) in [("never", 1), ("expected-code", 3)] {
        let p = env.prog(name);
        env.check(
            p["state"] == "exited" && p["restarts"] == 0,
            format!("{name} should stay exited: {p}"),
        );
        env.check(
            p["last_exit"]["exit"]["code"] == code,
            format!("{name} last exit: {p}"),
        );
    }
    let p = env.prog("unexpected-code");
    env.check(
        p["last_exit"]["exit"]["code"] == 4,
        format!("last exit: {p}"),
    );
}

#[test]
fn start_fails_when_the_program_exits_before_min_uptime() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "brief"
command = "sleep 0.2"
min_uptime = "1s"
restart = "never"
autostart = false
"#,
    );
    env.up();
    let out = env.ward(&["start", "brief"]);
    env.check(out.code() == Some(1), format!("exit code\n{out}"));
    env.check(
        out.stderr.contains("brief") && out.stderr.contains("error:"),
        format!("names the program\n{out}"),
    );
    env.check(
        out.stderr.contains("failed start") && out.stderr.contains("min_uptime"),
        format!("explains the failed start\n{out}"),
    );
    let p = env.prog("brief");
    env.check(
        p["state"] == "exited" && p["last_exit"]["exit"]["code"] == 0,
        format!("after the failed start: {p}"),
    );
}
