//! The control socket: permissions, one daemon per state dir, bad input,
//! peers of another uid; and `ward up --detach`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::support::{alive, ward_bin, TestEnv, DEADLINE};

const ONE: &str = r#"
[[program]]
name = "idle"
command = "exec sleep 1000"
min_uptime = "100ms"
"#;

#[test]
fn socket_is_owner_only() {
    let env = TestEnv::with_config(ONE);
    env.up();
    let mode = fs::metadata(env.socket()).unwrap().permissions().mode() & 0o777;
    env.check(mode == 0o600, format!("socket mode is {mode:o}, want 600"));
}

#[test]
fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let env = TestEnv::with_config(ONE);
    env.up();
    let pid = env.running_pid("idle");
    let out = env.ward(&["up"]);
    env.check(out.code() == Some(1), format!("second `ward up`\n{out}"));
    env.check(
        out.stderr.contains("already running"),
        format!("message\n{out}"),
    );
    env.check(
        out.stderr.contains(&env.daemon_pid().to_string()),
        format!("names the running daemon's pid\n{out}"),
    );
    // The first daemon is untouched.
    env.check(
        env.prog("idle")["pid"] == pid,
        "the running program was disturbed",
    );
    let detached = env.ward(&["up", "--detach"]);
    env.check(
        detached.code() == Some(1) && detached.stderr.contains("already running"),
        format!("second `ward up --detach`\n{detached}"),
    );
}

#[test]
fn garbage_on_the_socket_gets_an_error_and_the_daemon_keeps_answering() {
    let env = TestEnv::with_config(ONE);
    env.up();
    for garbage in ["not json\n", "{\"cmd\":\"explode\"}\n", "{}\n"] {
        let reply = env.raw_request(garbage);
        let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| {
            env.fail(&format!(
                "reply to {garbage:?} is not JSON ({e}): {reply:?}"
            ))
        });
        env.check(v["ok"] == false, format!("reply to {garbage:?}: {v}"));
        env.check(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            format!("reply to {garbage:?} has no error: {v}"),
        );
    }
    let v: Value = serde_json::from_str(&env.raw_request("{\"cmd\":\"status\"}\n")).unwrap();
    env.check(
        v["ok"] == true && v["data"]["programs"][0]["name"] == "idle",
        format!("status over the socket: {v}"),
    );
    env.ward_ok(&["status"]);
}

/// How to run a command as `nobody`, if this machine can.
fn as_nobody() -> Option<Vec<&'static str>> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let works = |prog: &str, arg: &str| {
        Command::new(prog)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("setpriv", "--version") {
        return Some(vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
    }
    if works("runuser", "--version") {
        return Some(vec!["runuser", "-u", "nobody", "--"]);
    }
    None
}

#[test]

fn another_uid_is_refused_by_the_daemon() {
    let Some(prefix) = as_nobody() else {
        eprintln!("skipped: needs root and setpriv or runuser to connect as another uid");
        return;
    };
    let env = TestEnv::with_config(ONE);
    env.up();
    // Let `nobody` reach the socket, so the daemon's own check is what refuses it.
    for dir in [&env.root, &env.state_dir] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(env.socket(), fs::Permissions::from_mode(0o666)).unwrap();
    // The refusal races with the CLI's request: try enough times to see both orders.
    for _ in 0..50 {
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .arg(ward_bin())
            .arg("--socket")
            .arg(env.socket())
            .arg("status")
            .current_dir("/");
        let out = env.run(cmd);
        env.check(out.code() == Some(1), format!("exit code\n{out}"));
        env.check(
            out.stderr.contains("uid 65534"),
            format!("the daemon's refusal names the uid\n{out}"),
        );
    }
    env.ward_ok(&["status"]);
}

#[test]
fn detached_daemon_outlives_the_cli_and_down_stops_it() {
    let env = TestEnv::with_config(ONE);
    let out = env.ward_ok(&["up", "--detach"]);
    let pid: i32 = out
        .stdout
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| env.fail(&format!("no pid in\n{out}")));
    // The CLI has exited; the daemon answers right away (`up --detach` waited for it).
    env.check(
        alive(pid),
        format!("daemon {pid} is gone after the CLI exited"),
    );
    let s = env.status_json();
    env.check(
        s["pid"] == pid,
        format!("status comes from another daemon: {s}"),
    );
    let program = env.running_pid("idle");

    let down = env.ward_ok(&["down"]);
    env.check(
        down.stdout.contains("ward stopped"),
        format!("down output\n{down}"),
    );
    env.wait_until("the detached daemon exited", DEADLINE, || !alive(pid));
    env.check(
        !alive(program),
        format!("program {program} survived `ward down`"),
    );
    let status = env.ward(&["status"]);
    env.check(
        status.code() == Some(1),
        format!("status after down\n{status}"),
    );
}

#[test]
fn socket_flag_and_env_reach_the_daemon_without_a_config() {
    let env = TestEnv::with_config(ONE);
    env.up();
    env.running_pid("idle");
    let mut by_flag = Command::new(ward_bin());
    by_flag
        .arg("--socket")
        .arg(env.socket())
        .args(["status", "--json"])
        .current_dir("/")
        .env_remove("WARD_CONFIG")
        .env_remove("WARD_SOCKET");
    let mut by_env = Command::new(ward_bin());
    by_env
        .args(["status", "--json"])
        .current_dir("/")
        .env_remove("WARD_CONFIG")
        .env("WARD_SOCKET", env.socket());
    for cmd in [by_flag, by_env] {
        let out = env.run(cmd);
        env.check(
            out.code() == Some(0),
            format!("status through the socket alone\n{out}"),
        );
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| env.fail(&format!("bad JSON ({e})\n{out}")));
        env.check(
            v["programs"][0]["name"] == "idle",
            format!("wrong daemon\n{out}"),
        );
    }
}
