//! Program states and the pure decisions between them.
//!
//! No I/O and no clock here: the actor passes `now`-derived durations and a
//! random number in, and performs what comes out. Tested by tables below.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff;
use crate::config::{Program, RestartPolicy};
use crate::exit::Exit;

/// The state of one instance, as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not running, and nothing will start it but a user.
    Stopped,
    /// Waiting for the programs in `depends_on` to be running.
    Waiting,
    /// Spawned; has not yet stayed up for `min_uptime`.
    Starting,
    /// Up for at least `min_uptime`.
    Running,
    /// Sent its stop signal; waiting for it (and its group) to exit. Also
    /// entered when the main process exited on its own but left processes in
    /// its group: the exit is recorded (no pid) while they are stopped.
    Stopping,
    /// Exited; will be started again when the backoff delay ends.
    Backoff,
    /// Exited, and the restart policy says to leave it down.
    Exited,
    /// Gave up after `max_restarts` short runs.
    Fatal,
    /// Only in status reports: the recorded pid is not the process ward
    /// started. No actor is ever in it, so the status tables never get it
    /// (docs/ARCHITECTURE.md, "Status never lies", says why).
    Unknown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Stopped => "stopped",
            Phase::Waiting => "waiting",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Backoff => "backoff",
            Phase::Exited => "exited",
            Phase::Fatal => "fatal",
            Phase::Unknown => "unknown",
        }
    }

    /// Up, or on its way up: not left down by a stop, the restart policy or
    /// `fatal`. Restarting it (reload, watch mode) should bring it back up.
    pub fn is_wanted_up(self) -> bool {
        !matches!(self, Phase::Stopped | Phase::Exited | Phase::Fatal)
    }

    /// A child process exists in this phase.
    pub fn has_process(self) -> bool {
        matches!(self, Phase::Starting | Phase::Running | Phase::Stopping)
    }
}

/// `5/6 running, 1 fatal`: the one-line summary shown by `ward status` and
/// sent to systemd as `STATUS=`. Other states follow `running` in name order.
pub fn summary(phases: impl IntoIterator<Item = Phase>) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut total = 0;
    for p in phases {
        total += 1;
        *counts.entry(p.as_str()).or_default() += 1;
    }
    let running = counts.remove("running").unwrap_or(0);
    let mut s = format!("{running}/{total} running");
    for (state, n) in counts {
        s.push_str(&format!(", {n} {state}"));
    }
    s
}

/// What to do once a run has ended on its own (not stopped by a user).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterExit {
    /// Start again after `delay`; `streak` short runs so far.
    Restart { delay: Duration, streak: u32 },
    /// The restart policy says this exit is final.
    Exited { streak: u32 },
    /// Too many short runs in a row.
    Fatal { streak: u32 },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The process ran and exited.
    Exited(Exit),
    /// The process could not be started at all (bad command, bad cwd, ...).
    SpawnFailed,
}

/// Decide what follows an exit.
///
/// `streak` counts the consecutive runs before this one that ended before
/// `stable_after`; a run at least that long resets it. `max_restarts`
/// restarts are allowed in a streak (0 = unlimited), after which the program
/// is fatal.
pub fn after_exit(
    p: &Program,
    end: RunEnd,
    ran_for: Duration,
    streak: u32,
    unit_random: f64,
) -> AfterExit {
    let streak = if ran_for >= p.stable_after {
        0
    } else {
        streak.saturating_add(1)
    };
    let wanted = match p.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => match end {
            RunEnd::Exited(exit) => !exit.is_success(&p.exit_codes),
            RunEnd::SpawnFailed => true,
        },
        RestartPolicy::Never => false,
    };
    if !wanted {
        return AfterExit::Exited { streak };
    }
    if p.max_restarts > 0 && streak > p.max_restarts {
        return AfterExit::Fatal { streak };
    }
    let delay = backoff::delay(&p.backoff, streak.saturating_sub(1), unit_random);
    AfterExit::Restart { delay, streak }
}

#[cfg(test)]
pub(crate) fn test_program() -> Program {
    use crate::config::{defaults, BackoffPolicy, CommandSpec, LogPolicy};
    Program {
        name: "t".into(),
        command: CommandSpec::Shell("true".into()),
        cwd: None,
        env: Default::default(),
        user: None,
        group: None,
        autostart: true,
        instances: 1,
        depends_on: vec![],
        restart: RestartPolicy::OnFailure,
        exit_codes: vec![0],
        min_uptime: defaults::MIN_UPTIME,
        backoff: BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.0,
        },
        stable_after: Duration::from_secs(30),
        max_restarts: 3,
        fatal_retry: None,
        stop_signal: nix::sys::signal::Signal::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        log: LogPolicy::default(),
        watch: vec![],
        watch_ignore: vec![],
        watch_delay: defaults::WATCH_DELAY,
        ready: defaults::READY,
        ready_timeout: defaults::READY_TIMEOUT,
        heartbeat: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(500);
    const LONG: Duration = Duration::from_secs(31);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn policy_table() {
        use AfterExit::*;
        use RestartPolicy::*;
        let cases = [
            // (policy, exit, ran_for, streak before) -> expected
            (
                OnFailure,
                Exit::Code(1),
                SHORT,
                0,
                Restart {
                    delay: secs(1),
                    streak: 1,
                },
            ),
            (OnFailure, Exit::Code(0), SHORT, 0, Exited { streak: 1 }),
            (
                OnFailure,
                Exit::Signal(9),
                SHORT,
                1,
                Restart {
                    delay: secs(2),
                    streak: 2,
                },
            ),
            (
                Always,
                Exit::Code(0),
                SHORT,
                2,
                Restart {
                    delay: secs(4),
                    streak: 3,
                },
            ),
            (Always, Exit::Code(0), SHORT, 3, Fatal { streak: 4 }),
            (Never, Exit::Code(1), SHORT, 0, Exited { streak: 1 }),
            // A stable run resets the streak and the delay.
            (
                Always,
                Exit::Code(1),
                LONG,
                3,
                Restart {
                    delay: secs(1),
                    streak: 0,
                },
            ),
        ];
        for (policy, exit, ran_for, streak, want) in cases {
            let mut p = test_program();
            p.restart = policy;
            assert_eq!(
                after_exit(&p, RunEnd::Exited(exit), ran_for, streak, 0.5),
                want,
                "{policy:?} {exit} {ran_for:?} {streak}"
            );
        }
    }

    #[test]
    fn exit_codes_count_as_success() {
        let mut p = test_program();
        p.exit_codes = vec![0, 3];
        assert_eq!(
            after_exit(&p, RunEnd::Exited(Exit::Code(3)), SHORT, 0, 0.5),
            AfterExit::Exited { streak: 1 }
        );
    }

    #[test]
    fn spawn_failures_restart_unless_never() {
        let mut p = test_program();
        assert!(matches!(
            after_exit(&p, RunEnd::SpawnFailed, Duration::ZERO, 0, 0.5),
            AfterExit::Restart { .. }
        ));
        p.restart = RestartPolicy::Never;
        assert_eq!(
            after_exit(&p, RunEnd::SpawnFailed, Duration::ZERO, 0, 0.5),
            AfterExit::Exited { streak: 1 }
        );
    }

    #[test]
    fn unlimited_restarts_never_fatal() {
        let mut p = test_program();
        p.max_restarts = 0;
        match after_exit(&p, RunEnd::Exited(Exit::Code(1)), SHORT, 10_000, 0.5) {
            AfterExit::Restart { delay, .. } => assert_eq!(delay, secs(60)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_restarts_allows_that_many_restarts() {
        let p = test_program(); // max_restarts = 3
        let mut streak = 0;
        let mut restarts = 0;
        loop {
            match after_exit(&p, RunEnd::Exited(Exit::Code(1)), SHORT, streak, 0.5) {
                AfterExit::Restart { streak: s, .. } => {
                    restarts += 1;
                    streak = s;
                }
                AfterExit::Fatal { .. } => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(restarts, 3);
    }
}
