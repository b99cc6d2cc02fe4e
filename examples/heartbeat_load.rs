//! A load generator for ward's heartbeat registry, used by scenario 6 of
//! bench/run.sh (`bench/run.sh --only heartbeat --out /tmp/hb.md`).
//!
//! ```text
//! heartbeat_load http ADDR PATH TOKEN CONNECTIONS SECONDS   keep-alive POSTs
//! heartbeat_load notify SOCKET COUNT                        sd_notify datagrams
//! ```
//! Prints one `key=value` line. Loopback and local sockets only; every loop
//! is bounded in count or time. (The probes of a beat's latency to `ward
//! status` and to its row in the table are in bench/bench.py.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
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
