//! A program that exits at once, restarted for a bounded time: ward's CPU
//! stays low, the backoff follows its configured shape, and the program ends
//! `fatal` after `max_restarts`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{cpu_ticks, ticks_per_second, TestEnv};

const INITIAL_MS: u64 = 10;
const MAX_MS: u64 = 100;
/// How often the test reads the history (16 transitions) so that it never
/// misses one: 8 runs take at least 450 ms at this backoff.
const HISTORY_POLL: Duration = Duration::from_millis(100);

/// The configured backoff shape: 10, 20, 40, 80, then 100 ms.
fn expected_delays(restarts: u64) -> Vec<u64> {
    (0..restarts)
        .map(|i| (INITIAL_MS << i.min(16)).min(MAX_MS))
        .collect()
}

/// Append the transitions of `window` (the latest 16) that `all` lacks.
fn merge_history(env: &TestEnv, all: &mut Vec<Value>, window: &[Value]) {
    let overlap = (0..=window.len().min(all.len()))
        .rev()
        .find(|&k| all[all.len() - k..] == window[..k])
        .unwrap_or(0);
    if overlap == 0 && !all.is_empty() && !window.is_empty() {
        env.fail(&format!(
            "polled too slowly: transitions were lost between {} and {}",
            all.last().unwrap(),
            window[0]
        ));
    }
    all.extend_from_slice(&window[overlap..]);
}

fn delay_of(t: &Value) -> u64 {
    let d = t["detail"].as_str().unwrap_or("");
    d.rsplit("restarting in ")
        .next()
        .and_then(|s| s.strip_suffix("ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the delay in {d:?}"))
}

fn crash_loop(run_for: Duration) {
    // Each run costs at least MAX_MS once the backoff is capped.
    let max_restarts = run_for.as_millis() as u64 / MAX_MS;
    let env = TestEnv::with_config(&format!(
        r#"
[[program]]
name = "crashy"
command = "exit 3"
min_uptime = "0s"
backoff = {{ initial = "{INITIAL_MS}ms", max = "{MAX_MS}ms", multiplier = 2.0, jitter = 0.0 }}
max_restarts = {max_restarts}
"#
    ));
    env.up();
    let ward = env.daemon_pid();
    let t0 = Instant::now();
    let cpu0 = cpu_ticks(ward).expect("ward's /proc stat");
    let mut history = Vec::new();
    let deadline = run_for * 3 + Duration::from_secs(20);
    let last = loop {
        let p = env.prog("crashy");
        merge_history(&env, &mut history, p["history"].as_array().unwrap());
        if p["state"] == "fatal" {
            break p;
        }
        if t0.elapsed() > deadline {
            env.fail(&format!("not fatal after {deadline:?}: {p}"));
        }
        std::thread::sleep(HISTORY_POLL);
    };
    let wall = t0.elapsed();
    let cpu = (cpu_ticks(ward).unwrap() - cpu0) as f64 / ticks_per_second() as f64;
    let share = cpu / wall.as_secs_f64();
    eprintln!(
        "crash loop: {max_restarts} restarts in {wall:?}; ward used {cpu:.2}s CPU ({:.1}% of a core)",
        share * 100.0
    );
    env.check(
        share < 0.10,
        format!(
            "ward used {:.1}% of a core during the crash loop",
            share * 100.0
        ),
    );
    env.check(
        last["restarts"] == max_restarts && last["last_exit"]["exit"]["code"] == 3,
        format!("fatal after {max_restarts} restarts: {last}"),
    );
    env.check(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("max_restarts = {max_restarts}"))),
        format!("the fatal message names max_restarts: {last}"),
    );
    let backoffs: Vec<&Value> = history.iter().filter(|t| t["to"] == "backoff").collect();
    let delays: Vec<u64> = backoffs.iter().map(|t| delay_of(t)).collect();
    env.check(
        delays == expected_delays(max_restarts),
        format!(
            "announced delays {delays:?}, want {:?}",
            expected_delays(max_restarts)
        ),
    );
    // Each start comes no earlier than its delay after the exit before it.
    let mut checked = 0;
    for w in history.windows(2) {
        if w[0]["to"] == "backoff" && w[1]["to"] == "running" {
            let gap = w[1]["at_ms"].as_u64().unwrap() - w[0]["at_ms"].as_u64().unwrap();
            let delay = delay_of(&w[0]);
            env.check(
                gap + 1 >= delay,
                format!("restarted {gap}ms after an exit, before its {delay}ms delay"),
            );
            checked += 1;
        }
    }
    env.check(
        checked == max_restarts,
        format!("{checked} backoff→running pairs in the history, want {max_restarts}"),
    );
}

#[test]
fn crash_loop_costs_little_cpu_follows_the_backoff_and_ends_fatal() {
    let secs = if crate::long_faults() { 60 } else { 10 };
    crash_loop(Duration::from_secs(secs));
}

#[test]
#[ignore = "long (60 s): run with --ignored"]
fn crash_loop_for_a_minute() {
    crash_loop(Duration::from_secs(60));
}
