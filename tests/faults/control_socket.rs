//! Bad input at the control socket: garbage, an over-long line, invalid
//! UTF-8, hundreds of idle and of concurrent clients. The daemon keeps
//! answering and leaks no file descriptor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{fd_count, TestEnv, DEADLINE};

const CLIENTS: usize = 200;
/// File descriptors the daemon may hold above its baseline once every
/// client is gone (e.g. a lazily opened file).
const FD_SLACK: usize = 4;

fn connect(env: &TestEnv) -> UnixStream {
    let s =
        UnixStream::connect(env.socket()).unwrap_or_else(|e| env.fail(&format!("connect: {e}")));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read one reply line and parse it.
fn reply(env: &TestEnv, s: &mut UnixStream) -> Value {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => buf.push(byte[0]),
            Ok(_) => env.fail(&format!(
                "connection closed before a reply line; got {:?}",
                String::from_utf8_lossy(&buf)
            )),
            Err(e) => env.fail(&format!("reading a reply: {e}")),
        }
    }
    serde_json::from_slice(&buf).unwrap_or_else(|e| {
        env.fail(&format!(
            "reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&buf)
        ))
    })
}

fn is_malformed(v: &Value) -> bool {
    v["ok"] == false
        && v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed request"))
}

#[test]
fn bad_input_and_many_clients_leave_the_daemon_answering_without_leaks() {
    let env = TestEnv::with_config(
        r#"
[[program]]
name = "idle"
command = "exec sleep 1000"
min_uptime = "0s"
"#,
    );
    env.up();
    env.running_pid("idle");
    let ward = env.daemon_pid();
    let baseline = fd_count(ward);

    // Garbage and invalid UTF-8 on one connection: one error each, and the
    // connection stays usable.
    let mut s = connect(&env);
    let garbage: [&[u8]; 9] = [
        b"hello\n",
        b"\n",
        b"{}\n",
        b"[1,2,3]\n",
        b"{\"cmd\":\"nope\"}\n",
        b"{\"cmd\":\"status\",\"names\":5}\n",
        b"\xff\xfe\xfd\n",
        b"{\"cmd\":\"status\",\"names\":[\"\xff\xfe\"]}\n",
        b"{\"cmd\":\"stop\"}\n",
    ];
    for g in garbage {
        s.write_all(g).unwrap();
        let v = reply(&env, &mut s);
        env.check(
            is_malformed(&v),
            format!("reply to {:?}: {v}", String::from_utf8_lossy(g)),
        );
    }
    s.write_all(b"{\"cmd\":\"ping\"}\n").unwrap();
    let v = reply(&env, &mut s);
    env.check(v["ok"] == true, format!("ping after garbage: {v}"));
    drop(s);

    // A 1 MiB line without a newline: refused, connection closed.
    let mut s = connect(&env);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The daemon closes the connection after 64 KiB: a write error is expected.
        let _ = w.write_all(&vec![b'x'; 1 << 20]);
    });
    let v = reply(&env, &mut s);
    env.check(
        v["ok"] == false
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("longer than 65536 bytes")),
        format!("reply to a 1 MiB line: {v}"),
    );
    let mut rest = Vec::new();
    let closed = matches!(s.read_to_end(&mut rest), Ok(_) | Err(_)) && rest.is_empty();
    env.check(closed, "nothing follows the refusal of an over-long line");
    writer.join().unwrap();
    drop(s);

    // A partial request, then the client goes away.
    let mut s = connect(&env);
    s.write_all(b"{\"cmd\":\"sta").unwrap();
    drop(s);

    // Idle clients do not block others.
    let idle: Vec<UnixStream> = (0..CLIENTS).map(|_| connect(&env)).collect();
    env.wait_until("the daemon accepted every idle client", DEADLINE, || {
        fd_count(ward) >= baseline + CLIENTS
    });
    env.ward_ok(&["status"]);
    drop(idle);

    // Concurrent clients each get their answer.
    let mut busy: Vec<UnixStream> = (0..CLIENTS).map(|_| connect(&env)).collect();
    for s in &mut busy {
        s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    }
    for s in &mut busy {
        let v = reply(&env, s);
        env.check(
            v["ok"] == true && v["data"]["programs"][0]["name"] == "idle",
            format!("status reply: {v}"),
        );
    }
    drop(busy);

    let mut now = 0;
    env.wait_until(
        "the daemon closed every client's descriptor",
        DEADLINE,
        || {
            now = fd_count(ward);
            now <= baseline + FD_SLACK
        },
    );
    eprintln!("daemon fds: {baseline} before, {now} after");
    let p = env.prog("idle");
    env.check(p["state"] == "running", format!("still supervising: {p}"));
}
