//! The client side of the ingest socket, for `driftlog-agent emit`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("no agent is running: cannot connect to {path}: {source}")]
    NoAgent { path: String, source: std::io::Error },
    #[error("the agent refused the event: {0}")]
    Refused(String),
    #[error("talking to the agent failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent closed the connection without answering")]
    NoAnswer,
}

/// Sends one line and waits until the agent reports it durable. Returns the event id
/// `stream/epoch/seq`.
pub fn emit_line(socket: &Path, line: &str, timeout: Duration) -> Result<String, EmitError> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|source| EmitError::NoAgent { path: socket.display().to_string(), source })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(line.trim_end().as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let answer = answer.trim_end();
    if let Some(id) = answer.strip_prefix("ok ") {
        Ok(id.to_string())
    } else if let Some(message) = answer.strip_prefix("error ") {
        Err(EmitError::Refused(message.to_string()))
    } else {
        Err(EmitError::NoAnswer)
    }
}
