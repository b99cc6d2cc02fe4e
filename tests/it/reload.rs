//! Live reload (`ward reload`, SIGHUP, `watch_config`) and watch mode.

use std::fs;

use crate::support::{alive, TestEnv, DEADLINE};

const BASE: &str = r#"
[[program]]
name = "keep"
command = "exec sleep 1001"
min_uptime = "0s"

[[program]]
name = "change"
command = "exec sleep 1002"
min_uptime = "0s"

[[program]]
name = "drop"
command = "exec sleep 1003"
min_uptime = "0s"

[[program]]
name = "scale"
command = "exec sleep 1004"
min_uptime = "0s"
instances = 2
"#;

/// The edited config: `change` has a new command, `drop` is gone, `add` is
/// new, `scale` grows to 3 instances, `keep` is untouched.
const EDITED: &str = r#"
[[program]]
name = "keep"
command = "exec sleep 1001"
min_uptime = "0s"

[[program]]
name = "change"
command = "exec sleep 1012"
min_uptime = "0s"

[[program]]
name = "add"
command = "exec sleep 1005"
min_uptime = "0s"

[[program]]
name = "scale"
command = "exec sleep 1004"
min_uptime = "0s"
instances = 3
"#;

fn names(env: &TestEnv) -> Vec<String> {
    env.status_json()["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// Apply EDITED with `apply`, then check that only the difference changed.
fn reload_applies_only_the_difference(apply: impl Fn(&TestEnv)) {
    let env = TestEnv::with_config(BASE);
    env.up();
    let keep = env.running_pid("keep");
    let change = env.running_pid("change");
    let dropped = env.running_pid("drop");
    let scale0 = env.running_pid("scale:0");
    let scale1 = env.running_pid("scale:1");

    env.config(EDITED);
    apply(&env);
    env.wait_until("the new program runs", DEADLINE, || {
        names(&env).contains(&"add".to_string()) && env.state("add") == "running"
    });
    env.wait_until("scale:2 runs", DEADLINE, || {
        names(&env).contains(&"scale:2".to_string()) && env.state("scale:2") == "running"
    });
    env.wait_until("the changed program runs again", DEADLINE, || {
        env.state("change") == "running" && env.running_pid("change") != change
    });
    env.check(
        names(&env) == ["keep", "change", "add", "scale:0", "scale:1", "scale:2"],
        format!("programs after reload: {:?}", names(&env)),
    );
    env.check(
        env.running_pid("keep") == keep,
        "the untouched program kept its pid",
    );
    env.check(
        env.running_pid("scale:0") == scale0 && env.running_pid("scale:1") == scale1,
        "scaling up kept the existing instances' pids",
    );
    env.check(!alive(change), "the changed program's old process is gone");
    env.wait_until("the removed program's process is gone", DEADLINE, || {
        !alive(dropped)
    });
    let cmdline = fs::read_to_string(format!("/proc/{}/cmdline", env.running_pid("change")))
        .unwrap_or_default();
    env.check(
        cmdline.contains("1012"),
        format!("the changed program runs the new command: {cmdline:?}"),
    );
}

#[test]
fn ward_reload_applies_only_the_difference() {
    reload_applies_only_the_difference(|env| {
        let out = env.ward_ok(&["reload"]);
        for want in [
            "added:     add, scale:2",
            "removed:   drop",
            "changed:   change",
            "unchanged: 3",
        ] {
            env.check(
                out.stdout.contains(want),
                format!("reload output lacks `{want}`\n{out}"),
            );
        }
    });
}

#[test]
fn sighup_reloads() {
    reload_applies_only_the_difference(|env| env.signal_daemon(libc::SIGHUP));
}

#[test]
fn a_changed_config_file_reloads_itself_with_watch_config() {
    let env = TestEnv::new();
    let with_watch = |programs: &str| {
        let header = env
            .header()
            .replace("[supervisor]\n", "[supervisor]\nwatch_config = true\n");
        env.write_config(&format!("{header}{programs}"));
    };
    with_watch(BASE);
    env.up();
    let keep = env.running_pid("keep");
    with_watch(EDITED);
    env.wait_until("the file change is applied", DEADLINE, || {
        names(&env).contains(&"add".to_string()) && env.state("add") == "running"
    });
    env.check(
        env.running_pid("keep") == keep,
        "the untouched program kept its pid",
    );
}

#[test]
fn scaling_down_stops_only_the_extra_instances() {
    let env = TestEnv::with_config(BASE);
    env.up();
    let scale0 = env.running_pid("scale:0");
    let scale1 = env.running_pid("scale:1");
    // Grow to 3, then shrink back to 2: only scale:2 goes.
    env.config(&BASE.replace("instances = 2", "instances = 3"));
    env.ward_ok(&["reload"]);
    let scale2 = env.running_pid("scale:2");
    env.config(BASE);
    let out = env.ward_ok(&["reload"]);
    env.check(out.stdout.contains("removed:   scale:2"), format!("{out}"));
    env.wait_until("scale:2's process is gone", DEADLINE, || !alive(scale2));
    env.check(
        env.running_pid("scale:0") == scale0 && env.running_pid("scale:1") == scale1,
        "the remaining instances kept their pids",
    );
}

#[test]
fn an_invalid_edit_is_refused_and_nothing_changes() {
    let env = TestEnv::with_config(BASE);
    env.up();
    let before: Vec<i32> = ["keep", "change", "drop"]
        .iter()
        .map(|n| env.running_pid(n))
        .collect();
    env.config(&EDITED.replace("name = \"add\"", "nmae = \"add\""));
    let out = env.ward(&["reload"]);
    env.check(
        out.code() == Some(2),
        format!("an invalid reload exits 2\n{out}"),
    );
    env.check(
        out.stderr.contains("supervisor.toml:") && out.stderr.contains("did you mean `name`?"),
        format!("the reload error carries ward check's diagnostics\n{out}"),
    );
    let after: Vec<i32> = ["keep", "change", "drop"]
        .iter()
        .map(|n| env.running_pid(n))
        .collect();
    env.check(before == after, "nothing was restarted");
    env.check(
        names(&env) == ["keep", "change", "drop", "scale:0", "scale:1"],
        "the running set is unchanged",
    );
}

#[test]
fn watch_restarts_on_a_change_and_not_on_an_ignored_one() {
    let env = TestEnv::new();
    fs::create_dir_all(env.root.join("src/tmp")).unwrap();
    env.config(
        r#"
[[program]]
name = "dev"
command = "exec sleep 1006"
min_uptime = "0s"
watch = ["src/", "*.js"]
watch_ignore = ["src/tmp"]
watch_delay = "100ms"
"#,
    );
    env.up();
    let first = env.running_pid("dev");
    // Changes to ignored and unwatched paths: nothing happens. Proving a
    // negative needs a wait; this one is the point of the check.
    fs::write(env.root.join("src/tmp/scratch"), "x").unwrap();
    fs::write(env.root.join("notes.txt"), "x").unwrap();
    let quiet_period = std::time::Duration::from_millis(600);
    std::thread::sleep(quiet_period); // the wait is the point: nothing may happen until it ends
    env.check(
        env.running_pid("dev") == first,
        "an ignored change restarted the program",
    );
    env.check(
        env.prog("dev")["restarts"].as_u64() == Some(0),
        "no restart for ignored changes",
    );

    fs::write(env.root.join("src/app.py"), "print(1)").unwrap();
    env.wait_until("a change under src/ restarts the program", DEADLINE, || {
        env.state("dev") == "running" && env.running_pid("dev") != first
    });
    let second = env.running_pid("dev");
    fs::write(env.root.join("main.js"), "1").unwrap();
    env.wait_until("a *.js change restarts it again", DEADLINE, || {
        env.state("dev") == "running" && env.running_pid("dev") != second
    });
    let restarts = env.prog("dev")["restarts"].as_u64();
    env.check(
        restarts == Some(2),
        format!("one restart per watched change (2), got {restarts:?}"),
    );
}
