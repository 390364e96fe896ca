//! Forwarders read the log from their own durably stored offset and publish elsewhere.
//! Today: NATS JetStream.

pub mod jetstream;
pub mod message;
