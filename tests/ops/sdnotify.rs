//! `ward up` under a fake systemd: a `NOTIFY_SOCKET` bound by the test.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::{wait_for, ward, Daemon};

/// Every datagram received so far, in order.
struct FakeSystemd {
    socket: UnixDatagram,
    got: Vec<String>,
}

impl FakeSystemd {
    fn bind(path: &std::path::Path) -> FakeSystemd {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        FakeSystemd {
            socket,
            got: Vec::new(),
        }
    }

    /// Read until a message satisfies `pred`; returns its index.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.until_after(0, what, pred)
    }

    /// Like `until`, looking only at messages from index `from` on.
    fn until_after(&mut self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        if let Some(i) = self.got.iter().skip(from).position(|m| pred(m)) {
            return from + i;
        }
        let mut buf = vec![0u8; 4096];
        wait_for(what, || {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = pred(&m);
                self.got.push(m);
                if hit {
                    return Some(self.got.len() - 1);
                }
            }
            None
        })
    }
}

#[test]
fn ward_reports_ready_status_watchdog_and_stopping_to_systemd() {
    let dir = tempfile::Builder::new()
        .prefix("ward-ops.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path();
    let sock = root.join("notify.sock");
    let mut systemd = FakeSystemd::bind(&sock);
    let env_dump = root.join("child.env");
    let config = root.join("supervisor.toml");
    std::fs::write(
        &config,
        format!(
            r#"[supervisor]
state_dir = "state"

[[program]]
name = "envdump"
command = "env > '{}'; exec sleep 600"
min_uptime = "100ms"

[[program]]
name = "sleeper"
command = ["sleep", "600"]
instances = 2
min_uptime = "100ms"
"#,
            env_dump.display()
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut cmd = ward(&["up", "-c", config.to_str().unwrap()], root);
    cmd.env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut daemon = Daemon::spawn(cmd);

    let ready = systemd.until("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // READY=1 comes once every program has been started, with its status.
    assert!(systemd.got[ready].contains("STATUS="), "{:?}", systemd.got);
    let env = wait_for("the child's env dump", || {
        std::fs::read_to_string(&env_dump)
            .ok()
            .filter(|s| s.contains("WARD_NAME"))
    });
    // The child may have a NOTIFY_SOCKET of its own (ward's heartbeat
    // socket for it), but never ward's systemd socket or watchdog.
    let seen = |var: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")).map(str::to_string))
    };
    assert_ne!(
        seen("NOTIFY_SOCKET").as_deref(),
        Some(sock.to_str().unwrap()),
        "the child saw ward's NOTIFY_SOCKET:\n{env}"
    );
    assert_ne!(
        seen("WATCHDOG_USEC").as_deref(),
        Some("200000"),
        "the child saw ward's WATCHDOG_USEC:\n{env}"
    );
    // min_uptime passes: the summary changes to all running.
    systemd.until("STATUS=3/3 running", |m| {
        m.lines().any(|l| l == "STATUS=3/3 running")
    });
    // The watchdog keeps coming (every 100 ms).
    let mut at = systemd.until("WATCHDOG=1", |m| m == "WATCHDOG=1");
    for _ in 0..3 {
        at = systemd.until_after(at + 1, "another WATCHDOG=1", |m| m == "WATCHDOG=1");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "four watchdog pings 100 ms apart"
    );

    daemon.signal(libc::SIGTERM);
    systemd.until("STOPPING=1", |m| m.lines().any(|l| l == "STOPPING=1"));
    let (status, stderr) = daemon.wait();
    assert!(status.success(), "ward exited with {status}\n{stderr}");
    let kinds: BTreeSet<&str> = systemd
        .got
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.split('=').next())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["READY", "STATUS", "STOPPING", "WATCHDOG"]),
        "{:?}",
        systemd.got
    );
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::Builder::new()
        .prefix("ward-ops.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path();
    let name = format!("ward-ops-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut systemd = FakeSystemd {
        socket,
        got: Vec::new(),
    };
    let config = root.join("supervisor.toml");
    std::fs::write(&config, "[supervisor]\nstate_dir = \"state\"\n").unwrap();
    let mut cmd = ward(&["up", "-c", config.to_str().unwrap()], root);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"))
        .env_remove("WATCHDOG_USEC");
    let mut daemon = Daemon::spawn(cmd);
    // No programs: ready at once, with a `0/0 running` status.
    let i = systemd.until("READY=1", |m| m.contains("READY=1"));
    assert_eq!(systemd.got[i], "READY=1\nSTATUS=0/0 running");
    daemon.signal(libc::SIGTERM);
    systemd.until("STOPPING=1", |m| m.contains("STOPPING=1"));
    assert!(daemon.wait().0.success());
}
