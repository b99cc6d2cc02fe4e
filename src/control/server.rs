//! The daemon side of the control socket.
//!
//! Binds the socket (mode 0600, or 0660 with `socket_group`), checks each
//! peer's credentials with SO_PEERCRED, and maps requests onto the
//! [`Supervisor`]. Never touches a child directly.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::protocol::{Actions, Pong, Reply, Request, MAX_LINE};
use crate::config::Group;
use crate::program;
use crate::supervisor::Supervisor;

/// Bind the control socket at `path`, replacing a stale socket file.
///
/// The caller must hold the state-dir lock, so no live daemon owns `path`.
pub fn bind(path: &Path, group: Option<&Group>) -> io::Result<UnixListener> {
    if path.as_os_str().len() >= 108 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path `{}` is longer than the 107 bytes a unix socket allows; set a shorter `socket` in [supervisor]", path.display()),
        ));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(g.gid)))
            .map_err(io::Error::from)?;
    }
    Ok(listener)
}

/// Serve connections until `shutdown` turns true.
pub async fn serve(listener: UnixListener, sup: Arc<Supervisor>, down: watch::Sender<bool>) {
    let mut shutdown = down.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let sup = sup.clone();
                    let down = down.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, sup, down).await {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

fn peer_allowed(stream: &UnixStream, group: Option<&Group>) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() == 0 || cred.uid() == me {
        return Ok(());
    }
    if let Some(g) = group {
        if cred.gid() == g.gid || cred.pid().is_some_and(|pid| process_in_group(pid, g.gid)) {
            return Ok(());
        }
    }
    let allowed = if me == 0 {
        "root".to_string()
    } else {
        format!("uid {me} and root")
    };
    Err(format!(
        "uid {} may not use this socket (only {allowed} may)",
        cred.uid()
    ))
}

/// Whether a process has `gid` among its supplementary groups.
fn process_in_group(pid: i32, gid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
}

async fn connection(
    stream: UnixStream,
    sup: Arc<Supervisor>,
    down: watch::Sender<bool>,
) -> io::Result<()> {
    let refused = peer_allowed(&stream, sup.config().supervisor.socket_group.as_ref()).err();
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    if let Some(why) = refused {
        tracing::warn!(reason = %why, "refused a control connection");
        // Read (and ignore) the request first, so the client's write cannot
        // fail on a closed socket before it reads this answer.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            (&mut reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line),
        )
        .await;
        let hint =
            "run ward's CLI as the daemon's user or root, or set `socket_group` in [supervisor]";
        return write_reply(&mut w, &Reply::error(why, Some(hint.into()))).await;
    }
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let reply = Reply::error(format!("request longer than {MAX_LINE} bytes"), None);
            return write_reply(&mut w, &reply).await;
        }
        let mut exit_after = false;
        let reply = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => {
                exit_after = req == Request::Down;
                handle(req, &sup).await
            }
            Err(e) => Reply::error(
                format!("malformed request: {e}"),
                Some("send one JSON object per line, e.g. {\"cmd\":\"status\"}; see docs/PROTOCOL.md".into()),
            ),
        };
        write_reply(&mut w, &reply).await?;
        if exit_after {
            // Only now, with the reply sent: the daemon exits once this is set.
            let _ = down.send(true);
            return Ok(());
        }
    }
}

async fn write_reply(w: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(reply).map_err(io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await?;
    w.flush().await
}

async fn handle(req: Request, sup: &Arc<Supervisor>) -> Reply {
    let unknown = |e: crate::supervisor::UnknownName| Reply::error(e.to_string(), Some(e.hint()));
    match req {
        Request::Ping => Reply::data(&Pong {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            host: sup.config().supervisor.host.clone(),
            config: sup.config().path.display().to_string(),
        }),
        Request::Status { names, history } => match sup.status(&names, history) {
            Ok(report) => Reply::data(&report),
            Err(e) => unknown(e),
        },
        Request::Start { names } => act(sup, program::Request::Start, &names).await,
        Request::Stop { names } => act(sup, program::Request::Stop, &names).await,
        Request::Restart { names } => act(sup, program::Request::Restart, &names).await,
        Request::Reload => match sup.reload().await {
            Ok(report) => Reply::data(&report),
            Err(e) => Reply::error(
                e.to_string(),
                Some("fix the file (see `ward check`), then `ward reload` again".into()),
            ),
        },
        Request::Beat { name, beat } => {
            let beat = match beat.to_beat() {
                Ok(b) => b,
                Err(e) => return Reply::error(format!("bad heartbeat: {e}"), None),
            };
            beat_all(sup, &name, beat, "heartbeat recorded").await
        }
        Request::JobRun { name, event } => {
            beat_all(sup, &name, event.to_beat(), "job run recorded").await
        }
        Request::ReopenLogs => {
            sup.reopen_logs();
            Reply::data(&Actions { results: vec![] })
        }
        Request::LogSources { names } => match sup.log_sources(&names) {
            Ok(s) => Reply::data(&s),
            Err(e) => unknown(e),
        },
        Request::Down => {
            tracing::info!("`ward down` requested: stopping every program");
            let all = sup.handles();
            let results = sup.stop_ordered(&all).await;
            Reply::data(&Actions {
                results: results
                    .into_iter()
                    .map(|(name, r)| crate::control::protocol::ActionResult {
                        name,
                        ok: r.is_ok(),
                        message: r.unwrap_or_else(|e| e),
                    })
                    .collect(),
            })
        }
    }
}

async fn act(sup: &Arc<Supervisor>, req: program::Request, names: &[String]) -> Reply {
    if names.is_empty() {
        return Reply::error(
            "no program named",
            Some("name one or more programs, or `all`".into()),
        );
    }
    match sup.act(req, names).await {
        Ok(actions) => Reply::data(&actions),
        Err(e) => Reply::error(e.to_string(), Some(e.hint())),
    }
}

/// Hand `beat` (from the operator) to every instance of `name`.
async fn beat_all(
    sup: &Arc<Supervisor>,
    name: &str,
    beat: crate::heartbeat::Beat,
    done: &str,
) -> Reply {
    if sup.config().external(name).is_some() {
        let r = sup.externals().beat(name, beat).await;
        return Reply::data(&Actions {
            results: vec![crate::control::protocol::ActionResult {
                name: name.to_string(),
                ok: r.is_ok(),
                message: r
                    .map(|()| done.to_string())
                    .unwrap_or_else(|e| e.to_string()),
            }],
        });
    }
    let handles = match sup.resolve(&[name.to_string()]) {
        Ok(h) => h,
        Err(e) => return Reply::error(e.to_string(), Some(e.hint())),
    };
    let mut results = Vec::new();
    for h in handles {
        let r = h.beat(beat.clone()).await;
        results.push(crate::control::protocol::ActionResult {
            name: h.id.clone(),
            ok: r.is_ok(),
            message: r
                .map(|()| done.to_string())
                .unwrap_or_else(|e| e.to_string()),
        });
    }
    Reply::data(&Actions { results })
}
