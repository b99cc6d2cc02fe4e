//! The heartbeat endpoint's accept loop and the limits on its connections
//! (docs/HEARTBEATS.md, "Connection limits"): a cap on concurrent
//! connections (derived from RLIMIT_NOFILE so that ward keeps descriptors
//! for its programs), a deadline for a request's head, a deadline for an idle
//! keep-alive connection, and a back-off when `accept` fails.
//!
//! It owns sockets and their deadlines only; the routes are `http.rs`'s.
//! It must never stop accepting for good, nor log once per connection: a
//! misbehaving local client may cost it connections, never supervision.
//!
//! Why not hyper's own `header_read_timeout`: hyper 1 arms it again as soon
//! as a keep-alive connection goes idle after a response (see
//! `proto/h1/conn.rs`, `State::idle`, "Next read will start and poll the
//! header read timeout"), so it also bounds the pause between two requests.
//! With 10 s, a worker beating every 30 s on one keep-alive connection would
//! lose it each time. So [`Clock`] tells the phases apart: the head of a
//! request must arrive within [`Limits::header`] of its first byte (or of the
//! connect), and an idle connection may wait [`Limits::idle`] for the next.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a request's head (request line and headers) may take, from its
/// first byte (or from the connect, for a connection's first request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may stay silent between two requests
/// (and how long a request's body may stall).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most concurrent connections, whatever the descriptor limit.
pub const MAX_CONNECTIONS: usize = 4096;
/// The fewest allowed, however low the descriptor limit.
pub const MIN_CONNECTIONS: usize = 16;
/// The pause after `accept` failed for want of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per kind (refused connections, accept errors) in
/// this long; the next one says how many were not logged.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// Give freed memory back to the system (`malloc_trim`) once the open
/// connections fall to a quarter of a peak of at least this many.
pub const TRIM_AFTER_PEAK: usize = 256;
/// Test-only override of the timeouts, read once at startup:
/// `HEADER_MS,IDLE_MS` (e.g. `2000,6000`).
pub const TEST_TIMEOUTS_ENV: &str = "WARD_HTTP_TEST_TIMEOUTS";

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header: Duration,
    pub idle: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The defaults, with the cap derived from this process's soft
    /// RLIMIT_NOFILE and the timeouts from [`TEST_TIMEOUTS_ENV`] if set.
    pub fn from_process() -> Limits {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let (header, idle) = match std::env::var(TEST_TIMEOUTS_ENV) {
            Ok(v) => test_timeouts(&v).unwrap_or_else(|| {
                tracing::warn!(value = %v, "{TEST_TIMEOUTS_ENV} is not `HEADER_MS,IDLE_MS`; using the default timeouts");
                (HEADER_TIMEOUT, IDLE_TIMEOUT)
            }),
            Err(_) => (HEADER_TIMEOUT, IDLE_TIMEOUT),
        };
        Limits {
            header,
            idle,
            max_connections: connection_cap(nofile),
        }
    }
}

/// At most half the descriptors: the other half stays for programs' pipes,
/// notify sockets, log files and the store.
pub fn connection_cap(nofile_soft: u64) -> usize {
    let half = usize::try_from(nofile_soft / 2).unwrap_or(usize::MAX);
    half.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// `HEADER_MS,IDLE_MS`, each at least 100 ms.
pub fn test_timeouts(v: &str) -> Option<(Duration, Duration)> {
    let (h, i) = v.split_once(',')?;
    let ms = |s: &str| {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 100)
            .map(Duration::from_millis)
    };
    Some((ms(h)?, ms(i)?))
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for, or reading, a request's head.
    Head,
    /// A request is being read (its body) or answered.
    Busy,
    /// Answered; waiting for the next request on keep-alive.
    Idle,
}

/// A connection's phase and since when: what its deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub phase: Phase,
    pub since: Instant,
}

impl Clock {
    /// A new connection: its first head is due within the header timeout.
    pub fn new(now: Instant) -> Clock {
        Clock {
            phase: Phase::Head,
            since: now,
        }
    }

    /// Bytes arrived: the first of a new request starts its head's clock;
    /// inside a request, they push its stall deadline.
    pub fn read(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle => *self = Clock::new(now),
            Phase::Busy => self.since = now,
            Phase::Head => {}
        }
    }

    /// The head was parsed and handed to the routes.
    pub fn called(&mut self, now: Instant) {
        *self = Clock {
            phase: Phase::Busy,
            since: now,
        };
    }

    /// The answer is ready.
    pub fn responded(&mut self, now: Instant) {
        *self = Clock {
            phase: Phase::Idle,
            since: now,
        };
    }

    /// When ward closes the connection unless something happens first.
    pub fn deadline(&self, limits: &Limits) -> Instant {
        self.since
            + match self.phase {
                Phase::Head => limits.header,
                Phase::Busy | Phase::Idle => limits.idle,
            }
    }
}

/// Rate-limits a warning: [`Throttle::tick`] says whether to log now and
/// how many occurrences since the last log went unlogged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// One occurrence at `now`: `Some(unlogged before it)` if it is to be logged.
    pub fn tick(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// The open connections and their peak since the last trim.
#[derive(Debug, Default)]
struct Load {
    open: usize,
    peak: usize,
}

/// A connection's place under the cap; given back on drop.
struct Slot(Arc<Mutex<Load>>);

impl Slot {
    fn take(load: &Arc<Mutex<Load>>, cap: usize) -> Option<Slot> {
        let mut l = load.lock().unwrap_or_else(PoisonError::into_inner);
        if l.open >= cap {
            return None;
        }
        l.open += 1;
        l.peak = l.peak.max(l.open);
        Some(Slot(load.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let trim = {
            let mut l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            l.open -= 1;
            let trim = l.peak >= TRIM_AFTER_PEAK && l.open <= l.peak / 4;
            if trim {
                l.peak = l.open;
            }
            trim
        };
        if trim {
            // After a burst of connections, glibc keeps their freed buffers
            // in its heap (fragmented, so the top is rarely free to shrink).
            crate::daemon::release_free_memory();
        }
    }
}

/// Accept connections on `listener` and serve `router` on each, within
/// `limits`, until the task is dropped.
pub async fn run(listener: TcpListener, router: Router, limits: Limits) {
    let service = TowerToHyperService::new(router);
    let load = Arc::new(Mutex::new(Load::default()));
    let mut refused = Throttle::new(WARN_EVERY);
    let mut failed = Throttle::new(WARN_EVERY);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                let starved = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if !starved {
                    // ECONNABORTED and the like: that connection's, not ours.
                    tracing::debug!(error = %e, "heartbeat HTTP accept failed");
                    continue;
                }
                if let Some(unlogged) = failed.tick(Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        unlogged,
                        "heartbeat HTTP endpoint cannot accept a connection; pausing {} ms before the next accept",
                        ACCEPT_BACKOFF.as_millis()
                    );
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&load, limits.max_connections) else {
            refuse(&stream, limits.max_connections);
            drop(stream);
            if let Some(unlogged) = refused.tick(Instant::now()) {
                tracing::warn!(
                    max = limits.max_connections,
                    unlogged,
                    "heartbeat HTTP endpoint at its connection cap: refused a connection (503)"
                );
            }
            continue;
        };
        tokio::spawn(connection(stream, service.clone(), limits, slot));
    }
}

/// The answer to a connection beyond the cap, written if the socket takes
/// it at once (it is then closed either way).
pub fn busy_response(max: usize) -> String {
    let body = format!(
        r#"{{"error":"too many connections to the heartbeat endpoint (at most {max}); retry later, or beat over NOTIFY_SOCKET"}}"#
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn refuse(stream: &TcpStream, max: usize) {
    let _ = stream.try_write(busy_response(max).as_bytes());
}

/// Serve one connection until it ends or misses its deadline.
async fn connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    limits: Limits,
    _slot: Slot,
) {
    let clock = Arc::new(Mutex::new(Clock::new(Instant::now())));
    let io = TokioIo::new(Watched {
        inner: stream,
        clock: clock.clone(),
    });
    let svc = {
        let clock = clock.clone();
        service_fn(move |req| {
            lock(&clock).called(Instant::now());
            let answer = service.call(req);
            let clock = clock.clone();
            async move {
                let resp = answer.await;
                lock(&clock).responded(Instant::now());
                resp
            }
        })
    };
    let mut builder = http1::Builder::new();
    // Off: hyper's would also bound the pause between keep-alive requests
    // (see the module doc); [`Clock`] does both.
    builder.header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, svc));
    let first = lock(&clock).deadline(&limits);
    let mut timer = pin!(tokio::time::sleep_until(first));
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        // Every phase change happens inside the poll above (reads, the
        // routes): the deadline is current.
        let due = lock(&clock).deadline(&limits);
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match ended {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::debug!(error = %e, "heartbeat HTTP connection ended with an error")
        }
        None => {
            tracing::debug!(phase = ?lock(&clock).phase, "heartbeat HTTP connection closed: deadline passed")
        }
    }
}

fn lock(clock: &Mutex<Clock>) -> std::sync::MutexGuard<'_, Clock> {
    clock.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's socket, telling its [`Clock`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    clock: Arc<Mutex<Clock>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            lock(&self.clock).read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        max_connections: 4,
    };

    #[test]
    fn deadlines_follow_the_phases() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Clock::new(t0);
        // A silent or slow first head: the header timeout from the connect.
        assert_eq!(c.deadline(&LIMITS), t0 + s(10));
        c.read(t0 + s(3));
        assert_eq!(
            c.deadline(&LIMITS),
            t0 + s(10),
            "bytes of a head do not extend it"
        );
        c.called(t0 + s(4));
        assert_eq!(
            c.deadline(&LIMITS),
            t0 + s(64),
            "a body may stall for the idle timeout"
        );
        c.read(t0 + s(5));
        assert_eq!(c.deadline(&LIMITS), t0 + s(65));
        c.responded(t0 + s(6));
        assert_eq!((c.phase, c.deadline(&LIMITS)), (Phase::Idle, t0 + s(66)));
        // A keep-alive client beating every 30 s: its next head starts at 36 s.
        c.read(t0 + s(36));
        assert_eq!((c.phase, c.deadline(&LIMITS)), (Phase::Head, t0 + s(46)));
        c.read(t0 + s(45));
        assert_eq!(c.deadline(&LIMITS), t0 + s(46));
    }

    #[test]
    fn the_cap_keeps_half_the_descriptors() {
        assert_eq!(connection_cap(1024), 512);
        assert_eq!(connection_cap(65536), MAX_CONNECTIONS);
        assert_eq!(connection_cap(10), MIN_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
    }

    #[test]
    fn test_timeouts_parse() {
        let ms = Duration::from_millis;
        assert_eq!(test_timeouts("2000,6000"), Some((ms(2000), ms(6000))));
        assert_eq!(test_timeouts(" 100 , 200"), Some((ms(100), ms(200))));
        for bad in ["", "2000", "99,6000", "2000,x", "-1,5"] {
            assert_eq!(test_timeouts(bad), None, "{bad}");
        }
    }

    #[test]
    fn throttle_logs_once_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.tick(t0), Some(0));
        assert_eq!(t.tick(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.tick(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.tick(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(t.tick(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn busy_response_is_well_formed() {
        let r = busy_response(4096);
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("4096"));
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let load = Arc::new(Mutex::new(Load::default()));
        let slots: Vec<_> = (0..4).map(|_| Slot::take(&load, 4).unwrap()).collect();
        assert!(Slot::take(&load, 4).is_none());
        drop(slots);
        assert_eq!(load.lock().unwrap().open, 0);
        assert!(Slot::take(&load, 4).is_some());
    }
}
