//! The CLI side of the control socket: blocking, one connection per command.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::protocol::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ward is not running (no daemon answers at `{}`)", socket.display())]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("permission denied on the control socket `{}`", socket.display())]
    PermissionDenied {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lost the connection to the daemon at `{}`", socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon sent a reply this ward cannot read")]
    Malformed(#[source] serde_json::Error),
    /// The daemon refused the request; its words.
    #[error("{error}")]
    Refused { error: String, hint: Option<String> },
}

impl ClientError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::NotRunning { .. } => {
                Some("start it with `ward up` (foreground) or `ward up --detach`, with the same config".into())
            }
            ClientError::PermissionDenied { .. } => Some(
                "run the command as the user that runs the daemon (or root), or set `socket_group` in [supervisor]".into(),
            ),
            ClientError::Io { .. } => Some("the daemon may have exited; check `ward status` and its log".into()),
            ClientError::Malformed(_) => Some("the CLI and the daemon may be different versions".into()),
            ClientError::Refused { hint, .. } => hint.clone(),
        }
    }
}

pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                socket: socket.into(),
                source,
            },
            _ => ClientError::NotRunning {
                socket: socket.into(),
                source,
            },
        })?;
        let writer = stream.try_clone().map_err(|source| ClientError::Io {
            socket: socket.into(),
            source,
        })?;
        Ok(Client {
            socket: socket.into(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Send a request and decode the data of its reply (in one pass: a
    /// status reply for many programs is tens of kilobytes).
    pub fn call<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, ClientError> {
        let reply: Reply<T> = self.raw(req)?;
        match reply {
            Reply {
                ok: true,
                data: Some(data),
                ..
            } => Ok(data),
            Reply { ok: true, .. } => {
                serde_json::from_value(serde_json::Value::Null).map_err(ClientError::Malformed)
            }
            Reply { error, hint, .. } => Err(ClientError::Refused {
                error: error.unwrap_or_else(|| "the daemon refused the request".into()),
                hint,
            }),
        }
    }

    fn raw<T: DeserializeOwned>(&mut self, req: &Request) -> Result<Reply<T>, ClientError> {
        let io_err = |source| ClientError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut line = serde_json::to_vec(req).map_err(ClientError::Malformed)?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io_err)?;
        let mut buf = String::new();
        let n = self
            .reader
            .read_line(&mut buf)
            .map_err(|source| ClientError::Io {
                socket: self.socket.clone(),
                source,
            })?;
        if n == 0 {
            // The daemon closes without a reply when it refuses the peer.
            return Err(ClientError::Io {
                socket: self.socket.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                ),
            });
        }
        serde_json::from_str(&buf).map_err(ClientError::Malformed)
    }
}
