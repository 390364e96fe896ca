//! The whole in-process path with no loss: backlog → Sender → sealed datagrams → collector
//! Endpoint (verify, replay check, dedup, event iteration) → ACKs → Sender → backlog release.
//! Reports events per second on one core. `cargo bench -p driftlog-protocol --bench loopback`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::sender::{DropPolicy, MemoryBacklog, OwnedEvent};
use driftlog_protocol::wire::{Body, Direction, MacKey, Sealer, open};
use driftlog_protocol::{DeviceId, Instant, KeyId, Sender, SenderConfig};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

const EVENTS_PER_ROUND: u64 = 32 * 64;

fn bench(c: &mut Criterion) {
    let key = MacKey::new(&[3; 32]);
    let keys: BTreeMap<KeyId, (DeviceId, MacKey)> = BTreeMap::from([(1, (9, key.clone()))]);
    let mut endpoint = Endpoint::new(EndpointConfig::new(1, 1), keys);
    let mut backlog = MemoryBacklog::new(1, 1 << 20, DropPolicy::DropOldest);
    let mut config = SenderConfig::new(0);
    config.max_events_per_frame = 32;
    config.backlog_events_per_second = 0;
    config.max_in_flight_bytes = 1 << 20;
    let mut sender: Sender<256> = Sender::new(config, &backlog);
    let mut sealer = Sealer::new(1, key.clone(), 1);
    let mut now = Instant::from_micros(1_000_000);
    let mut buf = [0u8; 1_472];
    let mut ack = [0u8; 1_472];
    // Pre-built events: the benchmark measures the protocol, not event construction.
    let names = ["cpu.user", "cpu.idle", "mem.used", "net.rx_b"];

    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Elements(EVENTS_PER_ROUND));
    group.bench_function("sender_to_endpoint_32_per_frame", |b| {
        b.iter(|| {
            for index in 0..EVENTS_PER_ROUND {
                backlog.push(OwnedEvent::gauge(
                    now + Duration::from_micros(index),
                    names[index as usize % 4],
                    index as f64,
                ));
            }
            let mut delivered = 0u64;
            while let Some(transmit) = sender.poll_transmit(now, &mut backlog, &mut sealer, &mut buf).unwrap() {
                let received = endpoint.handle_datagram(now, &buf[..transmit.len]).unwrap();
                delivered += received.new_events().count() as u64;
            }
            endpoint.commit_all(now);
            now = now + Duration::from_millis(30);
            while let Some(out) = endpoint.poll_transmit(now, &mut ack) {
                let opened = open(&ack[..out.len], Direction::FromCollector, 1_472, |_| Some(&key)).unwrap();
                if let Body::Ack(repr) = opened.body {
                    sender.handle_ack(now, &opened.header, &repr, &mut backlog).unwrap();
                }
            }
            black_box(delivered)
        })
    });
    group.finish();
    assert_eq!(endpoint.stats().rejects.total(), 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
