//! The sd_notify receiver: one datagram socket per program run, exported to
//! the child as `NOTIFY_SOCKET`, so the socket itself says who is talking
//! (a pid check breaks: `systemd-notify` sends from a short-lived pid, and as
//! root it forges its parent's).
//!
//! Receives with SO_PASSCRED and room for SCM_RIGHTS; every descriptor that
//! arrives is closed at once (that is what releases `systemd-notify --ready`,
//! which sends `BARRIER=1` with a pipe and waits for it to close). Drains
//! continuously: only about 11 datagrams queue on a unix socket.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{parse_metadata, Beat, Counter, MAX_BEAT};

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram larger than {MAX_BEAT} bytes (truncated)")]
    Truncated,
    #[error("datagram without sender credentials")]
    NoCredentials,
    #[error("datagram from uid {0}, which is neither the program's user nor root")]
    WrongUid(u32),
    #[error("datagram contains a NUL byte")]
    Nul,
    #[error("datagram is not UTF-8")]
    NotUtf8,
    #[error("line `{0}` is not KEY=VALUE")]
    NotAssignment(String),
    #[error("`{key}`: {why}")]
    BadValue { key: String, why: String },
}

/// Parse one datagram of newline-separated `KEY=VALUE` assignments.
///
/// systemd's keys and ward's `X_WARD_*` extensions become a [`Beat`];
/// unknown keys are ignored, as systemd does.
pub fn parse_datagram(data: &[u8]) -> Result<Beat, DatagramError> {
    if data.contains(&0) {
        return Err(DatagramError::Nul);
    }
    let text = std::str::from_utf8(data).map_err(|_| DatagramError::NotUtf8)?;
    let mut beat = Beat::default();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(DatagramError::NotAssignment(
                line.chars().take(64).collect(),
            ));
        };
        let bad = |why: String| DatagramError::BadValue {
            key: key.to_string(),
            why,
        };
        match key {
            "READY" => beat.ready |= value == "1",
            "STOPPING" => beat.stopping |= value == "1",
            "RELOADING" => beat.reloading |= value == "1",
            "STATUS" => beat.status = Some(value.to_string()),
            "WATCHDOG" => match value {
                "1" => {}
                "trigger" => beat.trigger = true,
                other => return Err(bad(format!("expected 1 or trigger, found `{other}`"))),
            },
            "MAINPID" => beat.main_pid = Some(value.parse().map_err(|_| bad("not a pid".into()))?),
            "ERRNO" => {
                let n: i32 = value
                    .parse()
                    .map_err(|_| bad("not an errno number".into()))?;
                beat.last_error = Some(format!(
                    "errno {n} ({})",
                    nix::errno::Errno::from_raw(n).desc()
                ));
            }
            "EXTEND_TIMEOUT_USEC" => {
                let us: u64 = value
                    .parse()
                    .map_err(|_| bad("not a number of microseconds".into()))?;
                beat.extend = Some(Duration::from_micros(us));
            }
            "X_WARD_JOBS" => beat.jobs = Some(Counter::parse(value).map_err(bad)?),
            "X_WARD_ERRORS" => beat.errors = Some(Counter::parse(value).map_err(bad)?),
            "X_WARD_TASK" => beat.task = Some(value.to_string()),
            "X_WARD_ERROR" => beat.last_error = Some(value.to_string()),
            "X_WARD_CIRCUIT_OPEN" => {
                beat.circuit_open = Some(match value {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => return Err(bad(format!("expected 1 or 0, found `{other}`"))),
                })
            }
            "X_WARD_META" => beat.metadata = Some(parse_metadata(value).map_err(bad)?),
            // BARRIER=1 only asks us to close its descriptor, which we always do;
            // FDSTORE and friends are not supported and ignored, like unknown keys.
            _ => {}
        }
    }
    Ok(beat)
}

thread_local! {
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The notify socket of one run.
pub struct NotifySocket {
    fd: AsyncFd<OwnedFd>,
    pub path: PathBuf,
}

impl NotifySocket {
    /// Bind a datagram socket at `path` that `owner` (the program's uid) may send to.
    pub fn bind(path: &Path, owner: Option<u32>) -> std::io::Result<NotifySocket> {
        if path.as_os_str().len() >= 108 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "notify socket path `{}` is too long for a unix socket",
                    path.display()
                ),
            ));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        // Room for a burst between two reads of the loop.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(1 << 20));
        bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some(uid) = owner {
            nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None)?;
        }
        // SAFETY: `fd` is a valid socket owned by the AsyncFd, which neither
        // replaces nor closes it while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(NotifySocket {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Wait for datagrams, then take what is queued: each malformed one as
    /// an error, and up to [`MERGE_BURST`] valid ones merged into one beat
    /// (a flood becomes a few merged beats; READY=1, counters and the rest
    /// are never lost, and the backlog stays in the socket, not in ward's
    /// memory). `allowed_uid` is the program's uid; root is always allowed.
    ///
    /// Cancel-safe: it only awaits before it receives anything.
    pub async fn next(&self, allowed_uid: u32) -> Vec<Result<Beat, DatagramError>> {
        let mut out = Vec::new();
        let Ok(mut guard) = self.fd.readable().await else {
            // The reactor is gone (shutdown): nothing will come.
            return std::future::pending().await;
        };
        let mut merged: Option<Beat> = None;
        let mut taken = 0;
        loop {
            // One receive buffer for the runtime thread, not one per idle
            // socket: `receive` does not await while it holds it.
            let got = RECV_BUF.with(|b| {
                let mut buf = b.borrow_mut();
                if buf.is_empty() {
                    buf.resize(MAX_BEAT + 1, 0);
                }
                receive(self.fd.get_ref().as_raw_fd(), &mut buf, allowed_uid)
            });
            match got {
                Ok(Received::Datagram(Ok(beat))) => {
                    match &mut merged {
                        Some(m) => m.merge(beat),
                        None => merged = Some(beat),
                    }
                    taken += 1;
                    if taken == MERGE_BURST {
                        break;
                    }
                }
                Ok(Received::Datagram(Err(e))) => out.push(Err(e)),
                Ok(Received::Again) => continue,
                Ok(Received::Empty) => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notify socket receive failed");
                    guard.clear_ready();
                    break;
                }
            }
        }
        out.extend(merged.map(Ok));
        out
    }
}

/// Datagrams merged into one beat at most, so liveness stays timely in a flood.
const MERGE_BURST: usize = 64;

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

enum Received {
    Datagram(Result<Beat, DatagramError>),
    /// Interrupted: try again.
    Again,
    /// Nothing queued.
    Empty,
}

/// One `recvmsg`.
fn receive(fd: RawFd, buf: &mut [u8], allowed_uid: u32) -> nix::Result<Received> {
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, [RawFd; 16]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return Ok(Received::Empty),
        Err(nix::errno::Errno::EINTR) => return Ok(Received::Again),
        Err(e) => return Err(e),
    };
    let mut uid = None;
    let mut truncated =
        msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => uid = Some(cred.uid()),
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        // SAFETY: the kernel just gave us this descriptor; we own it.
                        drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
                _ => {}
            }
        }
    }
    let len = msg.bytes;
    if len > MAX_BEAT {
        truncated = true;
    }
    let result = if truncated {
        Err(DatagramError::Truncated)
    } else {
        match uid {
            None => Err(DatagramError::NoCredentials),
            Some(u) if u != 0 && u != allowed_uid => Err(DatagramError::WrongUid(u)),
            Some(_) => parse_datagram(&buf[..len.min(buf.len())]),
        }
    };
    Ok(Received::Datagram(result))
}

/// Logs dropped datagrams at most once per `every`, with a count.
pub struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    pub fn warn(&mut self, what: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            tracing::warn!(
                suppressed = self.suppressed,
                "dropped a heartbeat datagram: {what}"
            );
        } else {
            tracing::warn!("dropped a heartbeat datagram: {what}");
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemd_and_ward_keys() {
        let b = parse_datagram(b"READY=1\nSTATUS=idle, 3 queued\nX_WARD_JOBS=+2\nX_WARD_ERRORS=7\nX_WARD_TASK=job-1\nX_WARD_CIRCUIT_OPEN=1\nX_WARD_META={\"q\":3}\nEXTEND_TIMEOUT_USEC=5000000\nMAINPID=42\nBARRIER=1\nUNKNOWN=x\n").unwrap();
        assert!(b.ready);
        assert_eq!(b.status.as_deref(), Some("idle, 3 queued"));
        assert_eq!(b.jobs, Some(Counter::Add(2)));
        assert_eq!(b.errors, Some(Counter::Set(7)));
        assert_eq!(b.task.as_deref(), Some("job-1"));
        assert_eq!(b.circuit_open, Some(true));
        assert_eq!(b.metadata.unwrap()["q"], 3);
        assert_eq!(b.extend, Some(Duration::from_secs(5)));
        assert_eq!(b.main_pid, Some(42));
    }

    #[test]
    fn watchdog_and_errors() {
        assert_eq!(parse_datagram(b"WATCHDOG=1").unwrap(), Beat::default());
        assert!(parse_datagram(b"WATCHDOG=trigger").unwrap().trigger);
        assert!(parse_datagram(b"WATCHDOG=2").is_err());
        assert_eq!(parse_datagram(b"READY=1\0"), Err(DatagramError::Nul));
        assert!(matches!(
            parse_datagram(b"garbage"),
            Err(DatagramError::NotAssignment(_))
        ));
        assert!(matches!(
            parse_datagram(b"X_WARD_JOBS=-3"),
            Err(DatagramError::BadValue { .. })
        ));
        assert!(matches!(
            parse_datagram(b"X_WARD_META=[1]"),
            Err(DatagramError::BadValue { .. })
        ));
        assert_eq!(parse_datagram(&[0xff, 0xfe]), Err(DatagramError::NotUtf8));
        assert!(parse_datagram(b"ERRNO=2")
            .unwrap()
            .last_error
            .unwrap()
            .contains("errno 2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn receives_with_credentials_and_closes_passed_descriptors() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let sock = NotifySocket::bind(&path, None).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // What the actor does: take what is queued, one result at a time here.
        let mut queued = std::collections::VecDeque::new();
        async fn one(
            sock: &NotifySocket,
            me: u32,
            queued: &mut std::collections::VecDeque<Result<Beat, DatagramError>>,
        ) -> Result<Beat, DatagramError> {
            loop {
                if let Some(r) = queued.pop_front() {
                    return r;
                }
                queued.extend(sock.next(me).await);
            }
        }
        let client = UnixDatagram::unbound().unwrap();
        // A barrier: send a pipe's write end; its read end sees EOF once ward closes it.
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let iov = [std::io::IoSlice::new(b"BARRIER=1")];
        let fds = [write_end.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg(
            client.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            Some(&UnixAddr::new(&path).unwrap()),
        )
        .unwrap();
        drop(write_end);
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        // The two may arrive merged into one beat, or one after the other.
        let mut seen = one(&sock, me, &mut queued).await.unwrap();
        while !seen.ready {
            seen = one(&sock, me, &mut queued).await.unwrap();
        }
        assert_eq!(seen.status.as_deref(), Some("up"));
        // The barrier's descriptor gets closed: the pipe's read end sees EOF.
        // Polled without blocking, like the rest of this runtime's work.
        nix::fcntl::fcntl(
            read_end.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut b = [0u8; 1];
            match nix::unistd::read(read_end.as_raw_fd(), &mut b) {
                Ok(0) => break,
                Err(nix::errno::Errno::EAGAIN) if std::time::Instant::now() < deadline => {
                    let poll = std::time::Duration::from_millis(1);
                    tokio::time::sleep(poll).await; // poll interval of the deadline loop
                }
                other => panic!("the barrier's descriptor was not closed: {other:?}"),
            }
        }
        client.send_to(&vec![b'x'; MAX_BEAT + 10], &path).unwrap();
        assert_eq!(
            one(&sock, me, &mut queued).await,
            Err(DatagramError::Truncated)
        );
        // A flood is merged: every counter increment arrives, in fewer beats.
        // Sent from another thread: a full socket blocks `send_to` until
        // this test receives below.
        let flood = std::thread::spawn({
            let path = path.clone();
            move || {
                for _ in 0..200 {
                    client.send_to(b"X_WARD_JOBS=+1", &path).unwrap();
                }
            }
        });
        let mut jobs = 0;
        let mut beats = 0;
        while jobs < 200 {
            let b = one(&sock, me, &mut queued).await.unwrap();
            beats += 1;
            if let Some(Counter::Add(n)) = b.jobs {
                jobs += n;
            }
        }
        assert_eq!(jobs, 200);
        assert!(beats <= 200);
        flood.join().unwrap();
    }
}
