//! The ingest socket server.

use super::line::{MAX_LINE_BYTES, parse_line, stamp};
use crate::clock::{mono_now, wall_now};
use crate::driver::{Accepted, NotAccepted, STREAM_APPLICATIONS, Submission};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// Answers written per connection ahead of the client reading them.
const REPLIES_IN_FLIGHT: usize = 1_024;

enum Reply {
    Pending(oneshot::Receiver<Result<Accepted, NotAccepted>>),
    Refused(String),
}

/// Binds the socket at `path`, refusing to take over one that another agent still serves.
pub async fn bind(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            anyhow::bail!("another agent is already serving {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    Ok(UnixListener::bind(path)?)
}

/// Serves clients until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    submissions: mpsc::Sender<Submission>,
    max_clients: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let clients = Arc::new(Semaphore::new(max_clients));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let Ok(permit) = clients.clone().try_acquire_owned() else {
                    let _ = stream.write_all(b"error too many clients\n").await;
                    continue;
                };
                let submissions = submissions.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    handle(stream, submissions, shutdown).await;
                    drop(permit);
                });
            }
        }
    }
}

async fn handle(stream: UnixStream, submissions: mpsc::Sender<Submission>, mut shutdown: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let (replies, mut pending) = mpsc::channel::<Reply>(REPLIES_IN_FLIGHT);
    // Answers go out in line order, each as soon as its event is durable.
    let writer = tokio::spawn(async move {
        while let Some(reply) = pending.recv().await {
            let line = match reply {
                Reply::Pending(receiver) => match receiver.await {
                    Ok(Ok(accepted)) => format!("ok {}/{}/{}\n", accepted.stream, accepted.epoch, accepted.first_seq),
                    Ok(Err(refusal)) => format!("error {refusal}\n"),
                    Err(_) => "error the agent is shutting down\n".to_string(),
                },
                Reply::Refused(message) => format!("error {message}\n"),
            };
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
        let read = tokio::select! {
            _ = shutdown.changed() => break,
            read = limited.read_until(b'\n', &mut line) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
            let _ = replies.send(Reply::Refused(format!("line longer than {MAX_LINE_BYTES} bytes; closing"))).await;
            break;
        }
        let reply = match std::str::from_utf8(&line)
            .map_err(|_| "line is not UTF-8".to_string())
            .and_then(|text| parse_line(text).map_err(|e| e.to_string()))
        {
            Err(message) => Reply::Refused(message),
            Ok(parsed) => {
                let event = stamp(parsed, mono_now(), Some(wall_now()));
                let (reply, receiver) = oneshot::channel();
                let submission = Submission { stream: STREAM_APPLICATIONS, events: vec![event], reply: Some(reply) };
                // Waits when the agent's queue is full: back-pressure to the application.
                if submissions.send(submission).await.is_err() {
                    Reply::Refused("the agent is shutting down".into())
                } else {
                    Reply::Pending(receiver)
                }
            }
        };
        if replies.send(reply).await.is_err() {
            break;
        }
    }
    drop(replies);
    let _ = writer.await;
}
