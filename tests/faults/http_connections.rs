//! A flood of connections to the heartbeat HTTP endpoint, up to its cap
//! and beyond: keep-alive beats, idle connections, requests cut inside their
//! headers (slowloris) and bodies cut short. ward fills its cap and refuses
//! the rest at once, closes the silent and half-sent ones after the header
//! timeout and the idle keep-alive ones after the idle timeout (but keeps a
//! client that beats in between), counts every valid beat and nothing else,
//! keeps answering on its control socket, gives every descriptor back, and
//! its memory returns near its baseline.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ward::heartbeat::listener::{MAX_CONNECTIONS, TEST_TIMEOUTS_ENV};

use crate::support::{alive, fd_count, rss_bytes, TestEnv, DEADLINE};

/// ward's timeouts in this test (`WARD_HTTP_TEST_TIMEOUTS`): the header
/// timeout, and the idle one. The defaults (10 s, 60 s) have the same order.
const HEADER: Duration = Duration::from_secs(4);
const IDLE: Duration = Duration::from_secs(12);
/// How often the keep-alive client beats: slower than HEADER, faster than IDLE.
const SLOW_BEAT: Duration = Duration::from_secs(6);
/// Connections tried beyond the cap.
const BEYOND: usize = 200;
/// Descriptors this process needs: the cap, the probes, and the other tests
/// of the binary running at the same time. More than twice the cap, so that
/// ward (which inherits the limit and takes half) gets the whole cap.
const NEED_FDS: u64 = 12_288;
/// ward's descriptors above (or below) its baseline that are not connections.
const FD_SLACK: usize = 4;
/// ward's RSS while it holds the cap's connections (about 17 KiB each).
const RSS_LIMIT: u64 = 128 << 20;
/// How far above its pre-flood RSS ward may stay once the flood has closed.
const RSS_AFTER_SLACK: u64 = 8 << 20;
/// The body length announced by the connections that stop mid-body.
const CUT_BODY_LEN: usize = 64;
const CUT_BODY_START: &str = r#"{"jobs_del"#;

/// What one connection does before it is left open.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Stops in the middle of a header line.
    CutHeaders,
    /// Sends whole headers and the start of a body, then stops.
    CutBody,
    /// Sends a valid beat, reads the answer, stays open (keep-alive).
    Beat,
}

/// Raise this process's RLIMIT_NOFILE (ward inherits it) to at least
/// `need`: the soft limit up to the hard one, and the hard one too when we
/// may (root). The limits in force afterwards, or why they cannot be had.
fn raise_nofile(need: u64) -> Result<(u64, u64), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft >= need {
        return Ok((soft, hard));
    }
    let new_hard = hard.max(need);
    setrlimit(Resource::RLIMIT_NOFILE, need, new_hard).map_err(|e| {
        format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}) and cannot be raised to {need}: {e} \
             (hint: `ulimit -Hn {need}` as root before running the tests)"
        )
    })?;
    getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A beat request; `close` asks the server to close the connection after it.
fn beat_request(token: &str, body: &str, close: bool) -> String {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /v1/heartbeat/sink HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         {connection}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Read one response's status code (headers and a Content-Length body).
fn read_status(env: &TestEnv, r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    let read = |r: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        r.read_line(line)
            .unwrap_or_else(|e| env.fail(&format!("reading a response: {e}")))
    };
    read(r, &mut line);
    let code = line
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| env.fail(&format!("not an HTTP status line: {line:?}")));
    let mut len = 0usize;
    loop {
        if read(r, &mut line) == 0 {
            env.fail("the connection closed inside a response");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)
        .unwrap_or_else(|e| env.fail(&format!("reading a response body: {e}")));
    code
}

/// One beat over a fresh connection, which the server closes (read to its
/// end, so ward has let go of the descriptor on return); the status code.
fn one_beat(env: &TestEnv, addr: SocketAddr, token: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| env.fail(&format!("connect for a beat: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(beat_request(token, body, true).as_bytes())
        .unwrap();
    let mut r = BufReader::new(s);
    let code = read_status(env, &mut r);
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    code
}

/// Make closing `s` send a reset (SO_LINGER with a zero timeout).
fn reset_on_close(env: &TestEnv, s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &linger)
        .unwrap_or_else(|e| env.fail(&format!("SO_LINGER: {e}")));
}

/// Wait until ward holds `n` descriptors above `baseline` (within FD_SLACK:
/// the baseline may have counted a transient one).
fn wait_held(env: &TestEnv, ward: i32, baseline: usize, n: usize) {
    let mut held = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        held = fd_count(ward).saturating_sub(baseline);
        if held + FD_SLACK >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5)); // poll interval of the deadline loop
    }
    env.fail(&format!(
        "ward holds {held} descriptors above its baseline {baseline}, not {n}"
    ));
}

/// Connects are paced by ward's accepts: a tight loop overflows the listen
/// queue now and then, and each dropped SYN costs a 1 s retransmit.
const PACE: usize = 100;

/// Wait until ward holds at most `n` descriptors above `baseline` (+FD_SLACK).
fn wait_released(env: &TestEnv, ward: i32, baseline: usize, n: usize) {
    let mut now = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        now = fd_count(ward);
        if now <= baseline + n + FD_SLACK {
            return;
        }
        std::thread::sleep(Duration::from_millis(50)); // poll interval of the deadline loop
    }
    env.fail(&format!(
        "ward holds {now} descriptors; its baseline is {baseline}, and {n} connections should be open"
    ));
}

/// Block until ward closes `s` (EOF or a reset); fail if it sends anything
/// or `within` passes first.
fn wait_closed_by_ward(env: &TestEnv, s: &mut TcpStream, within: Duration, what: &str) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(_) => env.fail(&format!("{what}: ward sent data instead of closing")),
        Err(e) => env.fail(&format!(
            "{what}: not closed by ward within {within:?}: {e}"
        )),
    }
}

/// A beat on a new connection beyond the cap: ward must close it at once,
/// with a 503 if the socket took it, without delivering the beat. Whether
/// the 503 was read.
fn refused_at_once(env: &TestEnv, addr: SocketAddr, token: &str) -> bool {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| env.fail(&format!("connect beyond the cap: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // The write may meet a connection ward has already closed.
    let _ = s.write_all(beat_request(token, r#"{"jobs_delta":1}"#, true).as_bytes());
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => env.fail(&format!(
            "a connection beyond the cap was not closed at once ({:?}): {e}",
            t.elapsed()
        )),
    }
    if !got.is_empty() && !got.starts_with(b"HTTP/1.1 503 ") {
        env.fail(&format!(
            "a connection beyond the cap got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    !got.is_empty()
}

#[test]
fn a_flood_of_heartbeat_connections_meets_the_cap_and_the_timeouts_and_leaves_no_trace() {
    let cap = MAX_CONNECTIONS;
    let (soft, hard) = raise_nofile(NEED_FDS).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("RLIMIT_NOFILE {soft} (hard {hard})");
    let env = TestEnv::new();
    let port = free_port();
    env.write_config(&format!(
        "[supervisor]\nstate_dir = \"{}\"\nhttp = \"127.0.0.1:{port}\"\n\n\
         [[program]]\nname = \"sink\"\ncommand = \"echo $WARD_HEARTBEAT_TOKEN > token; exec sleep 1000\"\n",
        env.state_dir.display()
    ));
    let timeouts = format!("{},{}", HEADER.as_millis(), IDLE.as_millis());
    env.up_env(&[(TEST_TIMEOUTS_ENV, &timeouts)]);
    env.running_pid("sink");
    let ward = env.daemon_pid();
    let token_file = env.root.join("token");
    let mut token = String::new();
    env.wait_until("the token is written", DEADLINE, || {
        token = std::fs::read_to_string(&token_file).unwrap_or_default();
        token.ends_with('\n')
    });
    let token = token.trim().to_string();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    env.check(
        one_beat(&env, addr, &token, r#"{"current_task":"warm-up"}"#) == 200,
        "a first beat is accepted",
    );
    let baseline = fd_count(ward);
    let rss_before = rss_bytes(ward).unwrap_or(0);

    // Fill the cap: keep-alive beats and cut bodies first (their limit is
    // the idle timeout), then the idle and cut-header ones (the header
    // timeout), so that none of them times out before the cap is reached.
    let started = Instant::now();
    let cut_body = format!(
        "POST /v1/heartbeat/sink HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {CUT_BODY_LEN}\r\n\r\n{CUT_BODY_START}"
    );
    let jobs_beat = beat_request(&token, r#"{"jobs_delta":1}"#, false);
    // Each connection with its kind and when it last sent (or was answered).
    let mut conns: Vec<(Kind, TcpStream, Instant)> = Vec::with_capacity(cap);
    for i in 0..cap {
        if i % PACE == 0 {
            wait_held(&env, ward, baseline, i);
        }
        let kind = match i * 4 / cap {
            0 => Kind::Beat,
            1 => Kind::CutBody,
            _ if i % 2 == 0 => Kind::Idle,
            _ => Kind::CutHeaders,
        };
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| env.fail(&format!("connection {i} of {cap}: {e}")));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        match kind {
            Kind::Idle => {}
            Kind::CutHeaders => s
                .write_all(b"POST /v1/heartbeat/sink HTTP/1.1\r\nHost: x\r\nAuthoriza")
                .unwrap(),
            Kind::CutBody => s.write_all(cut_body.as_bytes()).unwrap(),
            Kind::Beat => {
                // In lockstep, so that no beat can find the instance's queue
                // full: each must be counted.
                s.write_all(jobs_beat.as_bytes()).unwrap();
                let code = read_status(&env, &mut BufReader::new(s.try_clone().unwrap()));
                env.check(code == 200, format!("beat on connection {i}: {code}"));
            }
        }
        conns.push((kind, s, Instant::now()));
    }
    let heads_from = conns
        .iter()
        .find(|c| matches!(c.0, Kind::Idle | Kind::CutHeaders))
        .map(|c| c.2)
        .unwrap();
    wait_held(&env, ward, baseline, cap);
    let rss_held = rss_bytes(ward).unwrap_or(0);
    eprintln!(
        "{cap} connections opened in {:?}; ward: {} fds, RSS {} -> {} KiB",
        started.elapsed(),
        fd_count(ward),
        rss_before >> 10,
        rss_held >> 10
    );
    env.check(
        rss_held < RSS_LIMIT,
        format!(
            "ward's RSS with {cap} connections: {} KiB (limit {} KiB)",
            rss_held >> 10,
            RSS_LIMIT >> 10
        ),
    );

    // At the cap: new connections are closed at once (a 503 when the socket
    // takes it), and hold nothing; supervision and the open connections go on.
    let mut got_503 = 0;
    for _ in 0..BEYOND {
        got_503 += usize::from(refused_at_once(&env, addr, &token));
    }
    eprintln!("{BEYOND} connections beyond the cap: {got_503} read the 503");
    env.check(
        fd_count(ward) <= baseline + cap + FD_SLACK,
        format!("ward holds {} descriptors at the cap", fd_count(ward)),
    );
    for _ in 0..3 {
        let t = Instant::now();
        env.ward_ok(&["status"]);
        env.check(
            t.elapsed() < Duration::from_secs(2),
            format!("`ward status` took {:?} at the cap", t.elapsed()),
        );
    }
    env.ward_ok(&["beat", "sink", "--task", "amid-the-cap"]);
    env.wait_until("the control-socket beat shows in status", DEADLINE, || {
        env.prog("sink")["heartbeat"]["current_task"] == "amid-the-cap"
    });
    env.check(
        Instant::now() < heads_from + HEADER,
        format!(
            "the checks at the cap took longer than the header timeout ({HEADER:?}): \
             some idle connection may have been closed meanwhile; the machine is too slow for this test"
        ),
    );

    // The slow keep-alive client: the first Beat connection, beating every
    // SLOW_BEAT on the same connection from now on.
    let (_, mut slow, _) = conns.remove(0);
    let mut slow_r = BufReader::new(slow.try_clone().unwrap());
    // Its beat while the cap filled.
    let mut expected_jobs = 1u64;
    let mut slow_beat = |env: &TestEnv, n: &mut u64| {
        slow.write_all(jobs_beat.as_bytes()).unwrap_or_else(|e| {
            env.fail(&format!(
                "the keep-alive client's connection was closed: {e}"
            ))
        });
        let code = read_status(env, &mut slow_r);
        env.check(code == 200, format!("the keep-alive client's beat: {code}"));
        *n += 1;
    };
    slow_beat(&env, &mut expected_jobs);
    let mut last_slow = Instant::now();

    // The cut bodies are finished now (a slow sender is no error): each beat counts.
    let rest = format!(
        "{:<width$}",
        r#"ta":1}"#,
        width = CUT_BODY_LEN - CUT_BODY_START.len()
    );
    for (kind, s, at) in conns.iter_mut() {
        match *kind {
            Kind::Beat => expected_jobs += 1,
            Kind::CutBody => {
                s.write_all(rest.as_bytes()).unwrap();
                let code = read_status(&env, &mut BufReader::new(s.try_clone().unwrap()));
                env.check(code == 200, format!("a finished slow body: {code}"));
                *at = Instant::now();
                expected_jobs += 1;
            }
            Kind::Idle | Kind::CutHeaders => {}
        }
    }
    env.wait_until("every valid beat is counted", DEADLINE, || {
        env.prog("sink")["heartbeat"]["jobs_processed"].as_u64() == Some(expected_jobs)
    });

    // The header timeout: ward closes the silent and the half-sent
    // connections, not before.
    let (heads, mut kept): (Vec<_>, Vec<_>) = conns
        .into_iter()
        .partition(|c| matches!(c.0, Kind::Idle | Kind::CutHeaders));
    for (kind, mut s, at) in heads {
        wait_closed_by_ward(
            &env,
            &mut s,
            HEADER + Duration::from_secs(10),
            &format!("{kind:?}"),
        );
        env.check(
            at.elapsed() + Duration::from_millis(50) >= HEADER,
            format!(
                "a {kind:?} connection was closed after {:?}, before the header timeout",
                at.elapsed()
            ),
        );
    }
    // The keep-alive ones are still open once idle for longer than the header timeout.
    let idle_past_header =
        kept.iter().map(|c| c.2).max().unwrap() + HEADER + Duration::from_secs(1);
    while Instant::now() < idle_past_header {
        std::thread::sleep(Duration::from_millis(50)); // poll interval of the deadline loop until idle_past_header
    }
    wait_released(&env, ward, baseline, kept.len() + 1);
    env.check(
        fd_count(ward) + FD_SLACK > baseline + kept.len(),
        format!(
            "ward closed keep-alive connections before the idle timeout: {} descriptors, baseline {baseline}, {} kept",
            fd_count(ward),
            kept.len() + 1
        ),
    );

    // The idle timeout: the keep-alive client beating every SLOW_BEAT keeps
    // its connection; the others are closed once idle for IDLE.
    let until = kept.iter().map(|c| c.2).max().unwrap() + IDLE + Duration::from_secs(2);
    let mut slow_beats = 1;
    while Instant::now() < until || slow_beats < 3 {
        let next = last_slow + SLOW_BEAT;
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50)); // poll interval of the deadline loop until the next slow beat
        }
        slow_beat(&env, &mut expected_jobs);
        last_slow = Instant::now();
        slow_beats += 1;
    }
    eprintln!(
        "the keep-alive client beat {slow_beats} times, every {SLOW_BEAT:?}, on one connection"
    );
    for (kind, s, at) in kept.iter_mut() {
        wait_closed_by_ward(&env, s, Duration::from_secs(10), &format!("idle {kind:?}"));
        env.check(
            at.elapsed() + Duration::from_millis(50) >= IDLE,
            format!(
                "an idle keep-alive connection was closed after {:?}",
                at.elapsed()
            ),
        );
    }
    drop(kept);
    wait_released(&env, ward, baseline, 1);
    env.wait_until(
        "the keep-alive client's beats are counted",
        DEADLINE,
        || env.prog("sink")["heartbeat"]["jobs_processed"].as_u64() == Some(expected_jobs),
    );
    drop(slow_r);
    reset_on_close(&env, &slow);
    drop(slow);
    wait_released(&env, ward, baseline, 0);

    // A second wave of idle connections, closed by the clients with a reset.
    let again: Vec<TcpStream> = (0..cap)
        .map(|i| {
            if i % PACE == 0 {
                wait_held(&env, ward, baseline, i);
            }
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| env.fail(&format!("second wave, connection {i}: {e}")));
            reset_on_close(&env, &s);
            s
        })
        .collect();
    wait_held(&env, ward, baseline, cap);
    let rss_again = rss_bytes(ward).unwrap_or(0);
    drop(again);
    wait_released(&env, ward, baseline, 0);
    let mut rss_after = 0;
    env.wait_until("ward's memory returns near its baseline", DEADLINE, || {
        rss_after = rss_bytes(ward).unwrap_or(0);
        rss_after <= rss_before + RSS_AFTER_SLACK
    });
    eprintln!(
        "RSS: {} KiB before, {} KiB with the cap held, {} KiB with the second wave, {} KiB after",
        rss_before >> 10,
        rss_held >> 10,
        rss_again >> 10,
        rss_after >> 10
    );
    env.check(alive(ward), "ward survived");
    env.check(env.state("sink") == "running", "sink still runs");
    env.check(
        one_beat(&env, addr, &token, r#"{"current_task":"after"}"#) == 200,
        "a beat after the connections closed",
    );
    let stderr = std::fs::read_to_string(env.root.join("daemon-1.stderr")).unwrap_or_default();
    env.check(!stderr.contains("panicked"), "no panic on ward's stderr");
    let warnings = stderr.matches("at its connection cap").count();
    env.check(
        (1..=2).contains(&warnings),
        format!("{warnings} cap warnings for {BEYOND} refusals within seconds: rate-limited to one per 10 s"),
    );
}
