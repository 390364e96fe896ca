//! The driftlog device agent for Linux edge devices.
//!
//! Layout (grows with issue 4):
//! - [`outbox`]: the durable, bounded buffer on redb. Assigns sequence numbers, persists the
//!   boot epoch, applies the drop policy with tombstones, and serves the protocol's
//!   [`driftlog_protocol::Backlog`] so the sender streams from disk and frees only on ACK.

pub mod outbox;
