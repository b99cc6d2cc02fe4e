//! SIGKILL of ward while its status-table writer is in the middle of a
//! batch (SQLite): the file stays sound, the rows converge to the live state
//! after the next `ward up`, the old run leaves no process, and the events
//! table holds no duplicate.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};

use crate::support::{alive, proc_stat, processes_with_env, TestEnv, DEADLINE};

/// Programs that crash-loop while the file `churn` exists: each cycle is a
/// start, an exit, a backoff and a restart, so the writer is kept busy.
const PROGRAMS: usize = 40;
const KILLS: usize = 4;
/// How long one cycle may wait for the writer to be seen at work.
const BUSY_DEADLINE: Duration = Duration::from_secs(15);

fn config(env: &TestEnv) -> String {
    let mut c = format!(
        "[supervisor]\nstate_dir = \"{}\"\n\n[store]\nrefresh = \"500ms\"\n\n",
        env.state_dir.display()
    );
    for i in 0..PROGRAMS {
        c.push_str(&format!(
            "[[program]]\nname = \"churn{i}\"\n\
             command = \"if [ -e churn ]; then sleep 0.{}; exit 1; fi; exec sleep 1000\"\n\
             min_uptime = \"0s\"\nmax_restarts = 0\n\
             backoff = {{ initial = \"20ms\", max = \"20ms\", jitter = 0.0 }}\n\
             env = {{ WARD_FAULT_MARK = \"{}\" }}\n\n",
            i % 5 + 1,
            mark(env)
        ));
    }
    c
}

fn mark(env: &TestEnv) -> String {
    format!("{}/churn", env.root.display())
}

/// The state letter of every thread of `pid` that runs SQLite statements
/// (sqlx names them `sqlx-sqlite-worker-N`; `comm` keeps 15 bytes).
fn sqlite_thread_states(pid: i32) -> Vec<char> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = fs::read_to_string(t.path().join("comm")).ok()?;
            if !comm.starts_with("sqlx-sqlite") {
                return None;
            }
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            stat[stat.rfind(')')? + 1..].trim_start().chars().next()
        })
        .collect()
}

/// Poll ward's SQLite threads until one is at work (running or in disk
/// I/O) for the `skip + 1`-th separate time; then SIGKILL ward at once.
/// Whether the kill landed while a statement ran.
fn kill_mid_write(env: &TestEnv, skip: u32) -> bool {
    let ward = env.daemon_pid();
    let end = Instant::now() + BUSY_DEADLINE;
    let (mut seen, mut was_busy) = (0u32, false);
    let busy = loop {
        let busy = sqlite_thread_states(ward)
            .iter()
            .any(|s| *s == 'R' || *s == 'D');
        if busy && !was_busy {
            if seen == skip {
                break true;
            }
            seen += 1;
        }
        was_busy = busy;
        if Instant::now() >= end {
            break false;
        }
        std::hint::spin_loop();
    };
    env.signal_daemon(libc::SIGKILL);
    env.wait_daemon_exit(DEADLINE);
    busy
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A connection to the SQLite file, opened read-write so that a WAL left
/// by a killed ward is recovered, as any reader would.
async fn connect(db: &Path) -> SqliteConnection {
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(10));
    SqliteConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()))
}

fn integrity(db: &Path) -> Vec<String> {
    block_on(async {
        let mut c = connect(db).await;
        let check = sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
            .fetch_all(&mut c)
            .await
            .expect("integrity_check");
        let _ = c.close().await;
        check
    })
}

/// (id, name, event, pid, at) of every event, in id order.
type EventKey = (i64, String, String, Option<i64>, String);

fn all_events(db: &Path) -> Vec<EventKey> {
    block_on(async {
        let mut c = connect(db).await;
        let rows = sqlx::query("SELECT id, name, event, pid, at FROM worker_events ORDER BY id")
            .fetch_all(&mut c)
            .await
            .expect("read worker_events");
        let _ = c.close().await;
        rows.into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    })
}

/// How many events the table holds (0 before it exists).
fn event_count(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    block_on(async {
        let mut c = connect(db).await;
        let n = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM worker_events")
            .fetch_one(&mut c)
            .await
            .unwrap_or(0);
        let _ = c.close().await;
        n
    })
}

/// A pseudo-random number below `n` (the clock's nanoseconds).
fn random_below(n: u32) -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_micros() % n)
        .unwrap_or(0)
}

fn db_workers(env: &TestEnv) -> Option<Vec<Value>> {
    let out = env.ward(&["status", "--db", "--json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v["workers"].as_array().cloned()
}

#[test]
fn sigkill_of_ward_mid_batch_leaves_consistent_tables() {
    let env = TestEnv::new();
    env.write_config(&config(&env));
    fs::write(env.root.join("churn"), "").unwrap();
    let db = env.state_dir.join("ward.db");
    let needle = format!("WARD_FAULT_MARK={}", mark(&env));
    let mut mid_write = 0;
    env.up();
    for round in 1..=KILLS {
        let before = event_count(&db);
        env.wait_until("the writer records the churn", DEADLINE, || {
            event_count(&db) > before + PROGRAMS as i64
        });
        let old = processes_with_env(&needle);
        let busy = kill_mid_write(&env, random_below(8));
        mid_write += usize::from(busy);
        eprintln!(
            "kill {round}: {}",
            if busy {
                "while a statement ran"
            } else {
                "the writer was never seen busy"
            }
        );
        let check = integrity(&db);
        env.check(
            check == ["ok"],
            format!("integrity_check after kill {round}: {check:?}"),
        );
        if round == KILLS {
            // The last run settles: every program runs for good.
            fs::remove_file(env.root.join("churn")).unwrap();
        }
        env.up();
        env.wait_until("no process of the killed run is alive", DEADLINE, || {
            old.iter().all(|p| !alive(*p))
        });
    }
    env.check(
        mid_write * 2 >= KILLS,
        format!("only {mid_write} of {KILLS} kills landed while the writer ran a statement"),
    );

    let ward = env.daemon_pid();
    let mut live: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut marked: Vec<i32> = Vec::new();
    let mut pids: Vec<i32> = Vec::new();
    // No orphan: once every program runs for good, the marked processes are
    // exactly the live run's children. Polled: a run that started before the
    // churn file went away is still ending (its shell and `sleep`) for a
    // moment after the program's next run is up.
    let mut look = || {
        let s = env.status_json();
        live = s["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "running")
            .map(|p| {
                let name = p["name"].as_str().unwrap_or("").to_string();
                let pid = p["pid"].as_i64().unwrap_or(0);
                (name, (pid, p["restarts"].as_i64().unwrap_or(-1)))
            })
            .collect();
        marked = processes_with_env(&needle);
        marked.sort_unstable();
        pids = live.values().map(|(pid, _)| *pid as i32).collect();
        pids.sort_unstable();
        live.len() == PROGRAMS
            && marked == pids
            && marked
                .iter()
                .all(|p| proc_stat(*p).is_some_and(|s| s.ppid == ward))
    };
    let end = Instant::now() + DEADLINE;
    let settled = loop {
        if look() {
            break true;
        }
        if Instant::now() >= end {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20)); // poll interval of the deadline loop
    };
    env.check(
        settled,
        format!(
            "{} of {PROGRAMS} running; marked processes {marked:?}, live pids {pids:?}",
            live.len()
        ),
    );
    // Every row converges to the live state.
    let end = Instant::now() + DEADLINE;
    let mut mismatch = String::new();
    while Instant::now() < end {
        let table: BTreeMap<String, (String, i64, i64)> = db_workers(&env)
            .unwrap_or_default()
            .iter()
            .map(|w| {
                let name = w["name"].as_str().unwrap_or("").to_string();
                let state = w["state"].as_str().unwrap_or("").to_string();
                let pid = w["pid"].as_i64().unwrap_or(0);
                (name, (state, pid, w["restarts"].as_i64().unwrap_or(-1)))
            })
            .collect();
        let same = table.len() == PROGRAMS
            && live.iter().all(|(name, (pid, restarts))| {
                table.get(name) == Some(&("running".to_string(), *pid, *restarts))
            });
        if same {
            mismatch.clear();
            break;
        }
        mismatch = format!("table {table:?}\nlive {live:?}");
        std::thread::sleep(Duration::from_millis(50)); // poll interval of the deadline loop
    }
    env.check(
        mismatch.is_empty(),
        format!("the rows did not converge to the live state within {DEADLINE:?}: {mismatch}"),
    );
    let check = integrity(&db);
    env.check(
        check == ["ok"],
        format!("integrity_check at the end: {check:?}"),
    );
    // One supervisors row, naming the live daemon (written at its first refresh).
    let mut hosts = Value::Null;
    env.wait_until(
        "the supervisors row names the live daemon",
        DEADLINE,
        || {
            let out = env.ward_ok(&["status", "--db", "--json"]);
            let v: Value = serde_json::from_str(&out.stdout).expect("status --db JSON");
            hosts = v["hosts"].clone();
            hosts[0]["pid"] == ward
        },
    );
    env.check(
        hosts.as_array().is_some_and(|h| h.len() == 1),
        format!("one supervisors row: {hosts}"),
    );

    let events = all_events(&db);
    let mut ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    ids.dedup();
    env.check(
        !events.is_empty() && ids.len() == events.len(),
        "event ids are unique",
    );
    // Per worker, in id order, time never goes back.
    let mut last_at: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, name, _, _, at) in &events {
        if let Some(prev) = last_at.insert(name, at) {
            env.check(
                prev <= at.as_str(),
                format!("event {id} of {name} at {at} comes after one at {prev}"),
            );
        }
    }
    // No transition recorded twice (a batch written again after the kill).
    let mut seen = BTreeMap::new();
    for (id, name, event, pid, at) in &events {
        if let Some(first) = seen.insert((name, event, pid, at), id) {
            env.fail(&format!(
                "events {first} and {id} are the same `{event}` of {name} (pid {pid:?}) at {at}"
            ));
        }
    }
    eprintln!(
        "{KILLS} kills, {mid_write} while a statement ran; {} events, rows converged",
        events.len()
    );
}
