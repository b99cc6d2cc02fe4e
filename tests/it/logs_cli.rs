//! `ward logs` and `ward completions`.

use std::fs;

use crate::support::{TestEnv, DEADLINE};

const TALKER: &str = r#"
[[program]]
name = "talker"
command = "seq 1 20; echo oops >&2; exec sleep 1000"
min_uptime = "100ms"
"#;

fn wait_for_output(env: &TestEnv) {
    let path = env.log_path("talker.out.log");
    env.wait_until("talker wrote its 20 lines", DEADLINE, || {
        fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 20)
    });
}

#[test]
fn logs_prints_the_last_lines_of_a_program() {
    let env = TestEnv::with_config(TALKER);
    env.up();
    wait_for_output(&env);
    let out = env.ward_ok(&["logs", "talker", "-n", "5", "--out"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    env.check(
        lines == ["16", "17", "18", "19", "20"],
        format!("last 5 lines\n{out}"),
    );

    let err_path = env.log_path("talker.err.log");
    env.wait_until("talker wrote to stderr", DEADLINE, || {
        fs::read_to_string(&err_path).is_ok_and(|t| t.contains("oops"))
    });
    let out = env.ward_ok(&["logs", "talker", "-n", "5", "--err"]);
    env.check(
        out.stdout.trim_end() == "oops",
        format!("stderr only\n{out}"),
    );
    let out = env.ward_ok(&["logs", "talker", "-n", "100", "--grep", "1"]);
    env.check(
        out.stdout.lines().count() == 11,
        format!("--grep 1 should match 1, 10..19\n{out}"),
    );
}

#[test]
fn logs_of_an_unknown_program_is_an_error() {
    let env = TestEnv::with_config(TALKER);
    env.up();
    let out = env.ward(&["logs", "nobody-here", "-n", "5"]);
    env.check(out.code() == Some(1), format!("exit code\n{out}"));
    env.check(
        out.stderr.contains("unknown program `nobody-here`") && out.stderr.contains("talker"),
        format!("message\n{out}"),
    );
    env.ward_ok(&["down"]);
    let out = env.ward(&["logs", "nobody-here"]);
    env.check(
        out.code() == Some(1) && out.stderr.contains("unknown program `nobody-here`"),
        format!("with the daemon down\n{out}"),
    );
}

#[test]
fn logs_reads_the_files_when_the_daemon_is_down() {
    let env = TestEnv::with_config(TALKER);
    env.up();
    wait_for_output(&env);
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(DEADLINE);
    let out = env.ward_ok(&["logs", "talker", "-n", "5", "--out"]);
    env.check(
        out.stdout.lines().collect::<Vec<_>>() == ["16", "17", "18", "19", "20"],
        format!("last 5 lines\n{out}"),
    );
    env.check(
        out.stderr.contains("ward is not running"),
        format!("a note says where the lines come from\n{out}"),
    );
}

#[test]
fn completions_prints_a_bash_script() {
    let env = TestEnv::new();
    let out = env.ward_ok(&["completions", "bash"]);
    env.check(
        out.stdout.contains("_ward()") && out.stdout.contains("complete -F _ward"),
        format!("bash completion\n{out}"),
    );
    for verb in ["status", "restart", "logs", "down"] {
        env.check(
            out.stdout.contains(verb),
            format!("completion lacks `{verb}`"),
        );
    }
    let bad = env.ward(&["completions", "tcsh"]);
    env.check(
        bad.code() == Some(2),
        format!("unknown shell is a usage error\n{bad}"),
    );
}
