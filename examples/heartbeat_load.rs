//! A load generator for ward's heartbeat registry, used by bench/heartbeat.sh.
//!
//! ```text
//! heartbeat_load http ADDR PATH TOKEN CONNECTIONS SECONDS   keep-alive POSTs
//! heartbeat_load notify SOCKET COUNT                        sd_notify datagrams
//! heartbeat_load latency ADDR PATH TOKEN CONTROL_SOCKET NAME ROUNDS
//! ```
//! Prints one `key=value` line. Loopback and local sockets only; every loop
//! is bounded in count or time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("http") if args.len() == 6 => http(
            &args[1],
            &args[2],
            &args[3],
            args[4].parse().expect("connections"),
            args[5].parse().expect("seconds"),
        ),
        Some("notify") if args.len() == 3 => notify(&args[1], args[2].parse().expect("count")),
        Some("latency") if args.len() == 7 => latency(
            &args[1],
            &args[2],
            &args[3],
            &args[4],
            &args[5],
            args[6].parse().expect("rounds"),
        ),
        _ => {
            eprintln!("usage: see the comment at the top of examples/heartbeat_load.rs");
            std::process::exit(2);
        }
    }
}

fn request(addr: &str, path: &str, token: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Read one response (headers and a Content-Length body); its status code.
fn read_response(r: &mut BufReader<TcpStream>, line: &mut String) -> Option<u16> {
    line.clear();
    r.read_line(line).ok()?;
    let code: u16 = line.get(9..12)?.parse().ok()?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(code)
}

fn http(addr: &str, path: &str, token: &str, conns: usize, secs: u64) {
    let req = request(addr, path, token, r#"{"jobs_delta":1}"#);
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let req = req.clone();
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let (mut ok, mut bad) = (0u64, 0u64);
                let s = TcpStream::connect(&addr).expect("connect");
                s.set_nodelay(true).ok();
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while Instant::now() < end {
                    if w.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    match read_response(&mut r, &mut line) {
                        Some(200) => ok += 1,
                        Some(_) => bad += 1,
                        None => break,
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    let (mut ok, mut bad) = (0, 0);
    for t in threads {
        let (o, b) = t.join().expect("thread");
        ok += o;
        bad += b;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "http_beats={ok} refused={bad} seconds={secs:.2} beats_per_sec={:.0}",
        ok as f64 / secs
    );
}

fn notify(path: &str, count: u64) {
    let s = UnixDatagram::unbound().expect("socket");
    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let start = Instant::now();
    let mut sent = 0u64;
    for _ in 0..count {
        if s.send_to(b"X_WARD_JOBS=+1", path).is_ok() {
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "datagrams={sent} seconds={secs:.3} datagrams_per_sec={:.0}",
        sent as f64 / secs
    );
}

/// Send a beat naming a fresh task, then poll the control socket until
/// status shows it; the median and worst of ROUNDS.
fn latency(addr: &str, path: &str, token: &str, control: &str, name: &str, rounds: usize) {
    let s = TcpStream::connect(addr).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut took = Vec::new();
    for i in 0..rounds {
        let task = format!("probe-{i}-{}", std::process::id());
        let start = Instant::now();
        w.write_all(
            request(
                addr,
                path,
                token,
                &format!(r#"{{"current_task":"{task}"}}"#),
            )
            .as_bytes(),
        )
        .expect("send");
        assert_eq!(read_response(&mut r, &mut line), Some(200));
        let deadline = start + Duration::from_secs(5);
        loop {
            let c = UnixStream::connect(control).expect("control socket");
            let mut cw = c.try_clone().expect("clone");
            cw.write_all(format!("{{\"cmd\":\"status\",\"names\":[\"{name}\"]}}\n").as_bytes())
                .expect("status");
            let mut reply = String::new();
            BufReader::new(c).read_line(&mut reply).expect("reply");
            if reply.contains(&task) {
                break;
            }
            assert!(Instant::now() < deadline, "the beat never showed in status");
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(start.elapsed());
        // Space the probes past the 100 ms publish coalescing.
        std::thread::sleep(Duration::from_millis(150));
    }
    took.sort();
    println!(
        "beat_to_status_median_ms={:.1} beat_to_status_max_ms={:.1} rounds={rounds}",
        took[took.len() / 2].as_secs_f64() * 1000.0,
        took[took.len() - 1].as_secs_f64() * 1000.0
    );
}
