//! The bounds every driftlog HTTP endpoint enforces.

use std::time::Duration;

/// Bounds on what clients may take from a server (see the crate docs for what each guards).
/// The defaults suit a scrape endpoint on a small machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A request head (and the next one on a keep-alive connection) must arrive within this.
    pub header_read_timeout: Duration,
    /// Longest a request may take from its head to the end of its response (408 after).
    pub request_timeout: Duration,
    /// Largest request body, bytes (413 beyond); the endpoints take none.
    pub max_request_body_bytes: usize,
    /// Largest request head, bytes (hyper's read buffer; at least 8192).
    pub max_head_bytes: usize,
    /// Longest a connection stays open, keep-alive or not; the client reconnects.
    pub max_connection_age: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 32,
            header_read_timeout: Duration::from_secs(5),
            // `log replay` over a large log runs in one request.
            request_timeout: Duration::from_secs(120),
            max_request_body_bytes: 16 * 1024,
            max_head_bytes: 16 * 1024,
            max_connection_age: Duration::from_secs(300),
        }
    }
}
