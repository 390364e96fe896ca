//! Reading the log for people: `log tail`, `log stats`, `log replay`.
//!
//! redb allows one open handle per file, so while a collector runs these commands ask it
//! over its HTTP port (`/log/tail`, `/log/stats`, `/log/replay`); with the collector stopped
//! they open the file themselves. Both paths run the same functions below.

use crate::log::record::to_json_lines;
use crate::log::{Log, LogError};
use serde_json::Value;

/// Up to `max` offsets starting at `from`, one JSON object each, and the next offset to read.
/// Offsets retention already deleted are skipped (the first line then starts later).
pub fn read_lines(log: &Log, from: u64, max: usize) -> Result<(Vec<Value>, u64), LogError> {
    let mut lines = Vec::new();
    let mut next = from;
    'blocks: for block in log.read_blocks(from, 16)? {
        let (_, records) = block.decode()?;
        for (offset, record) in &records {
            if offset + record.width() <= from {
                continue;
            }
            let mut out = Vec::new();
            to_json_lines(*offset, record, &mut out);
            for line in out {
                let at = line.get("offset").and_then(Value::as_u64).unwrap_or(*offset);
                if at < from {
                    continue;
                }
                if lines.len() >= max {
                    break 'blocks;
                }
                lines.push(line);
                next = at + 1;
            }
        }
    }
    Ok((lines, next))
}

/// One readable line for a JSON record.
pub fn human(line: &Value) -> String {
    let get = |key: &str| line.get(key).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
    match line.get("kind").and_then(Value::as_str) {
        Some("event") => {
            let tags: Vec<String> = line
                .get("tags")
                .and_then(Value::as_object)
                .map(|t| t.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            let value = if line.get("value").is_some() { get("value") } else { get("member") };
            format!(
                "{:>10}  {:<22} {} {}={} {}  t1={}us t2={}us t3={}",
                get("offset"),
                get("id"),
                get("type"),
                get("name"),
                value,
                tags.join(","),
                get("t1_mono_us"),
                get("t2_sent_us"),
                get("t3_received_unix_us"),
            )
        }
        Some(kind @ ("tombstone" | "gap")) => format!(
            "{:>10}  {kind} device {} stream {} epoch {} seq {}..{} ({})",
            get("offset"),
            get("device"),
            get("stream"),
            get("epoch"),
            get("seq_start"),
            get("seq_end"),
            get("reason")
        ),
        _ => format!("{:>10}  {line}", get("offset")),
    }
}

/// A minimal HTTP GET against a running collector; returns the status code and body.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    // One write: a server that reads one segment sees the whole request.
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// `name=value` pairs of a query string.
pub fn query_u64(path: &str, name: &str) -> Option<u64> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}
