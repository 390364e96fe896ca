//! Applications hand events to the agent over a Unix stream socket, one line per event
//! ([`line`] has the format); each line is answered, in order, with
//! `ok STREAM/EPOCH/SEQ` once the event is durable in the outbox, or `error MESSAGE`.
//! `driftlog-agent emit` is a client of the same socket ([`client`]).

pub mod client;
pub mod line;
pub mod socket;
