//! The status tables, through the real `ward` binary, against SQLite and
//! against a real PostgreSQL server started by the test itself.
//!
//! Each test body is written once and run per backend (`both!` below). The
//! PostgreSQL harness runs `initdb` and `pg_ctl` from the machine's binaries
//! (as the `postgres` user when the tests run as root) on a temp dir and a
//! free loopback port, and stops and removes the server on drop, so a
//! panicking test leaves nothing running. Everything polls with deadlines.

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Output, TestEnv};

const PG_HINT: &str = "install postgresql (apt-get install postgresql)";

/// The PostgreSQL binaries: on PATH, else the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Often symlinks (/usr/local/bin/initdb): the other tools sit beside the target.
                let real = fs::canonicalize(dir.join("initdb")).ok()?;
                return real.parent().map(PathBuf::from);
            }
        }
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A throwaway PostgreSQL server: stopped and deleted on drop.
struct Pg {
    _dir: tempfile::TempDir,
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    url: String,
}

impl Pg {
    fn start() -> Pg {
        let bin = pg_bin_dir().unwrap_or_else(|| {
            panic!("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: {PG_HINT}")
        });
        let dir = tempfile::Builder::new()
            .prefix("ward-pg.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("running as root needs the `postgres` user: {PG_HINT}"));
            nix::unistd::chown(&root, Some(pg.uid), Some(pg.gid)).expect("chown the pg dir");
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let port = free_port();
        let pg = Pg {
            _dir: dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/ward"),
            root,
            bin,
            port,
        };
        let data = pg.root.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg.ctl_start();
        pg.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "ward",
            ],
        );
        pg
    }

    /// Run a PostgreSQL tool, as `postgres` when we are root.
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if nix::unistd::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.root);
        let out = support::run(cmd, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{tool} failed\n{out}\n--- server log ---\n{}",
            fs::read_to_string(self.root.join("log")).unwrap_or_default()
        );
        out
    }

    fn ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.root.display()
        );
        let data = self.root.join("data");
        let log = self.root.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
    }

    fn ctl_stop(&self) {
        let data = self.root.join("data");
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.root.join("data");
        if data.join("postmaster.pid").exists() {
            let exe = self.bin.join("pg_ctl");
            let mut cmd = if nix::unistd::geteuid().is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            cmd.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = support::run(cmd, Duration::from_secs(30));
        }
    }
}

/// Where a test's daemon writes: the default SQLite file, or a fresh server.
struct Backend {
    pg: Option<Pg>,
}

impl Backend {
    fn sqlite() -> Backend {
        Backend { pg: None }
    }

    fn postgres() -> Backend {
        Backend {
            pg: Some(Pg::start()),
        }
    }

    /// The `[supervisor]` lines naming the database (none: the default file).
    fn database_line(&self) -> String {
        match &self.pg {
            Some(pg) => format!("database = \"{}\"\n", pg.url),
            None => String::new(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A config for `env` writing to `b`, refreshing every 500ms, with `programs`.
fn configure(env: &TestEnv, b: &Backend, programs: &str) {
    env.write_config(&format!(
        "[supervisor]\nstate_dir = \"{}\"\nhost = \"test-host\"\n{}\n[store]\nrefresh = \"500ms\"\n\n{programs}",
        env.state_dir.display(),
        b.database_line()
    ));
}

const CRASHY: &str = r#"
[[program]]
name = "crashy"
command = "sleep 0.1; exit 3"
min_uptime = "0s"
max_restarts = 0
backoff = { initial = "200ms", max = "200ms", jitter = 0.0 }
"#;

/// Holds 20 MB (a shell variable) a moment after it runs, then sleeps.
const GROWER: &str = r#"
[[program]]
name = "grower"
command = "sleep 1.5; x=$(head -c 20000000 /dev/zero | tr '\\0' a); sleep 1000"
autostart = false
"#;

const STEADY: &str = r#"
[[program]]
name = "steady"
command = "sleep 1000"
"#;

/// `ward status --db --json`, parsed; `None` while the tables are not there yet.
fn db_status(env: &TestEnv, extra: &[&str]) -> Option<Value> {
    let mut args = vec!["status", "--db", "--json"];
    args.extend_from_slice(extra);
    let out = env.ward(&args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

fn db_worker(env: &TestEnv, name: &str) -> Option<Value> {
    db_status(env, &[])?["workers"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
}

fn events(env: &TestEnv, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json", "-n", "100000"];
    all.extend_from_slice(args);
    let out = env.ward_ok(&all);
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| env.fail(&format!("bad event line {l:?}: {e}")))
        })
        .collect()
}

fn rows_follow_state_changes(b: Backend) {
    let env = TestEnv::new();
    configure(&env, &b, &format!("{STEADY}{CRASHY}{GROWER}"));
    env.up();
    let pid = env.running_pid("steady");
    env.wait_until("the steady row shows its pid", support::DEADLINE, || {
        db_worker(&env, "steady").is_some_and(|w| w["state"] == "running" && w["pid"] == pid)
    });
    env.wait_until(
        "the crashy row counts restarts and its exit",
        support::DEADLINE,
        || {
            db_worker(&env, "crashy")
                .is_some_and(|w| w["restarts"].as_i64() >= Some(2) && w["last_exit_code"] == 3)
        },
    );
    // Metrics arrive with the refresh.
    env.wait_until("steady has RSS and uptime", support::DEADLINE, || {
        db_worker(&env, "steady")
            .is_some_and(|w| w["rss_bytes"].as_i64() > Some(0) && w["uptime_ms"].as_i64().is_some())
    });
    // A steady process's metrics follow without a state change: `grower`
    // holds 20 MB more once running, and its row shows it within a few
    // refreshes (500 ms), well before the forced rewrite of every row (12).
    env.ward_ok(&["start", "grower"]);
    let rss = |w: &Value| w["rss_bytes"].as_i64().unwrap_or(0);
    env.wait_until("grower holds its 20 MB", support::DEADLINE, || {
        env.status_json()["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "grower"))
            .is_some_and(|p| p["rss_bytes"].as_i64() > Some(20_000_000))
    });
    let grown = Instant::now();
    env.wait_until(
        "the grower's row shows its RSS",
        Duration::from_secs(2),
        || db_worker(&env, "grower").is_some_and(|w| rss(&w) > 20_000_000),
    );
    eprintln!("RSS change in the table after {:?}", grown.elapsed());
    // A change shows within a second.
    env.ward_ok(&["stop", "steady"]);
    let stopped = Instant::now();
    env.wait_until(
        "the table shows steady stopped",
        Duration::from_secs(1),
        || db_worker(&env, "steady").is_some_and(|w| w["state"] == "stopped" && w["pid"].is_null()),
    );
    eprintln!("stop visible in the table after {:?}", stopped.elapsed());
    let status = db_status(&env, &[]).expect("status --db");
    let host = &status["hosts"][0];
    env.check(
        host["host"] == "test-host" && host["stale"] == false,
        format!("host row: {host}"),
    );
    let table = env.ward_ok(&["status", "--db"]).stdout;
    env.check(
        table.contains("HOST") && table.contains("test-host") && table.contains("crashy"),
        format!("table:\n{table}"),
    );
    // Down: the supervisor row is marked stopped and shows as stale.
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(support::DEADLINE);
    let status = db_status(&env, &[]).expect("status --db without a daemon");
    let host = &status["hosts"][0];
    env.check(
        host["stopped_at_ms"].is_i64() && host["stale"] == true,
        format!("host row after down: {host}"),
    );
    let table = env.ward_ok(&["status", "--db", "--all-hosts"]).stdout;
    env.check(
        table.contains("stopped"),
        format!("table after down:\n{table}"),
    );
}

fn events_are_recorded_and_shown(b: Backend) {
    let env = TestEnv::new();
    configure(&env, &b, CRASHY);
    env.up();
    env.wait_until(
        "three restarts are in worker_events",
        support::DEADLINE,
        || {
            env.ward(&["events", "crashy", "--json"])
                .stdout
                .matches("\"restarted\"")
                .count()
                >= 3
        },
    );
    let evs = events(&env, &["crashy"]);
    let exited = evs
        .iter()
        .find(|e| e["event"] == "exited")
        .expect("an exited event");
    env.check(
        exited["exit_code"] == 3 && exited["to_state"] == "backoff",
        format!("exited: {exited}"),
    );
    // The pid of the run that ended is in its exit and its backoff, and a
    // restart names the new process.
    let first_pid = evs.first().map(|e| e["pid"].clone()).unwrap_or_default();
    env.check(
        first_pid.as_i64().is_some_and(|p| p > 0) && exited["pid"] == first_pid,
        format!("the first run's pid {first_pid} in its exit: {exited}"),
    );
    let backoff = evs
        .iter()
        .find(|e| e["event"] == "backoff")
        .expect("a backoff event");
    let restarted = evs
        .iter()
        .find(|e| e["event"] == "restarted")
        .expect("a restarted event");
    env.check(
        backoff["pid"] == first_pid
            && restarted["pid"].as_i64().is_some_and(|p| p > 0)
            && restarted["pid"] != first_pid,
        format!("backoff {backoff} and restarted {restarted} after pid {first_pid}"),
    );
    env.check(
        evs.iter()
            .any(|e| e["event"] == "backoff" && e["delay_ms"] == 200),
        "a backoff event with the 200ms delay",
    );
    env.check(
        evs.first().is_some_and(|e| e["event"] == "started"),
        format!("first event: {:?}", evs.first()),
    );
    let text = env.ward_ok(&["events", "-n", "5"]).stdout;
    env.check(
        text.lines().count() == 5 && text.contains("crashy"),
        format!("ward events:\n{text}"),
    );
    // --since filters; the daemon need not run.
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(support::DEADLINE);
    env.check(
        !events(&env, &["--since", "1h"]).is_empty(),
        "events of the last hour",
    );
    let far = events(&env, &["nosuchprogram"]);
    env.check(far.is_empty(), "no events for an unknown name");
}

fn removed_programs_are_marked(b: Backend) {
    let env = TestEnv::new();
    let two = "[[program]]\nname = \"a\"\ncommand = \"sleep 1000\"\n\n[[program]]\nname = \"b\"\ncommand = \"sleep 1000\"\ninstances = 2\n";
    configure(&env, &b, two);
    env.up();
    env.wait_until("both programs are in the table", support::DEADLINE, || {
        db_worker(&env, "b:1").is_some_and(|w| w["state"] == "running")
    });
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(support::DEADLINE);
    configure(
        &env,
        &b,
        "[[program]]\nname = \"a\"\ncommand = \"sleep 1000\"\n",
    );
    env.up();
    env.wait_until("b's rows are marked removed", support::DEADLINE, || {
        ["b:0", "b:1"]
            .iter()
            .all(|n| db_worker(&env, n).is_some_and(|w| w["state"] == "removed"))
    });
    env.wait_until("a stays and runs", support::DEADLINE, || {
        db_worker(&env, "a").is_some_and(|w| w["state"] == "running")
    });
    let evs = events(&env, &["b"]);
    env.check(
        evs.iter().filter(|e| e["event"] == "removed").count() == 2,
        format!("removed events: {evs:?}"),
    );
}

fn migrations_apply_and_are_idempotent(b: Backend) {
    let env = TestEnv::new();
    configure(&env, &b, STEADY);
    fs::create_dir_all(&env.state_dir).expect("state dir");
    let first = env.ward_ok(&["db", "migrate"]).stdout;
    env.check(
        first.contains("applied 0001 status tables") && first.contains("applied 0002 heartbeats"),
        format!("first migrate:\n{first}"),
    );
    let second = env.ward_ok(&["db", "migrate"]).stdout;
    env.check(
        second.contains("up to date (2 migrations)"),
        format!("second migrate:\n{second}"),
    );
    // The daemon migrates too, and finds nothing to do.
    env.up();
    env.wait_until("the row appears", support::DEADLINE, || {
        db_worker(&env, "steady").is_some_and(|w| w["state"] == "running")
    });
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    env.check(
        !log.contains("applied a status-table migration"),
        "the daemon applied nothing",
    );
    let third = env.ward_ok(&["db", "migrate"]).stdout;
    env.check(
        third.contains("up to date"),
        format!("third migrate:\n{third}"),
    );
}

/// Status without the database: a missing SQLite file is an error with a hint.
#[test]
fn status_db_without_a_database_says_what_to_do() {
    let env = TestEnv::new();
    configure(&env, &Backend::sqlite(), STEADY);
    let out = env.ward(&["status", "--db"]);
    env.check(out.code() == Some(1), format!("exit code\n{out}"));
    env.check(
        out.stderr.contains("no database at") && out.stderr.contains("ward db migrate"),
        format!("message and hint\n{out}"),
    );
}

/// How long the outage test keeps PostgreSQL down (the issue's 30 s).
const OUTAGE: Duration = Duration::from_secs(30);

/// Stop PostgreSQL for 30 s while a program crash-loops and another is
/// stopped and started: ward keeps its restart timing, warns once, and when
/// the server is back the tables catch up by themselves with every event
/// kept in memory meanwhile.
#[test]
fn postgres_outage_of_30s_never_stalls_supervision_and_loses_nothing() {
    let b = Backend::postgres();
    let pg = b.pg.as_ref().expect("postgres");
    let env = TestEnv::new();
    configure(&env, &b, &format!("{STEADY}{CRASHY}"));
    env.up();
    env.wait_until("rows are written", support::DEADLINE, || {
        db_worker(&env, "crashy").is_some_and(|w| w["restarts"].as_i64() >= Some(1))
    });
    let restarts = |env: &TestEnv| env.prog("crashy")["restarts"].as_i64().unwrap_or(0);
    pg.ctl_stop();
    let stopped_at = Instant::now();
    let outage_from_ms = now_ms();
    // Through the whole outage: stop `steady` a third of the way in and
    // start it again at two thirds. The loop ends when the outage has lasted
    // OUTAGE; crashy's timing is checked afterwards from ward's own events.
    let (mut stopped_steady, mut started_steady) = (false, false);
    while stopped_at.elapsed() < OUTAGE {
        if !stopped_steady && stopped_at.elapsed() >= OUTAGE / 3 {
            env.ward_ok(&["stop", "steady"]);
            stopped_steady = true;
        }
        if !started_steady && stopped_at.elapsed() >= OUTAGE * 2 / 3 {
            env.ward_ok(&["start", "steady"]);
            started_steady = true;
        }
        std::thread::sleep(Duration::from_millis(50)); // poll interval of the deadline loop
    }
    // The daemon reports the outage.
    let s = env.status_json();
    env.check(
        s["store"]["connected"] == false && s["store"]["last_error"].is_string(),
        format!("store status during the outage: {}", s["store"]),
    );
    let table = env.ward_ok(&["status"]).stdout;
    env.check(
        table.contains("warning: status tables not written"),
        format!("status table:\n{table}"),
    );
    let steady_pid = env.running_pid("steady");
    let outage_to_ms = now_ms();
    pg.ctl_start();
    let back = Instant::now();
    env.wait_until(
        "the tables catch up after the outage",
        Duration::from_secs(15),
        || {
            let live = restarts(&env);
            db_worker(&env, "steady")
                .is_some_and(|w| w["state"] == "running" && w["pid"] == steady_pid)
                && db_worker(&env, "crashy")
                    .is_some_and(|w| w["restarts"].as_i64() >= Some(live - 2))
        },
    );
    eprintln!("caught up {:?} after the server came back", back.elapsed());
    env.wait_until(
        "ward status reports the store connected",
        support::DEADLINE,
        || env.status_json()["store"]["connected"] == true,
    );
    // Nothing kept in memory was lost: once crashy is stopped, the table has
    // one `restarted` event per restart ward counted, and no drop.
    env.ward_ok(&["stop", "crashy"]);
    let total = env.prog("crashy")["restarts"].as_i64().unwrap_or(-1);
    env.wait_until("crashy's final row is written", support::DEADLINE, || {
        db_worker(&env, "crashy")
            .is_some_and(|w| w["state"] == "stopped" && w["restarts"].as_i64() == Some(total))
    });
    let evs = events(&env, &["crashy"]);
    let restarted: Vec<i64> = evs
        .iter()
        .filter(|e| e["event"] == "restarted")
        .filter_map(|e| e["at_ms"].as_i64())
        .collect();
    // Supervision during the outage, by ward's own clock: a restart every
    // ~0.3 s (0.1 s of run, 0.2 s of backoff), however long the server is away.
    let mut during: Vec<i64> = restarted
        .iter()
        .copied()
        .filter(|at| (outage_from_ms..=outage_to_ms).contains(&(*at as u64)))
        .collect();
    during.sort_unstable();
    let worst_gap = during
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(i64::MAX);
    let cycle = OUTAGE.as_millis() as i64 / (during.len().max(1) as i64);
    eprintln!(
        "during the {OUTAGE:?} outage: {} restarts, one per {cycle} ms, longest gap {worst_gap} ms",
        during.len()
    );
    env.check(
        cycle < 500 && worst_gap < 1000,
        format!(
            "restarts during the outage: {} (one per {cycle} ms), longest gap {worst_gap} ms",
            during.len()
        ),
    );
    let restarted = restarted.len() as i64;
    env.check(
        restarted == total,
        format!("{restarted} `restarted` events in the table for {total} restarts"),
    );
    env.check(
        !evs.iter().any(|e| e["event"] == "events_dropped"),
        "no events_dropped marker",
    );
    let host = &db_status(&env, &[]).expect("status --db")["hosts"][0];
    env.check(
        host["dropped_events"] == 0,
        format!("no event dropped: {host}"),
    );
    let evs = events(&env, &["steady"]);
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["event"].as_str()).collect();
    env.check(
        kinds.contains(&"stopped") && kinds.iter().filter(|k| **k == "started").count() >= 2,
        format!("the stop and the start during the outage are in worker_events: {kinds:?}"),
    );
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    let warnings = log.matches("cannot write the status tables").count();
    env.check(
        warnings == 1,
        format!("one warning for the outage, got {warnings}"),
    );
    env.check(
        log.contains("reachable again"),
        "a note when the database is back",
    );
}

/// Run `sql` as an external worker would: `psql` against the test's
/// PostgreSQL, or a connection of its own to the SQLite file.
fn worker_sql(env: &TestEnv, b: &Backend, sql: &str) {
    match &b.pg {
        Some(pg) => {
            let mut cmd = Command::new(pg.bin.join("psql"));
            cmd.args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &pg.url,
                "-c",
                sql,
            ]);
            let out = env.run(cmd);
            env.check(out.status.success(), format!("psql failed\n{out}"));
        }
        None => {
            let url = format!("sqlite://{}", env.state_dir.join("ward.db").display());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let result = rt.block_on(async {
                let ward::store::Db::Sqlite(pool) = ward::store::Db::open(&url, false).await?
                else {
                    unreachable!("a sqlite URL");
                };
                let r = sqlx::query(sql).execute(&pool).await;
                pool.close().await;
                r.map(|_| ()).map_err(ward::store::StoreError::Query)
            });
            if let Err(e) = result {
                env.fail(&format!("sqlite: {}\n{sql}", e.chain()));
            }
        }
    }
}

/// The upsert of docs/HEARTBEATS.md, for `name` with `jobs` jobs done.
fn upsert(name: &str, jobs: u64) -> String {
    format!(
        "INSERT INTO heartbeats (name, status, jobs_processed, error_count, metadata, host, pid) \
         VALUES ('{name}', 'working', {jobs}, 1, '{{\"queue\": \"emails\"}}', 'app-1', 4242) \
         ON CONFLICT (name) DO UPDATE SET status = excluded.status, \
         jobs_processed = excluded.jobs_processed, error_count = excluded.error_count, \
         metadata = excluded.metadata, host = excluded.host, pid = excluded.pid"
    )
}

/// External `name` in `ward status --json`.
fn external(env: &TestEnv, name: &str) -> Value {
    env.status_json()["externals"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// A worker ward does not run writes its row; it shows up healthy with its
/// counters, goes stale then hung when the writes stop, recovers, and every
/// health change is in `worker_events`. Rows of undeclared names are ignored.
fn external_rows_show_up_and_go_stale(b: Backend) {
    let env = TestEnv::new();
    // PostgreSQL notifies at once; SQLite is polled every second.
    let (interval, hung_after, promptly) = match b.pg {
        Some(_) => ("200ms", "2s", Duration::from_secs(1)),
        None => ("1s", "4s", Duration::from_secs(3)),
    };
    configure(
        &env,
        &b,
        &format!("{STEADY}\n[[external]]\nname = \"billing\"\ndescription = \"invoices\"\ninterval = \"{interval}\"\nhung_after = \"{hung_after}\"\n"),
    );
    env.up();
    env.wait_until("the table was read: no row yet", support::DEADLINE, || {
        external(&env, "billing")["health"] == "stopped"
    });
    worker_sql(&env, &b, &upsert("billing", 7));
    let wrote = Instant::now();
    env.wait_until("the row shows up healthy", promptly, || {
        let x = external(&env, "billing");
        x["health"] == "healthy" && x["heartbeat"]["jobs_processed"] == 7
    });
    eprintln!("the row was seen {:?} after the write", wrote.elapsed());
    let x = external(&env, "billing");
    env.check(
        x["state"] == "external"
            && x["heartbeat"]["error_count"] == 1
            && x["heartbeat"]["status"] == "working"
            && x["heartbeat"]["metadata"]["queue"] == "emails"
            && x["worker_host"] == "app-1"
            && x["worker_pid"] == 4242
            && x["description"] == "invoices",
        format!("the external in status: {x}"),
    );
    worker_sql(&env, &b, &upsert("stranger", 1));
    env.wait_until(
        "billing goes stale without writes",
        support::DEADLINE,
        || external(&env, "billing")["health"] == "stale",
    );
    env.wait_until("then hung", support::DEADLINE, || {
        external(&env, "billing")["health"] == "hung"
    });
    let table = env.ward_ok(&["status"]).stdout;
    env.check(
        table
            .lines()
            .any(|l| l.starts_with("billing") && l.contains(" external ") && l.contains(" hung ")),
        format!("status table:\n{table}"),
    );
    env.wait_until("the status table row follows", support::DEADLINE, || {
        db_worker(&env, "billing").is_some_and(|w| {
            w["state"] == "external"
                && w["pid"].is_null()
                && w["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no beat for"))
        })
    });
    let kinds = |env: &TestEnv| -> Vec<String> {
        events(env, &["billing"])
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("").to_string())
            .collect()
    };
    env.wait_until(
        "stale and hung are in worker_events",
        support::DEADLINE,
        || {
            let k = kinds(&env);
            k.contains(&"heartbeat_stale".into()) && k.contains(&"heartbeat_hung".into())
        },
    );
    // A new write recovers it.
    worker_sql(&env, &b, &upsert("billing", 8));
    env.wait_until("a new write recovers it", promptly, || {
        let x = external(&env, "billing");
        x["health"] == "healthy" && x["heartbeat"]["jobs_processed"] == 8
    });
    env.wait_until("the recovery is an event", support::DEADLINE, || {
        events(&env, &["billing"]).iter().any(|e| {
            e["event"] == "health"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("hung -> healthy; heartbeat recovered"))
        })
    });
    // Undeclared rows are ignored (and said so in the log, once).
    let status = env.status_json();
    env.check(
        status["externals"].as_array().map(Vec::len) == Some(1),
        format!("only billing: {}", status["externals"]),
    );
    env.check(db_worker(&env, "stranger").is_none(), "no row for stranger");
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    env.check(
        log.matches("does not declare as `[[external]]`: `stranger`")
            .count()
            == 1,
        "one log line about the undeclared row",
    );
    // ward does not run it.
    let out = env.ward(&["restart", "billing"]);
    env.check(
        !out.status.success()
            && out
                .stderr
                .contains("`billing` is an [[external]] worker; ward does not run it"),
        format!("restart of an external\n{out}"),
    );
    let detail = env.ward_ok(&["status", "billing"]).stdout;
    env.check(
        detail.contains("its row says: host app-1, pid 4242")
            && detail.contains("heartbeat recovered"),
        format!("ward status billing:\n{detail}"),
    );
    // A reload without it: gone from status, `removed` in the table.
    configure(&env, &b, STEADY);
    let reload = env.ward_ok(&["reload"]).stdout;
    env.check(reload.contains("billing"), format!("reload:\n{reload}"));
    env.check(
        env.status_json()["externals"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no externals after the reload",
    );
    env.wait_until("its row is marked removed", support::DEADLINE, || {
        db_worker(&env, "billing").is_some_and(|w| w["state"] == "removed")
    });
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(support::DEADLINE);
}

/// While PostgreSQL is down, an external keeps its last known health until a
/// deadline passes that ward cannot check, then shows `unknown`; after the
/// outage ward reads the table again (notifications sent meanwhile are lost).
#[test]
fn postgres_outage_makes_externals_unknown_not_hung() {
    let b = Backend::postgres();
    let pg = b.pg.as_ref().expect("postgres");
    let env = TestEnv::new();
    configure(
        &env,
        &b,
        "[[external]]\nname = \"billing\"\ninterval = \"300ms\"\n",
    );
    env.up();
    env.wait_until("the table was read", support::DEADLINE, || {
        external(&env, "billing")["health"] == "stopped"
    });
    worker_sql(&env, &b, &upsert("billing", 3));
    env.wait_until("healthy", support::DEADLINE, || {
        external(&env, "billing")["health"] == "healthy"
    });
    pg.ctl_stop();
    env.wait_until("unknown once stale_after passes", support::DEADLINE, || {
        let x = external(&env, "billing");
        x["health"] == "unknown"
            && x["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot read the `heartbeats` table"))
    });
    let x = external(&env, "billing");
    env.check(
        x["heartbeat"]["jobs_processed"] == 3,
        format!("the last known counters are kept: {x}"),
    );
    env.check(
        !x["history"].to_string().contains("hung"),
        format!("never claimed hung: {x}"),
    );
    pg.ctl_start();
    worker_sql(&env, &b, &upsert("billing", 4));
    env.wait_until(
        "healthy again after the outage",
        Duration::from_secs(15),
        || {
            let x = external(&env, "billing");
            x["health"] == "healthy" && x["heartbeat"]["jobs_processed"] == 4
        },
    );
    let log = fs::read_to_string(env.state_dir.join("ward.log")).unwrap_or_default();
    env.check(
        log.matches("cannot read the `heartbeats` table;").count() == 1
            && log.contains("the `heartbeats` table is readable again"),
        "one warning for the outage, one note when it ends",
    );
    env.ward_ok(&["down"]);
    env.wait_daemon_exit(support::DEADLINE);
}

/// Writer throughput (scenario 7 of bench/run.sh, which parses the lines it
/// prints): `WARD_BENCH_ROUNDS=3 cargo test --release --test store --
/// --ignored --nocapture --test-threads 1 bench`.
fn bench_writer(b: Backend) {
    let rounds: usize = std::env::var("WARD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        .clamp(1, 10);
    use ward::store::diff::{Pending, WorkerRow};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let url = match &b.pg {
        Some(pg) => pg.url.clone(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    rt.block_on(async {
        let db = ward::store::Db::open(&url, true).await.expect("open");
        db.migrate(&url).await.expect("migrate");
        let row = |i: usize, n: u64| WorkerRow {
            program: format!("p{i}"),
            instance: 0,
            name: format!("p{i}"),
            state: if n % 2 == 0 { "running" } else { "backoff" }.into(),
            pid: Some(1000 + i as i64),
            started_at_ms: Some(1_700_000_000_000 + n),
            state_since_ms: 1_700_000_000_000 + n,
            uptime_ms: Some(n as i64),
            restarts: n as i64,
            last_exit_code: Some(1),
            last_exit_signal: None,
            last_exit_at_ms: Some(1_700_000_000_000),
            next_start_at_ms: None,
            message: Some("exit 1 after 2s; restarting in 1s".into()),
            cpu_percent: Some(0.5),
            rss_bytes: Some(1 << 20),
            log_bytes_dropped: 0,
            updated_at_ms: 1_700_000_000_000 + n,
            last_heartbeat_at_ms: Some(1_700_000_000_000 + n),
            health: "healthy".into(),
            status_text: Some("working".into()),
            jobs_processed: Some(n as i64),
            error_count: Some(0),
            circuit_breaker_open: Some(false),
            current_task: None,
            metadata: Some(r#"{"queue":"emails"}"#.into()),
        };
        for (round, batch_size) in (1..=rounds).flat_map(|r| [(r, 1usize), (r, 100), (r, 1000)]) {
            let total = if batch_size == 1 { 2_000 } else { 100_000 };
            let start = Instant::now();
            let mut n = 0u64;
            while (n as usize) * batch_size < total {
                let mut p = Pending::default();
                for i in 0..batch_size {
                    p.push_row(row(i, n));
                }
                db.write("bench-host", &p, 0).await.expect("write");
                n += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "store-bench backend={} round={round} batch={batch_size} rows={total} seconds={secs:.3} rows_per_sec={:.0}",
                db.backend(),
                total as f64 / secs
            );
        }
    });
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::Backend::sqlite()) } )*
            #[test]
            #[ignore = "benchmark"]
            fn bench() { super::bench_writer(super::Backend::sqlite()) }
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::Backend::postgres()) } )*
            #[test]
            #[ignore = "benchmark"]
            fn bench() { super::bench_writer(super::Backend::postgres()) }
        }
    };
}

both!(
    rows_follow_state_changes,
    events_are_recorded_and_shown,
    removed_programs_are_marked,
    migrations_apply_and_are_idempotent,
    external_rows_show_up_and_go_stale,
);
