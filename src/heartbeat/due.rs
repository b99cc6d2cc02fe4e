//! Jobs that must report their runs on time (`heartbeat.period` or
//! `heartbeat.schedule`, with `grace`): the pure clock that says when an
//! instance turns `late`, after healthchecks.io.
//!
//! The clock starts with the instance's actor (ward's start, or the reload
//! that changed the program). Every finished run, successful or not, starts
//! it again: the next run is due `period` later, or at the schedule's next
//! time, and the instance is late `grace` after that. A run reported as
//! started must finish within `grace`. `late` means "did not run"; a run that
//! ran and failed is a failure, not lateness.
//!
//! Deadlines are on the monotonic clock. A schedule's next time is found on
//! the wall clock and converted; if the wall clock was set back meanwhile,
//! the deadline waits for the wall clock. No I/O and no clock here: the
//! actor passes [`Now`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Cadence;
use crate::program::human;

/// Both clocks at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    /// Unix ms.
    pub wall_ms: u64,
}

/// What a job says about one of its runs (`ward run`, `/ping/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunReport {
    Started,
    Succeeded,
    Failed,
}

/// Where a job stands, for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// No run finished yet, and none is overdue.
    NotYet,
    Succeeded,
    Failed,
    Late,
}

/// What status shows of a job's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Unix ms at which the instance turns `late` unless a run is reported
    /// first; absent while it is late.
    pub late_at_ms: Option<u64>,
    /// Unix ms since which it is late.
    pub late_since_ms: Option<u64>,
    /// Unix ms at which the run now going on started.
    pub run_started_ms: Option<u64>,
    /// How the last finished run ended; absent before the first.
    pub last_run_ok: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Due {
    mono: Instant,
    /// The same moment, Unix ms.
    wall_ms: u64,
    /// When the run was expected (`wall_ms` less the grace).
    expected_ms: u64,
}

/// Why a job is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// No run finished by the deadline.
    NoRun { expected_ms: u64 },
    /// A run started and did not finish within grace.
    Unfinished { started_ms: u64 },
}

/// The lateness clock of one instance.
#[derive(Debug, Clone)]
pub struct JobClock {
    cadence: Cadence,
    grace: Duration,
    /// Unix ms the clock counts from: its start, or the last finished run.
    from_ms: u64,
    due: Option<Due>,
    /// A run that started and has not finished: (when, Unix ms).
    started: Option<Now>,
    last_ok: Option<bool>,
    /// Why and since when (Unix ms) the job is late.
    late: Option<(Late, u64)>,
}

impl JobClock {
    /// A clock that starts now: the first run is due one period (or at the
    /// schedule's next time) from now.
    pub fn new(cadence: Cadence, grace: Duration, now: Now) -> JobClock {
        let mut clock = JobClock {
            cadence,
            grace,
            from_ms: now.wall_ms,
            due: None,
            started: None,
            last_ok: None,
            late: None,
        };
        clock.arm(now);
        clock
    }

    /// Expect the next run after `now`.
    fn arm(&mut self, now: Now) {
        self.from_ms = now.wall_ms;
        let grace_ms = self.grace.as_millis() as u64;
        self.due = match self.cadence {
            Cadence::Period(period) => Some(Due {
                mono: now.mono + period + self.grace,
                wall_ms: now.wall_ms + period.as_millis() as u64 + grace_ms,
                expected_ms: now.wall_ms + period.as_millis() as u64,
            }),
            Cadence::Schedule(cron, zone) => cron
                .next_after((now.wall_ms / 1000) as i64, zone)
                .map(|secs| {
                    let expected_ms = (secs.max(0) as u64) * 1000;
                    let wall_ms = expected_ms + grace_ms;
                    Due {
                        mono: now.mono + Duration::from_millis(wall_ms.saturating_sub(now.wall_ms)),
                        wall_ms,
                        expected_ms,
                    }
                }),
        };
    }

    /// Take a report of a run into account.
    pub fn report(&mut self, report: RunReport, now: Now) {
        match report {
            RunReport::Started => {
                self.started = Some(now);
                if self.late.is_none() {
                    self.due = Some(Due {
                        mono: now.mono + self.grace,
                        wall_ms: now.wall_ms + self.grace.as_millis() as u64,
                        expected_ms: now.wall_ms,
                    });
                }
            }
            RunReport::Succeeded | RunReport::Failed => {
                self.started = None;
                self.last_ok = Some(report == RunReport::Succeeded);
                self.late = None;
                self.arm(now);
            }
        }
    }

    /// When [`JobClock::check`] should next be called; `None` while late
    /// (only a finished run changes anything then).
    pub fn deadline(&self) -> Option<Instant> {
        self.due.map(|d| d.mono)
    }

    /// At or past the deadline the job turns late; true when it just did.
    pub fn check(&mut self, now: Now) -> bool {
        let Some(due) = self.due else { return false };
        if now.mono < due.mono {
            return false;
        }
        let scheduled = matches!(self.cadence, Cadence::Schedule(..));
        if scheduled && self.started.is_none() && now.wall_ms < due.wall_ms {
            // The wall clock was set back: the schedule's time has not come.
            self.due = Some(Due {
                mono: now.mono + Duration::from_millis(due.wall_ms - now.wall_ms),
                ..due
            });
            return false;
        }
        let why = match self.started {
            Some(s) => Late::Unfinished {
                started_ms: s.wall_ms,
            },
            None => Late::NoRun {
                expected_ms: due.expected_ms,
            },
        };
        self.late = Some((why, now.wall_ms));
        self.due = None;
        true
    }

    pub fn is_late(&self) -> bool {
        self.late.is_some()
    }

    pub fn state(&self) -> JobState {
        match (self.late, self.last_ok) {
            (Some(_), _) => JobState::Late,
            (None, Some(true)) => JobState::Succeeded,
            (None, Some(false)) => JobState::Failed,
            (None, None) => JobState::NotYet,
        }
    }

    pub fn view(&self) -> JobView {
        JobView {
            late_at_ms: self.due.map(|d| d.wall_ms),
            late_since_ms: self.late.map(|(_, since)| since),
            run_started_ms: self.started.map(|s| s.wall_ms),
            last_run_ok: self.last_ok,
        }
    }

    /// Why the job is late, in words; `None` when it is not.
    pub fn why_late(&self) -> Option<String> {
        let (why, since) = self.late?;
        let grace = human(self.grace);
        Some(match (why, self.cadence) {
            (Late::Unfinished { started_ms }, _) => format!(
                "a run started {} ago and has not finished within grace ({grace})",
                human(Duration::from_millis(since.saturating_sub(started_ms)))
            ),
            (Late::NoRun { .. }, Cadence::Period(period)) => format!(
                "no finished run for {} (period {} + grace {grace})",
                human(Duration::from_millis(since.saturating_sub(self.from_ms))),
                human(period)
            ),
            (Late::NoRun { expected_ms }, Cadence::Schedule(_, zone)) => format!(
                "the run due at {} was not reported within grace ({grace})",
                zone.format((expected_ms / 1000) as i64)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::{Cron, Zone};

    const GRACE: Duration = Duration::from_millis(300);

    /// A moment `ms` after `t0` on both clocks.
    fn at(t0: Instant, ms: u64) -> Now {
        Now {
            mono: t0 + Duration::from_millis(ms),
            wall_ms: 1_700_000_000_000 + ms,
        }
    }

    fn period_clock(t0: Instant) -> JobClock {
        JobClock::new(
            Cadence::Period(Duration::from_millis(1000)),
            GRACE,
            at(t0, 0),
        )
    }

    #[test]
    fn a_period_counts_from_the_start_then_from_each_finished_run() {
        let t0 = Instant::now();
        let mut c = period_clock(t0);
        assert_eq!(c.state(), JobState::NotYet);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(1300)));
        assert!(!c.check(at(t0, 1299)));
        c.report(RunReport::Succeeded, at(t0, 1000));
        assert_eq!(c.state(), JobState::Succeeded);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(2300)));
        assert_eq!(c.view().late_at_ms, Some(at(t0, 2300).wall_ms));
        // A failed run is a run: the clock restarts, the state says failed.
        c.report(RunReport::Failed, at(t0, 2000));
        assert_eq!(c.state(), JobState::Failed);
        assert!(!c.check(at(t0, 3299)));
        assert!(c.check(at(t0, 3300)));
        assert_eq!(c.state(), JobState::Late);
        assert_eq!(c.deadline(), None, "nothing more to wait for while late");
        assert!(!c.check(at(t0, 9000)), "late once, not again");
        assert_eq!(
            c.why_late().unwrap(),
            "no finished run for 1.3s (period 1s + grace 300ms)"
        );
        assert_eq!(c.view().late_since_ms, Some(at(t0, 3300).wall_ms));
        // The next finished run ends it.
        c.report(RunReport::Succeeded, at(t0, 9000));
        assert_eq!(c.state(), JobState::Succeeded);
        assert_eq!(c.why_late(), None);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(10_300)));
    }

    #[test]
    fn a_started_run_must_finish_within_grace() {
        let t0 = Instant::now();
        let mut c = period_clock(t0);
        c.report(RunReport::Started, at(t0, 100));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(400)));
        assert_eq!(c.view().run_started_ms, Some(at(t0, 100).wall_ms));
        assert!(c.check(at(t0, 400)));
        assert_eq!(
            c.why_late().unwrap(),
            "a run started 300ms ago and has not finished within grace (300ms)"
        );
        // Another start while late changes nothing; the finish does.
        c.report(RunReport::Started, at(t0, 500));
        assert_eq!((c.state(), c.deadline()), (JobState::Late, None));
        c.report(RunReport::Succeeded, at(t0, 600));
        assert_eq!(c.state(), JobState::Succeeded);
        assert_eq!(c.view().run_started_ms, None);
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(1900)));
    }

    #[test]
    fn a_schedule_is_due_at_its_next_time_plus_grace() {
        let t0 = Instant::now();
        // 2024-05-01 02:59:30 UTC; the job runs at 03:00.
        let wall = 1_714_532_370_000;
        let now = |ms: u64| Now {
            mono: t0 + Duration::from_millis(ms),
            wall_ms: wall + ms,
        };
        let cron = Cron::parse("0 3 * * *").unwrap();
        let grace = Duration::from_secs(600);
        let mut c = JobClock::new(Cadence::Schedule(cron, Zone::Utc), grace, now(0));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(30 + 600)));
        assert!(c.check(now(630_000)));
        assert_eq!(
            c.why_late().unwrap(),
            "the run due at 2024-05-01 03:00 UTC was not reported within grace (10m0s)"
        );
        // A run at 03:20 is due again tomorrow at 03:00, late at 03:10.
        c.report(RunReport::Succeeded, now(1_230_000));
        let tomorrow = 86_400_000 + 30_000 + 600_000;
        assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(tomorrow)));
        assert_eq!(c.view().late_at_ms, Some(wall + tomorrow));
    }

    #[test]
    fn a_schedule_waits_for_a_wall_clock_set_back() {
        let t0 = Instant::now();
        let wall = 1_714_532_370_000; // 02:59:30 UTC
        let cron = Cron::parse("0 3 * * *").unwrap();
        let mut c = JobClock::new(
            Cadence::Schedule(cron, Zone::Utc),
            GRACE,
            Now {
                mono: t0,
                wall_ms: wall,
            },
        );
        // The monotonic deadline passes, but the wall clock was set back a minute.
        let step = Now {
            mono: t0 + Duration::from_millis(30_300),
            wall_ms: wall + 30_300 - 60_000,
        };
        assert!(!c.check(step));
        assert_eq!(c.deadline(), Some(step.mono + Duration::from_secs(60)));
        assert!(c.check(Now {
            mono: step.mono + Duration::from_secs(60),
            wall_ms: wall + 30_300,
        }));
    }
}
