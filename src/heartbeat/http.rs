//! The heartbeat HTTP endpoint, on a loopback address only
//! (`[supervisor] http`). See docs/HEARTBEATS.md.
//!
//! - `POST /v1/heartbeat/{name}` with an optional JSON body, and
//!   `POST /v1/heartbeat/{name}/ready` / `.../stopping`;
//! - healthchecks.io-shaped pings, GET or POST: `/ping/{name}`,
//!   `/ping/{name}/start`, `/fail`, `/log`, `/{exit-code}`;
//! - `GET /v1/status`: what `ward status --json` prints (read-only, no token).
//!
//! A beat needs the current run's `WARD_HEARTBEAT_TOKEN`, as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN`. Every error is a JSON
//! `{"error": "..."}` with a status code; a refused beat changes nothing but
//! the instance's `rejected` count. Bodies are bounded by [`MAX_BEAT`].
//!
//! The parsers ([`parse_body`], [`parse_ping`]) are pure, for the fuzz tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{Beat, Counter, RunReport, MAX_BEAT, MAX_METADATA};
use crate::program::{BeatRefused, Offer, ProgramHandle, BEAT_BATCH};
use crate::supervisor::Supervisor;

/// How much of a ping's body is kept (its end: where errors usually are).
pub const PING_EXCERPT: usize = 1024;

/// Listen on `addr` and serve until the task is dropped, within the limits
/// of `listener.rs`. A bind failure is logged once; ward goes on
/// supervising without the endpoint.
pub async fn serve(addr: SocketAddr, sup: Arc<Supervisor>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                %addr,
                error = %e,
                "cannot listen for heartbeats over HTTP; ward goes on without the endpoint (sd_notify, IPC and `ward beat NAME` still work)"
            );
            return;
        }
    };
    let limits = super::listener::Limits::from_process();
    tracing::info!(
        %addr,
        max_connections = limits.max_connections,
        header_timeout = ?limits.header,
        idle_timeout = ?limits.idle,
        "heartbeat HTTP endpoint listening"
    );
    super::listener::run(listener, router(sup), limits).await;
}

/// The routes, over `sup`.
pub fn router(sup: Arc<Supervisor>) -> Router {
    Router::new()
        .route("/v1/heartbeat/{name}", post(beat))
        .route("/v1/heartbeat/{name}/{what}", post(beat_what))
        .route("/ping/{name}", get(ping).post(ping))
        .route("/ping/{name}/{action}", get(ping_action).post(ping_action))
        .route("/v1/status", get(status))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route; see docs/HEARTBEATS.md",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here; heartbeats are POSTs, pings GET or POST, status a GET",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BEAT))
        .with_state(sup)
}

type Body64 = Result<Bytes, BytesRejection>;

async fn beat(
    State(sup): State<Arc<Supervisor>>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body64,
) -> Response {
    let name = match name {
        Ok(Path(n)) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    deliver(&sup, &name, &headers, query.as_deref(), body, parse_body).await
}

async fn beat_what(
    State(sup): State<Arc<Supervisor>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body64,
) -> Response {
    let (name, what) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let (ready, stopping) = match what.as_str() {
        "ready" => (true, false),
        "stopping" => (false, true),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "no such route: after the name comes `ready` or `stopping`",
            )
        }
    };
    deliver(&sup, &name, &headers, query.as_deref(), body, |b| {
        parse_body(b).map(|beat| Beat {
            ready: beat.ready || ready,
            stopping: beat.stopping || stopping,
            ..beat
        })
    })
    .await
}

async fn ping(
    State(sup): State<Arc<Supervisor>>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body64,
) -> Response {
    let name = match name {
        Ok(Path(n)) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    deliver(&sup, &name, &headers, query.as_deref(), body, |b| {
        parse_ping(None, b)
    })
    .await
}

async fn ping_action(
    State(sup): State<Arc<Supervisor>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body64,
) -> Response {
    let (name, action) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if let Err(why) = ping_kind(Some(&action)) {
        return error(StatusCode::NOT_FOUND, &why);
    }
    deliver(&sup, &name, &headers, query.as_deref(), body, |b| {
        parse_ping(Some(&action), b)
    })
    .await
}

async fn status(State(sup): State<Arc<Supervisor>>) -> Response {
    match sup.status(&[], false) {
        Ok(report) => json(StatusCode::OK, &report),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The common path of every beat: size, token, name, token check, parse, actor.
async fn deliver(
    sup: &Supervisor,
    name: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body64,
    parse: impl FnOnce(&[u8]) -> Result<Beat, String>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BEAT} bytes"),
            )
        }
        Err(e) => return error(e.status(), &e.body_text()),
    };
    let token = match bearer(headers, query) {
        Ok(t) => t,
        Err(why) => return error(StatusCode::UNAUTHORIZED, why),
    };
    let handle = match find(sup, name) {
        Ok(h) => h,
        Err(resp) => return resp,
    };
    if let Err(e) = handle.check_token(&token) {
        return refused(&e);
    }
    let beat = match parse(&body) {
        Ok(b) => b,
        Err(why) => {
            handle.refuse();
            return error(StatusCode::BAD_REQUEST, &why);
        }
    };
    match handle.offer(beat, token) {
        Ok(offer) => {
            if offer == Offer::First {
                let handle = handle.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(BEAT_BATCH).await;
                    handle.wake_for_beats();
                });
            }
            json(
                StatusCode::OK,
                &serde_json::json!({"ok": true, "name": handle.id}),
            )
        }
        Err(e) => refused(&e),
    }
}

fn refused(e: &BeatRefused) -> Response {
    let code = match e {
        BeatRefused::BadToken => StatusCode::UNAUTHORIZED,
        BeatRefused::OldRun | BeatRefused::NotRunning => StatusCode::CONFLICT,
        BeatRefused::Malformed(_) => StatusCode::BAD_REQUEST,
        BeatRefused::Gone => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, &e.to_string())
}

/// The instance a beat is for: an instance id, or a program with one instance.
#[allow(clippy::result_large_err)]
fn find(sup: &Supervisor, name: &str) -> Result<ProgramHandle, Response> {
    let current = sup.current();
    if let Some(h) = current.handles.iter().find(|h| h.id == name) {
        return Ok(h.clone());
    }
    let mut of = current.handles.iter().filter(|h| h.program.name == name);
    match (of.next(), of.next()) {
        (Some(h), None) => Ok(h.clone()),
        (Some(_), Some(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!(
                "`{}` has several instances: address one, e.g. `{}:0` (WARD_HEARTBEAT_URL already does)",
                shown(name),
                shown(name)
            ),
        )),
        _ if current.config.external(name).is_some() => Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "`{}` is an [[external]] worker: it beats by writing its row in the `heartbeats` table",
                shown(name)
            ),
        )),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            &format!("no program or instance named `{}`", shown(name)),
        )),
    }
}

/// A name echoed in an error, clipped.
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// The token of a request: `Authorization: Bearer TOKEN`, else `?token=TOKEN`.
pub fn bearer(headers: &HeaderMap, query: Option<&str>) -> Result<String, &'static str> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| "the Authorization header is not text")?
            .trim();
        let token = match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err("the Authorization header must be `Bearer $WARD_HEARTBEAT_TOKEN`"),
        };
        if token.is_empty() {
            return Err("the Authorization header holds no token");
        }
        return Ok(token.to_string());
    }
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or("no token: send `Authorization: Bearer $WARD_HEARTBEAT_TOKEN` or `?token=$WARD_HEARTBEAT_TOKEN`")
}

/// The JSON body of `POST /v1/heartbeat/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpBeat {
    status: Option<String>,
    jobs_processed: Option<u64>,
    error_count: Option<u64>,
    jobs_delta: Option<u64>,
    errors_delta: Option<u64>,
    circuit_breaker_open: Option<bool>,
    current_task: Option<String>,
    last_error: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parse a heartbeat's body: empty (a plain sign of life), or a JSON object
/// with the keys of docs/HEARTBEATS.md and nothing else.
pub fn parse_body(body: &[u8]) -> Result<Beat, String> {
    if body.len() > MAX_BEAT {
        return Err(format!("the body is larger than {MAX_BEAT} bytes"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Beat::default());
    }
    let b: HttpBeat = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            format!("bad heartbeat: {e}")
        } else {
            format!("the body is not a JSON object: {e}")
        }
    })?;
    let counter = |set: Option<u64>, add: Option<u64>, what: &str| match (set, add) {
        (Some(_), Some(_)) => Err(format!(
            "give either {what} (absolute) or its _delta (increment), not both"
        )),
        (Some(n), None) => Ok(Some(Counter::Set(n))),
        (None, Some(n)) => Ok(Some(Counter::Add(n))),
        (None, None) => Ok(None),
    };
    let jobs = counter(b.jobs_processed, b.jobs_delta, "jobs_processed")?;
    let errors = counter(b.error_count, b.errors_delta, "error_count")?;
    if let Some(m) = &b.metadata {
        let size = serde_json::to_string(m).map_or(0, |s| s.len());
        if size > MAX_METADATA {
            return Err(format!(
                "metadata is {size} bytes; the limit is {MAX_METADATA}"
            ));
        }
    }
    Ok(Beat {
        status: b.status,
        jobs,
        errors,
        task: b.current_task,
        last_error: b.last_error,
        circuit_open: b.circuit_breaker_open,
        metadata: b.metadata,
        ..Beat::default()
    })
}

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingKind {
    /// `/ping/{name}` or `/ping/{name}/0`: a run succeeded (or: alive).
    Success,
    Start,
    /// `/fail`, or a non-zero exit code.
    Fail(Option<u8>),
    /// `/log`: only a message.
    Log,
}

/// The last path segment of a ping, if any.
pub fn ping_kind(action: Option<&str>) -> Result<PingKind, String> {
    Ok(match action {
        None => PingKind::Success,
        Some("start") => PingKind::Start,
        Some("fail") => PingKind::Fail(None),
        Some("log") => PingKind::Log,
        Some(code)
            if !code.is_empty() && code.len() <= 3 && code.bytes().all(|b| b.is_ascii_digit()) =>
        {
            match code.parse::<u8>() {
                Ok(0) => PingKind::Success,
                Ok(n) => PingKind::Fail(Some(n)),
                Err(_) => return Err(format!("exit code `{code}` is not in 0..=255")),
            }
        }
        Some(other) => {
            return Err(format!(
                "no such ping `{}`: use start, fail, log or an exit code 0-255",
                shown(other)
            ))
        }
    })
}

/// The last [`PING_EXCERPT`] bytes of a body, as trimmed text.
pub fn excerpt(body: &[u8]) -> Option<String> {
    let tail = &body[body.len().saturating_sub(PING_EXCERPT)..];
    let text = String::from_utf8_lossy(tail);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Parse a ping into a beat; its body (optional) is kept as an excerpt.
pub fn parse_ping(action: Option<&str>, body: &[u8]) -> Result<Beat, String> {
    if body.len() > MAX_BEAT {
        return Err(format!("the body is larger than {MAX_BEAT} bytes"));
    }
    let text = excerpt(body);
    Ok(match ping_kind(action)? {
        PingKind::Success => Beat {
            status: Some(text.unwrap_or_else(|| "ok".into())),
            jobs: Some(Counter::Add(1)),
            task: Some(String::new()),
            run: Some(RunReport::Succeeded),
            ..Beat::default()
        },
        PingKind::Start => Beat {
            status: Some(text.unwrap_or_else(|| "started".into())),
            task: Some("job".into()),
            run: Some(RunReport::Started),
            ..Beat::default()
        },
        PingKind::Fail(code) => {
            let what = match code {
                Some(n) => format!("failed (exit {n})"),
                None => "failed".to_string(),
            };
            Beat {
                last_error: Some(match &text {
                    Some(t) => format!("{what}: {t}"),
                    None => what.clone(),
                }),
                status: Some(what),
                jobs: Some(Counter::Add(1)),
                errors: Some(Counter::Add(1)),
                task: Some(String::new()),
                run: Some(RunReport::Failed),
                ..Beat::default()
            }
        }
        PingKind::Log => Beat {
            status: text,
            ..Beat::default()
        },
    })
}

fn json<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (code, Body::from(bytes)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(code: StatusCode, why: &str) -> Response {
    json(code, &serde_json::json!({ "error": why }))
}

/// A minimal blocking HTTP/1.1 POST (for `ward beat` inside a program):
/// returns the status code and the body. Only `http://HOST:PORT/PATH`.
pub fn post_beat(
    url: &str,
    token: &str,
    body: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| bad("the host must be an IP address and a port"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").unwrap(), Beat::default());
        assert_eq!(parse_body(b" \n").unwrap(), Beat::default());
        let b = parse_body(
            br#"{"status":"busy","jobs_delta":2,"error_count":5,"circuit_breaker_open":true,
                "current_task":"t","last_error":"e","metadata":{"q":1}}"#,
        )
        .unwrap();
        assert_eq!(b.jobs, Some(Counter::Add(2)));
        assert_eq!(b.errors, Some(Counter::Set(5)));
        assert_eq!(b.circuit_open, Some(true));
        assert_eq!(b.metadata.unwrap()["q"], 1);
        for bad in [
            &br#"{"jobs_processed":-1}"#[..],
            br#"{"jobs":1}"#,
            br#"{"jobs_processed":1,"jobs_delta":1}"#,
            br#"[1]"#,
            br#"null"#,
            br#"{"status":"#,
            br#"{"metadata":[1]}"#,
            br#"{"jobs_delta":1.5}"#,
        ] {
            assert!(parse_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let big = format!(r#"{{"metadata":{{"a":"{}"}}}}"#, "x".repeat(MAX_METADATA));
        assert!(parse_body(big.as_bytes()).unwrap_err().contains("metadata"));
    }

    #[test]
    fn pings() {
        assert_eq!(ping_kind(None), Ok(PingKind::Success));
        assert_eq!(ping_kind(Some("0")), Ok(PingKind::Success));
        assert_eq!(ping_kind(Some("3")), Ok(PingKind::Fail(Some(3))));
        assert_eq!(ping_kind(Some("255")), Ok(PingKind::Fail(Some(255))));
        for bad in ["256", "+1", "-1", "", "0x1", "1000", "stop"] {
            assert!(ping_kind(Some(bad)).is_err(), "{bad}");
        }
        let b = parse_ping(Some("fail"), b"boom\n").unwrap();
        assert_eq!(b.last_error.as_deref(), Some("failed: boom"));
        assert_eq!(b.errors, Some(Counter::Add(1)));
        // What `period`/`schedule` judge: a log line is not a run.
        let run = |a: Option<&str>| parse_ping(a, b"").unwrap().run;
        assert_eq!(run(None), Some(RunReport::Succeeded));
        assert_eq!(run(Some("0")), Some(RunReport::Succeeded));
        assert_eq!(run(Some("start")), Some(RunReport::Started));
        assert_eq!(run(Some("fail")), Some(RunReport::Failed));
        assert_eq!(run(Some("2")), Some(RunReport::Failed));
        assert_eq!(run(Some("log")), None);
        let long = vec![b'a'; 5000];
        let b = parse_ping(Some("log"), &long).unwrap();
        assert_eq!(b.status.unwrap().len(), PING_EXCERPT);
        assert_eq!(parse_ping(Some("log"), b"").unwrap().status, None);
    }

    #[test]
    fn tokens() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h, None).is_err());
        assert_eq!(bearer(&h, Some("a=1&token=abc")).unwrap(), "abc");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(bearer(&h, Some("token=abc")).unwrap(), "xyz");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert!(bearer(&h, None).is_err());
    }
}
