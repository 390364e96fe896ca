//! Encode + seal and open + decode of a batch of 32 small metric events, in events per
//! second on one core. `cargo bench -p driftlog-protocol --bench codec`

use blake2::Blake2sMac;
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use driftlog_protocol::wire::{
    Body, DataWriter, Direction, Event, FrameKind, MacKey, Payload, Sample, Sealer, Tag, Tags, open,
};
use driftlog_protocol::{ClockQuality, Instant, WallTime};
use std::hint::black_box;

const NAMES: [&str; 4] = ["cpu.user", "cpu.idle", "mem.used", "net.rx_b"];

fn events(count: u32, tagged: bool) -> Vec<Event<'static>> {
    (0..count)
        .map(|index| {
            let mono = 3_600_000_000 + u64::from(index) * 10_000;
            const HOST: [Tag<'static>; 1] = [Tag { key: "host", value: "gw-17" }];
            let tags = if tagged { Tags::new(&HOST) } else { Tags::EMPTY };
            Event {
                mono: Instant::from_micros(mono),
                wall: Some(WallTime {
                    unix_micros: 1_767_225_600_000_000 + mono as i64,
                    quality: ClockQuality::Synchronized,
                }),
                payload: Payload::Gauge(Sample {
                    name: NAMES[index as usize % 4],
                    value: f64::from(index) * 0.5,
                    tags,
                }),
            }
        })
        .collect()
}

fn encode(sealer: &mut Sealer, events: &[Event<'_>], buf: &mut [u8]) -> usize {
    let header = sealer.header(FrameKind::Data, Instant::from_micros(3_700_000_000));
    let mut writer = DataWriter::new(buf, &header, 0, 3, 100_000, 64).unwrap();
    for event in events {
        writer.push(event).unwrap();
    }
    let (buf, len) = writer.into_parts();
    sealer.seal(buf, len).unwrap()
}

fn decode(key: &MacKey, datagram: &[u8]) -> f64 {
    let opened = open(datagram, Direction::FromDevice, 1_472, |_| Some(key)).unwrap();
    let Body::Data(frame) = opened.body else { unreachable!() };
    let mut sum = 0.0;
    for (_, event) in frame.events() {
        if let Payload::Gauge(sample) = event.payload {
            sum += sample.value;
        }
    }
    sum
}

fn bench(c: &mut Criterion) {
    let key = MacKey::new(&[7; 32]);
    let mut group = c.benchmark_group("batch_of_32");
    for tagged in [false, true] {
        let batch = events(32, tagged);
        let label = if tagged { "tagged" } else { "untagged" };
        group.throughput(Throughput::Elements(32));
        let mut sealer = Sealer::new(1, key.clone(), 3);
        let mut buf = [0u8; 1_472];
        group.bench_function(BenchmarkId::new("encode_seal", label), |b| {
            b.iter(|| black_box(encode(&mut sealer, black_box(&batch), &mut buf)))
        });
        let len = encode(&mut sealer, &batch, &mut buf);
        let datagram = buf[..len].to_vec();
        group.bench_function(BenchmarkId::new("open_decode", label), |b| {
            b.iter(|| black_box(decode(&key, black_box(&datagram))))
        });
        group.bench_function(BenchmarkId::new("encode_seal_open_decode", label), |b| {
            b.iter(|| {
                let len = encode(&mut sealer, black_box(&batch), &mut buf);
                black_box(decode(&key, &buf[..len]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches, mac);

fn bench_mac(c: &mut Criterion) {
    let key = MacKey::new(&[7; 32]);
    let sealer = Sealer::new(1, key, 3);
    let mut buf = [0u8; 1_472];
    let mut group = c.benchmark_group("mac");
    group.throughput(Throughput::Bytes(681));
    group.bench_function("seal_681_bytes", |b| b.iter(|| black_box(sealer.seal(black_box(&mut buf), 665).unwrap())));
    // The peer: RustCrypto's `blake2` (SIMD-shaped, unrolled) on the same 665 covered bytes,
    // its key block precomputed too (a clone of the keyed state per tag).
    let keyed = <Blake2sMac<U16> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
    group.bench_function("rustcrypto_blake2s_681_bytes", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            Mac::update(&mut mac, black_box(&buf[..665]));
            black_box(mac.finalize_fixed())
        })
    });
    group.finish();
}

criterion_group!(mac, bench_mac);
