//! Invalid configs through the real binary: `ward check` and `ward up`
//! report every problem with `file:line:col` and exit 2.

use crate::support::{line_of, TestEnv};

struct Case {
    what: &'static str,
    programs: &'static str,
    /// The error points at the line containing this, at the column where it starts.
    at: &'static str,
    /// Text each message must contain.
    says: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        what: "unknown key",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\nrestrat = \"always\"\n",
        at: "restrat",
        says: &["`restrat`: unknown key in program `web`", "hint: did you mean `restart`?"],
    },
    Case {
        what: "bad duration",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\nmin_uptime = \"5 parsecs\"\n",
        at: "\"5 parsecs\"",
        says: &["`min_uptime`", "`5 parsecs`", "hint:"],
    },
    Case {
        what: "duration without a unit",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\nstop_timeout = 30\n",
        at: "30",
        says: &["`stop_timeout`", "(`30`)", "hint: add a unit"],
    },
    Case {
        what: "duplicate name",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\n\n[[program]]\nname = \"web\" # again\ncommand = \"true\"\n",
        at: "\"web\" # again",
        says: &["duplicate program name `web`", "(first defined on line 5)"],
    },
    Case {
        what: "dependency cycle",
        programs: "[[program]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"b\"]\n\n[[program]]\nname = \"b\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
        at: "\"a\"]",
        says: &["dependency cycle `a -> b -> a`"],
    },
    Case {
        what: "missing command",
        programs: "[[program]] # no command\nname = \"web\"\n",
        at: "[[program]] # no command",
        says: &["`command`: missing required key in program `web`", "hint:"],
    },
    Case {
        what: "external sharing a program's name",
        programs: "[[program]]\nname = \"billing\"\ncommand = \"true\"\n\n[[external]]\nname = \"billing\" # again\ninterval = \"30s\"\n",
        at: "\"billing\" # again",
        says: &["duplicate name `billing` (first defined on line 5, as a program)", "share one namespace"],
    },
    Case {
        what: "external restarted on a hang",
        programs: "[[external]]\nname = \"mailer\"\ninterval = \"30s\"\non_hung = \"restart\"\n",
        at: "\"restart\"",
        says: &["ward cannot restart an `[[external]]` worker", "hint: use `alert`"],
    },
    Case {
        what: "external without an interval",
        programs: "[[external]] # no interval\nname = \"cron-box\"\n",
        at: "[[external]] # no interval",
        says: &["`interval`: missing required key in external `cron-box`", "hint: add `interval"],
    },
    Case {
        what: "externals without the store",
        programs: "[store]\nenabled = false\n\n[[external]] # needs the store\nname = \"reports\"\ninterval = \"30s\"\n",
        at: "[[external]] # needs the store",
        says: &["the status tables, but `[store] enabled = false`", "hint: external workers write their rows"],
    },
    Case {
        what: "nonexistent user",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\nuser = \"no-such-user-xyz\"\n",
        at: "\"no-such-user-xyz\"",
        says: &["unknown user `no-such-user-xyz`"],
    },
    Case {
        what: "bad cron field",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\nautostart = false\n[program.heartbeat]\nschedule = \"0 3 * * mon-fry\"\n",
        at: "fry\"",
        says: &["`heartbeat.schedule`: `fry` is not a valid weekday in schedule `0 3 * * mon-fry` in program `web`", "hint: use numbers 0-7 or names like `mon`"],
    },
    Case {
        what: "period and schedule",
        programs: "[[program]]\nname = \"web\"\ncommand = \"true\"\n[program.heartbeat]\nperiod = \"1h\"\nschedule = \"@daily\"\n",
        at: "schedule",
        says: &["`heartbeat.schedule`: `period` (line ", "exclude each other in program `web`", "hint: keep `period`"],
    },
];

fn location(env: &TestEnv, at: &str) -> String {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let line = line_of(&text, at);
    let col = text.lines().nth(line - 1).unwrap().find(at).unwrap() + 1;
    format!("supervisor.toml:{line}:{col}")
}

#[test]
fn check_reports_each_error_with_its_location_and_exits_2() {
    for case in CASES {
        let env = TestEnv::with_config(case.programs);
        let out = env.ward(&["check"]);
        let loc = location(&env, case.at);
        env.check(
            out.code() == Some(2),
            format!("{}: exit code\n{out}", case.what),
        );
        env.check(
            out.stderr.contains(&format!(
                "error: {}{loc}: ",
                env.root.display().to_string() + "/"
            )),
            format!("{}: want location {loc}\n{out}", case.what),
        );
        for s in case.says {
            env.check(
                out.stderr.contains(s),
                format!("{}: want `{s}`\n{out}", case.what),
            );
        }
        env.check(
            out.stderr.contains("1 error in"),
            format!("{}: want one error counted\n{out}", case.what),
        );
    }
}

#[test]
fn up_refuses_an_invalid_config_with_the_same_messages() {
    let all: String = CASES
        .iter()
        .map(|c| {
            format!(
                "{}\n",
                c.programs
                    .replace("\"web\"", &format!("\"web-{}\"", c.what.replace(' ', "-")))
            )
        })
        .collect();
    let env = TestEnv::with_config(&all);
    let check = env.ward(&["check"]);
    env.check(check.code() == Some(2), format!("check\n{check}"));
    env.check(
        check.stderr.contains(&format!("{} errors in", CASES.len())),
        format!("every error reported at once\n{check}"),
    );
    let up = env.ward(&["up"]);
    env.check(up.code() == Some(2), format!("up should refuse\n{up}"));
    env.check(
        up.stderr == check.stderr,
        format!("up and check disagree\n{up}\n{check}"),
    );
    env.check(
        !env.state_dir.exists(),
        "up created the state dir for an invalid config",
    );
}

#[test]
fn the_example_config_passes_check() {
    let env = TestEnv::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/supervisor.toml.example");
    let mut cmd = std::process::Command::new(crate::support::ward_bin());
    cmd.args(["check", "-c", example]);
    let out = env.run(cmd);
    env.check(out.code() == Some(0), format!("example config\n{out}"));
    env.check(
        out.stdout.contains(": ok (3 programs, 4 instances"),
        format!("summary\n{out}"),
    );
}

#[test]

fn config_errors_end_with_a_newline() {
    let env = TestEnv::with_config(CASES[0].programs);
    let out = env.ward(&["check"]);
    env.check(out.code() == Some(2), format!("exit code\n{out}"));
    env.check(
        out.stderr.ends_with('\n'),
        format!("stderr does not end with a newline: {:?}", out.stderr),
    );
}
