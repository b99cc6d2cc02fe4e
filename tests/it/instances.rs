//! `instances = N`: N copies named `name:i`, addressed together or alone.

use std::fs;

use crate::support::{alive, TestEnv, DEADLINE};

#[test]
fn instances_get_their_index_and_can_be_addressed_alone_or_together() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "multi"
command = "echo instance=$WARD_INSTANCE name=$WARD_NAME; exec sleep 1000"
min_uptime = "100ms"
instances = 3
"#,
    );
    env.up();
    let names = ["multi:0", "multi:1", "multi:2"];
    let before: Vec<i32> = names.iter().map(|n| env.running_pid(n)).collect();
    let s = env.status_json();
    let listed: Vec<&str> = s["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    env.check(listed == names, format!("instances listed: {listed:?}"));
    for i in 0..3 {
        let path = env.log_path(&format!("multi-{i}.out.log"));
        let want = format!("instance={i} name=multi:{i}");
        env.wait_until(
            &format!("{} has `{want}`", path.display()),
            DEADLINE,
            || fs::read_to_string(&path).is_ok_and(|t| t.lines().any(|l| l == want)),
        );
    }

    let out = env.ward_ok(&["restart", "multi"]);
    env.check(
        out.stdout.lines().count() == 3,
        format!("restart of every instance\n{out}"),
    );
    let after: Vec<i32> = names.iter().map(|n| env.running_pid(n)).collect();
    for (old, new) in before.iter().zip(&after) {
        env.check(
            old != new && !alive(*old),
            format!("restart kept or leaked pid {old} (now {new})"),
        );
    }

    env.ward_ok(&["stop", "multi:1"]);
    let s = env.status_json();
    let progs = s["programs"].as_array().unwrap();
    env.check(
        progs[1]["state"] == "stopped" && !alive(after[1]),
        format!("multi:1 after stop: {}", progs[1]),
    );
    for i in [0, 2] {
        env.check(
            progs[i]["state"] == "running" && progs[i]["pid"] == after[i],
            format!("multi:{i} disturbed: {}", progs[i]),
        );
    }
}
