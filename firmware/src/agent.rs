//! The agent: samples the sensors into the ring, drives the protocol's `Sender` over the
//! serial link, and feeds it the collector's ACKs and NAKs, exactly as the Linux agent's
//! driver does (same sender, same frames, same replay protection for collector frames).
//!
//! One task does all of it, so no state is shared between tasks; it sleeps until the earliest
//! of the sender's next deadline, the next sample and a byte arriving.

use crate::args::{self, Args};
use crate::board;
use crate::link::{self, Decoded, FrameDecoder};
use crate::ring::Ring;
use crate::semihosting::{self, EXIT_BAD_ARGUMENTS, EXIT_DONE, EXIT_NOT_DRAINED, Line};
use crate::sensors::{PeriodCounter, Reading, Sensor, SimulatedTemperature};
use driftlog_protocol::wire::{Body, Direction, MacKey, Reject, RejectCounts, ReplayGuard, Sealer, open};
use driftlog_protocol::{Backlog, Instant, KeyId, Sender, SenderConfig, StreamId};
use embassy_futures::select::select;
use embassy_time::Timer;

mod key {
    include!(concat!(env!("OUT_DIR"), "/provisioned_key.rs"));
}

/// Readings held until acknowledged: 16 bytes each.
pub const OUTBOX_EVENTS: usize = 128;
/// Dropped ranges awaiting acknowledgement; drops that touch merge into one.
const OUTBOX_TOMBSTONES: usize = 16;
const FRAMES_IN_FLIGHT: usize = 32;
/// Disjoint ranges queued for retransmission per epoch.
const RETRANSMIT_RANGES: usize = 16;
/// Datagrams the firmware sends: 16 readings fit, and a lost frame costs little on a slow link.
const MAX_DATAGRAM_BYTES: usize = 192;
/// Longest frame accepted from the collector, COBS-encoded: an ACK with all 16 SACK ranges
/// fits; a longer NAK is counted as oversized and the next one (or a timeout) covers it.
const MAX_RECEIVED_FRAME_BYTES: usize = 384;
const STREAM: StreamId = 0;
/// Collector epochs whose replay windows are kept (the current one and the one before a
/// collector restart), and frames per window.
type CollectorReplayGuard = ReplayGuard<2, 16>;
/// The progress line is printed at most this often (device time).
const PROGRESS_INTERVAL_US: u64 = 50_000;

type FirmwareSender = Sender<FRAMES_IN_FLIGHT, RETRANSMIT_RANGES>;
type FirmwareRing = Ring<OUTBOX_EVENTS, OUTBOX_TOMBSTONES>;

/// Serial-link counters, reported at exit.
#[derive(Clone, Copy, Debug, Default)]
struct LinkStats {
    frames_sent: u64,
    bytes_sent: u64,
    frames_received: u64,
    bytes_received: u64,
    /// Frames that were not valid COBS.
    bad_frames: u64,
    /// Frames longer than [`MAX_RECEIVED_FRAME_BYTES`].
    oversized_frames: u64,
    /// Valid COBS, refused by the protocol (forged, replayed, malformed, unknown key ...).
    rejected: RejectCounts,
    encode_errors: u64,
}

/// Everything but the two large parts, which live as separate locals of the task (see
/// [`run`]).
struct Agent<'a> {
    args: Args,
    key_id: KeyId,
    key: MacKey,
    sealer: Sealer,
    sender: &'a mut FirmwareSender,
    ring: &'a mut FirmwareRing,
    replay: CollectorReplayGuard,
    decoder: FrameDecoder<MAX_RECEIVED_FRAME_BYTES>,
    temperature: SimulatedTemperature,
    periods: PeriodCounter,
    stats: LinkStats,
    datagram: [u8; MAX_DATAGRAM_BYTES],
    encoded: [u8; cobs::max_encoding_length(MAX_DATAGRAM_BYTES)],
    /// Everything below this sequence number is acknowledged (last printed).
    reported_below: u64,
    next_progress_us: u64,
}

fn now_us() -> u64 {
    embassy_time::Instant::now().as_micros()
}

/// Parses the boot arguments in a scope of its own, so the command-line buffer is not part
/// of the task's state.
fn boot_args() -> Result<Args, &'static str> {
    let mut buf = [0u8; 512];
    args::parse(semihosting::cmdline(&mut buf)).map_err(|error| error.message())
}

/// Runs until every produced event is acknowledged (with `events=N`), or forever. Returns the
/// exit code.
pub async fn run() -> u32 {
    let args = match boot_args() {
        Ok(args) => args,
        Err(message) => {
            Line::new("bad_arguments").text(message).send();
            return EXIT_BAD_ARGUMENTS;
        }
    };
    let Some((key_id, secret)) = args.key.or(key::PROVISIONED_KEY) else {
        Line::new("no_key").text("build with DRIFTLOG_KEY_FILE=<keygen output> or boot with key=ID:HEX").send();
        return EXIT_BAD_ARGUMENTS;
    };
    Line::new("boot")
        .text(board::NAME)
        .field("epoch", args.epoch)
        .field("key_id", u64::from(key_id))
        .field("outbox_events", OUTBOX_EVENTS as u64)
        .field("interval_ms", u64::from(args.interval_ms))
        .field("events", args.events)
        .send();
    let temperature = SimulatedTemperature::new(args.epoch);
    let periods = PeriodCounter::new(args.interval_ms * 1_000);
    // The ring and the sender are most of the task's state. Built into one struct, the whole
    // of it (7.5 KiB) sat on the stack once before moving into the task: separate locals cost
    // the stack one part at a time.
    let mut ring = FirmwareRing::new(args.epoch, &[temperature.channel(), periods.channel()]);
    let mut config = SenderConfig::new(STREAM);
    config.max_datagram_bytes = MAX_DATAGRAM_BYTES;
    config.max_events_per_frame = 16;
    config.max_in_flight_bytes = FRAMES_IN_FLIGHT * MAX_DATAGRAM_BYTES;
    let mut sender = FirmwareSender::new(config, &ring);
    let mut agent = Agent::new(args, key_id, MacKey::new(&secret), &mut sender, &mut ring, temperature, periods);
    agent.run().await
}

impl<'a> Agent<'a> {
    fn new(
        args: Args,
        key_id: KeyId,
        key: MacKey,
        sender: &'a mut FirmwareSender,
        ring: &'a mut FirmwareRing,
        temperature: SimulatedTemperature,
        periods: PeriodCounter,
    ) -> Agent<'a> {
        Agent {
            sealer: Sealer::new(key_id, key.clone(), args.epoch),
            sender,
            ring,
            replay: CollectorReplayGuard::new(60_000_000),
            decoder: FrameDecoder::new(),
            temperature,
            periods,
            stats: LinkStats::default(),
            datagram: [0; MAX_DATAGRAM_BYTES],
            encoded: [0; cobs::max_encoding_length(MAX_DATAGRAM_BYTES)],
            reported_below: 0,
            next_progress_us: 0,
            args,
            key_id,
            key,
        }
    }

    async fn run(&mut self) -> u32 {
        let interval_us = u64::from(self.args.interval_ms) * 1_000;
        let mut next_sample_us = now_us();
        let mut producing = true;
        let mut drain_deadline_us = u64::MAX;
        loop {
            let now = now_us();
            if producing && now >= next_sample_us {
                producing = self.sample(now);
                // A late executor skips samples rather than bursting to catch up.
                next_sample_us = (next_sample_us + interval_us).max(now + 1);
                if !producing {
                    drain_deadline_us = now.saturating_add(self.args.drain_s * 1_000_000);
                    Line::new("produced")
                        .field("epoch", self.args.epoch)
                        .field("events", self.ring.stats().produced)
                        .send();
                }
            }
            self.receive(now);
            self.sender.handle_timeout(Instant::from_micros(now));
            self.transmit(now);
            self.report_progress(now);
            if !producing {
                if self.ring.is_empty() && self.sender.is_idle(self.ring) {
                    self.report_final("done");
                    return EXIT_DONE;
                }
                if now >= drain_deadline_us {
                    self.report_final("not_drained");
                    return EXIT_NOT_DRAINED;
                }
            }
            let mut wake_us = self.sender.poll_timeout().map_or(u64::MAX, Instant::as_micros);
            wake_us = wake_us.min(if producing { next_sample_us } else { drain_deadline_us });
            if wake_us > now_us() {
                select(link::RX_READY.wait(), Timer::at(embassy_time::Instant::from_micros(wake_us))).await;
            }
        }
    }

    /// Samples every sensor once. Returns whether to keep producing.
    fn sample(&mut self, now: u64) -> bool {
        let limit = self.args.events;
        let sensors: [&mut dyn Sensor; 2] = [&mut self.temperature, &mut self.periods];
        for (channel, sensor) in sensors.into_iter().enumerate() {
            if limit > 0 && self.ring.stats().produced >= limit {
                break;
            }
            if let Some(value) = sensor.sample(now) {
                self.ring.push(Reading { mono_us: now, raw: value, channel: channel as u8 });
            }
        }
        limit == 0 || self.ring.stats().produced < limit
    }

    /// Decodes what the UART received and handles each complete frame. Bounded per call, so a
    /// flood on the link cannot starve sampling and sending.
    fn receive(&mut self, now: u64) {
        let mut chunk = [0u8; 64];
        for _ in 0..16 {
            let count = link::take_received(&mut chunk);
            if count == 0 {
                return;
            }
            self.stats.bytes_received += count as u64;
            for &byte in &chunk[..count] {
                match self.decoder.feed(byte) {
                    Decoded::Pending => {}
                    Decoded::Frame(_) => self.handle_frame(now),
                    Decoded::BadFrame => self.stats.bad_frames += 1,
                    Decoded::Oversized => self.stats.oversized_frames += 1,
                }
            }
        }
    }

    /// Verifies a collector frame (MAC, then replay) and feeds it to the sender. Anything
    /// refused is counted by reason and changes nothing else.
    fn handle_frame(&mut self, now: u64) {
        self.stats.frames_received += 1;
        let (key_id, key) = (self.key_id, &self.key);
        let datagram = self.decoder.frame();
        let opened = match open(datagram, Direction::FromCollector, datagram.len(), |id| (id == key_id).then_some(key))
        {
            Ok(opened) => opened,
            Err(reason) => return self.stats.rejected.record(reason),
        };
        let header = opened.header;
        if let Err(reason) = self.replay.check(header.epoch, header.sent_at.as_micros()) {
            return self.stats.rejected.record(reason);
        }
        self.replay.accept(header.epoch, header.sent_at.as_micros());
        let now = Instant::from_micros(now);
        match opened.body {
            Body::Ack(ack) if ack.stream == STREAM => {
                // The ring cannot fail (its error type is uninhabited).
                let _ = self.sender.handle_ack(now, &header, &ack, self.ring);
            }
            Body::Nak(nak) if nak.stream == STREAM => self.sender.handle_nak(now, &nak, self.ring),
            _ => self.stats.rejected.record(Reject::UnexpectedKind),
        }
    }

    /// Sends what the sender has for now; its window bounds the loop.
    fn transmit(&mut self, now: u64) {
        for _ in 0..(FRAMES_IN_FLIGHT + 4) {
            match self.sender.poll_transmit(Instant::from_micros(now), self.ring, &mut self.sealer, &mut self.datagram)
            {
                Ok(Some(transmit)) => {
                    let written = link::send_frame(&self.datagram[..transmit.len], &mut self.encoded);
                    self.stats.frames_sent += 1;
                    self.stats.bytes_sent += written as u64;
                }
                Ok(None) => return,
                Err(_) => {
                    self.stats.encode_errors += 1;
                    return;
                }
            }
        }
    }

    /// Prints how far acknowledgements reached, so a host watching a run knows what the
    /// collector has committed even if the device dies next.
    fn report_progress(&mut self, now: u64) {
        let below = self.ring.tail().seq;
        if below > self.reported_below && now >= self.next_progress_us {
            self.reported_below = below;
            self.next_progress_us = now + PROGRESS_INTERVAL_US;
            Line::new("acked")
                .field("epoch", self.args.epoch)
                .field("below", below)
                .field("produced", self.ring.stats().produced)
                .send();
        }
    }

    fn report_final(&self, outcome: &str) {
        let ring = self.ring.stats();
        let sender = self.sender.stats();
        let link = self.stats;
        Line::new(outcome)
            .field("epoch", self.args.epoch)
            .field("produced", ring.produced)
            .field("acknowledged", ring.released)
            .field("dropped", ring.dropped)
            .field("tombstones_forgotten", ring.tombstones_forgotten)
            .field("held", self.ring.held())
            .field("uptime_us", now_us())
            .send();
        Line::new("link")
            .field("frames_sent", link.frames_sent)
            .field("bytes_sent", link.bytes_sent)
            .field("frames_received", link.frames_received)
            .field("bytes_received", link.bytes_received)
            .field("bad_frames", link.bad_frames)
            .field("oversized_frames", link.oversized_frames)
            .field("rejected", link.rejected.total())
            .field("forged", link.rejected.get(Reject::Forged))
            .field("replayed", link.rejected.get(Reject::Replayed))
            .field("encode_errors", link.encode_errors)
            .send();
        Line::new("sender")
            .field("events_sent", sender.events_sent)
            .field("events_retransmitted", sender.events_retransmitted)
            .field("timeouts", sender.timeouts)
            .field("heartbeats", sender.heartbeats_sent)
            .field("acks", sender.acks_received)
            .field("stack_high_water_bytes", stack_high_water_bytes() as u64)
            .send();
    }
}

/// Bytes of stack ever used: cortex-m-rt painted the stack with 0xCCCC_CCCC at reset, so the
/// lowest word that lost its paint marks the deepest the stack reached.
fn stack_high_water_bytes() -> usize {
    unsafe extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }
    let top = &raw const _stack_start as usize;
    let mut address = &raw const _stack_end as usize;
    // SAFETY: every word between the two linker symbols is RAM this program owns.
    while address < top && unsafe { core::ptr::read_volatile(address as *const u32) } == 0xCCCC_CCCC {
        address += 4;
    }
    top - address
}
