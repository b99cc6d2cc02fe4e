//! The open-file limit: ward raises its own soft limit to the hard one (each
//! program costs it about three descriptors), programs keep the limit ward
//! was started with, and a hard limit too low says so and how to fix it.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::support::{TestEnv, DEADLINE};

const INSTANCES: usize = 120;

fn config(env: &TestEnv) {
    env.config(&format!(
        r#"
[[program]]
name = "many"
command = "ulimit -Sn; exec sleep 1000"
instances = {INSTANCES}
min_uptime = "0s"
"#
    ));
}

/// Start the daemon with RLIMIT_NOFILE set to `soft`/`hard` (hard `None`:
/// unchanged).
fn up_with_limit(env: &TestEnv, soft: u64, hard: Option<u64>) {
    env.up_with(|cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the hook.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = soft;
                if let Some(h) = hard {
                    lim.rlim_max = h;
                }
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
}

fn running(env: &TestEnv) -> usize {
    env.status_json()["programs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "running")
        .count()
}

#[test]
fn a_low_soft_limit_is_raised_for_ward_and_kept_for_programs() {
    let env = TestEnv::new();
    config(&env);
    // 256 descriptors cannot hold 120 programs' pipes: ward must raise it.
    up_with_limit(&env, 256, None);
    env.wait_until(
        &format!("all {INSTANCES} instances running"),
        DEADLINE,
        || running(&env) == INSTANCES,
    );
    // Each program printed the soft limit it got: the one ward was given.
    for i in [0, INSTANCES / 2, INSTANCES - 1] {
        let path = env.log_path(&format!("many-{i}.out.log"));
        env.wait_until(&format!("{} says 256", path.display()), DEADLINE, || {
            fs::read_to_string(&path).is_ok_and(|t| t.trim() == "256")
        });
    }
    env.ward_ok(&["down"]);
}

#[test]
fn a_hard_limit_too_low_is_reported_with_the_fix() {
    let env = TestEnv::new();
    config(&env);
    up_with_limit(&env, 256, Some(256));
    // Some instances cannot get their pipes: they wait in backoff with a
    // message naming the limit, and none is reported as something it is not.
    env.wait_until("an instance reports the open-file limit", DEADLINE, || {
        env.status_json()["programs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| {
                p["state"] == "backoff"
                    && p["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("open-file limit") && m.contains("LimitNOFILE"))
            })
    });
    // Every instance has tried (none is still in its initial `stopped`), and
    // each is running or waiting to retry: nothing is reported as something
    // it is not (a process whose /proc could not be read is not `unknown`).
    let states = || -> Vec<String> {
        env.status_json()["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"].as_str().unwrap().to_string())
            .collect()
    };
    env.wait_until("every instance has tried to start", DEADLINE, || {
        !states().iter().any(|s| s == "stopped")
    });
    let seen = states();
    env.check(
        seen.iter()
            .all(|s| matches!(s.as_str(), "running" | "starting" | "backoff")),
        format!("states under a low hard limit: {seen:?}"),
    );
    env.check(running(&env) > 0, "some instances run");
    env.ward_ok(&["down"]);
}
