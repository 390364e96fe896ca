//! The acceptor thread with a real committer and log: the events record's receive time
//! (t3 of the clock models) and the ACK's `received_at` (t2 of the device's exchange) are
//! one clock read. Before the ingest core they were two (the receive thread's SystemTime
//! stamp, and the endpoint's origin + monotonic elapsed, its origin truncated to ms): this
//! test failed on that shape by 336 µs with no clock step at all, and by an hour after a
//! one-hour step.

use driftlog_collector::acceptor::{Acceptor, AcceptorConfig};
use driftlog_collector::clocks::Clocks;
use driftlog_collector::committer::{self, Writer};
use driftlog_collector::config::CollectorConfig;
use driftlog_collector::ingest::{Batch, ReplyPath, Route};
use driftlog_collector::ingest_core::{IngestConfig, IngestCore};
use driftlog_collector::keys::Keys;
use driftlog_collector::log::block::decode_block;
use driftlog_collector::log::record::Record;
use driftlog_collector::log::{Log, LogConfig};
use driftlog_collector::metrics::Metrics;
use driftlog_collector::stream_states::{StateLimits, StreamBounds, StreamStates};
use driftlog_eventtime::clock::ClockConfig;
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::wire::{
    Body, DataWriter, Direction, Event, FrameKind, MacKey, Payload, Sample, Sealer, Tags, open,
};
use driftlog_protocol::{DeviceId, Instant};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

impl ReplyPath for Capture {
    fn send(&mut self, _device: DeviceId, _peer: Option<SocketAddr>, datagram: &[u8]) -> bool {
        self.0.lock().unwrap().push(datagram.to_vec());
        true
    }
}

#[test]
fn the_record_and_the_ack_carry_one_receive_time_through_the_driver() {
    let secret = [7u8; 32];
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(&dir.path().join("log.redb"), LogConfig::default()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let keys =
        Keys::parse(&format!("[[device]]\ndevice_id = 42\nkey_id = 42\nkey = \"{}\"\n", "07".repeat(32))).unwrap();
    let endpoint = Endpoint::new(EndpointConfig::new(log.next_epoch(1).unwrap(), 7), keys);
    let defaults = CollectorConfig::default();
    let config = IngestConfig {
        flush_interval: Duration::from_millis(5),
        max_block_bytes: defaults.log.max_block_bytes,
        max_commit_bytes: defaults.log.max_commit_bytes,
        claim_interval_ms: None,
        max_streams: 1_000,
        source_filter: defaults.source_filter(),
    };
    let limits = StateLimits { max_states: 1_000, max_states_per_device: 100 };
    let bounds = StreamBounds::new(StreamStates::open(log.clone(), limits).unwrap(), Duration::from_secs(600));
    let (committer, committer_thread) = committer::spawn(log.clone(), 1, metrics.clone()).unwrap();
    let (sink, queue) = std::sync::mpsc::sync_channel(4);
    let replies = Capture(Arc::default());
    let core = IngestCore::new(config, endpoint, bounds, Clocks::new(ClockConfig::default(), 100_000));
    let keys_config = AcceptorConfig { keys_file: None, key_mode: driftlog_collector::keys::KeyMode::KeysFile };
    let acceptor = Acceptor::new(
        keys_config,
        core,
        vec![Box::new(replies.clone())],
        committer.client(Writer::Ingest),
        queue,
        metrics.clone(),
    );
    drop(committer);
    let thread = std::thread::spawn(move || acceptor.run());

    // One frame.
    let mut sealer = Sealer::new(42, MacKey::new(&secret), 1);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(500));
    let mut buf = vec![0u8; 1_400];
    let mut writer = DataWriter::new(&mut buf, &header, 0, 1, 0, 1).unwrap();
    let tags = [];
    let sample = Sample { name: "t", value: 1.0, tags: Tags::new(&tags) };
    writer.push(&Event { mono: Instant::from_micros(1), wall: None, payload: Payload::Gauge(sample) }).unwrap();
    let (sealed, len) = writer.into_parts();
    let total = sealer.seal(sealed, len).unwrap();
    let mut batch = Batch::with_capacity(1, total);
    batch.push(&buf[..total], Route { source: 0, peer: Some("192.0.2.1:9".parse().unwrap()) });
    sink.send(batch).unwrap();

    let mut ack = None;
    for _ in 0..200 {
        if let Some(datagram) = replies.0.lock().unwrap().first() {
            let key = MacKey::new(&secret);
            if let Body::Ack(a) = open(datagram, Direction::FromCollector, 2_048, |_| Some(&key)).unwrap().body {
                ack = Some(a);
            }
        }
        if ack.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(sink);
    thread.join().unwrap();
    committer_thread.join().unwrap();
    let ack = ack.expect("an ACK");
    let blocks = log.read_blocks(0, 8).unwrap();
    let (_, records) = decode_block(0, &blocks[0].value).unwrap();
    let received = records
        .iter()
        .find_map(|(_, r)| if let Record::Events { head, .. } = r { Some(head.received_unix_us) } else { None })
        .unwrap();
    assert_eq!(ack.received_at.as_micros() as i64, received, "the ACK's t2 and the record's t3 are one clock read");
}
