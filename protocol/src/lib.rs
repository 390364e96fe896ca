//! The driftlog wire format and the sans-IO reliable-delivery core.
//!
//! This crate is shared by the Linux agent, the collector and the Cortex-M firmware.
//! It performs **no IO and reads no clock**: every time-dependent call takes `now`,
//! and every output is written into a buffer the caller owns (the quinn-proto model).
//!
//! # Layout
//! - [`ids`] and [`time`]: the identity of an event `(device, stream, epoch, seq)` and the
//!   device clock types.
//! - [`seq_range`]: half-open sequence ranges and a bounded, sorted range set.
//! - [`wire`]: the authenticated datagram format (header, MAC, replay window, frame bodies,
//!   the batch codec).
//! - [`sender`]: the device side. [`Sender`] drives one stream out of a caller-owned
//!   [`Backlog`] and frees events only when an ACK covers them.
//! - [`receiver`]: the collector side for one `(device, stream, epoch)`. [`Receiver`] admits
//!   each sequence number once, NAKs gaps and produces cumulative ACK + SACK.
//! - [`statsd`]: the StatsD line protocol (the reference grammar and DogStatsD), zero-copy.
//! - `endpoint` (feature `alloc`): routes authenticated datagrams to per-stream receivers.
//!
//! # Contracts
//! - **Decoders never panic**, on any input. Every decode path checks lengths before it reads
//!   and returns a typed [`wire::Reject`] instead. Property tests feed arbitrary bytes to every
//!   decoder (`tests/decode_never_panics.rs`).
//! - **Bad input never changes state.** A frame that is rejected (forged, replayed, malformed,
//!   ...) leaves every window, receiver and counter other than its reject counter untouched.
//! - **No allocation without `alloc`.** Every capacity is a const generic or a constructor
//!   argument, so the firmware knows its memory use at link time.
//! - Panics that remain are programmer errors and are documented on the function
//!   (`# Panics`), never reachable from bytes received off the network.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod ids;
pub mod receiver;
mod rng;
pub mod sender;
pub mod seq_range;
pub mod statsd;
pub mod time;
pub mod wire;

#[cfg(feature = "alloc")]
pub mod endpoint;

pub use ids::{DeviceId, Epoch, EventId, KeyId, Seq, StreamId};
pub use receiver::{Receiver, ReceiverConfig, ReceiverStats};
pub use rng::SplitMix64;
pub use sender::{Backlog, Position, Sender, SenderConfig, SenderStats};
pub use seq_range::{SeqRange, SeqRangeSet};
pub use time::{ClockQuality, Instant, WallTime};
