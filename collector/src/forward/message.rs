//! What one log offset becomes when forwarded: a subject, a message id that is the same
//! whichever collector forwards it (so JetStream's duplicate window drops a second copy),
//! and a JSON payload.

use crate::log::record::{Record, event_json, global_id};

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub offset: u64,
    pub subject: String,
    pub id: String,
    pub payload: Vec<u8>,
}

/// The messages of one record at `offset` (one per event for an events record).
pub fn messages(prefix: &str, offset: u64, record: &Record<'_>, out: &mut Vec<Message>) {
    match record {
        Record::Events { head, .. } => {
            for (index, item) in record.events().enumerate() {
                let Ok((seq, event)) = item else { break };
                let offset = offset + index as u64;
                out.push(Message {
                    offset,
                    subject: format!("{prefix}.events.{}", head.device),
                    id: global_id(head.device, head.stream, head.epoch, seq),
                    payload: event_json(offset, head, seq, &event).to_string().into_bytes(),
                });
            }
        }
        Record::Gap { kind, head } => {
            let mut lines = Vec::new();
            crate::log::record::to_json_lines(offset, record, &mut lines);
            out.push(Message {
                offset,
                subject: format!("{prefix}.gaps.{}", head.device),
                id: format!(
                    "{}-{}-{}-{}-{}-{}",
                    kind.name(),
                    head.device,
                    head.stream,
                    head.epoch,
                    head.range.start,
                    head.range.end
                ),
                payload: lines.first().map(|l| l.to_string().into_bytes()).unwrap_or_default(),
            });
        }
        Record::Window(w) => out.push(Message {
            offset,
            subject: format!("{prefix}.windows.{}", w.window),
            // The same result gets the same id whichever collector or replay produced it; an
            // update of the same bounds always changes the count, so ids never collide.
            id: format!(
                "w-{}-{}-{}-{}-{}-{}",
                w.window,
                w.key,
                w.start_unix_us,
                w.end_unix_us,
                crate::log::record::change_name(w.change),
                w.count
            ),
            payload: json_payload(offset, record),
        }),
        Record::Late(l) => out.push(Message {
            offset,
            subject: format!("{prefix}.late.{}", l.window),
            id: format!("late-{}-{}", l.window, l.id),
            payload: json_payload(offset, record),
        }),
        // The processor's clock notes and the devices' completeness claims are internal: what
        // they decide reaches consumers as window results.
        Record::Tick(_) | Record::Claim(_) => {}
        Record::Other { kind, bytes } if *kind == crate::log::record::RecordKind::StatsdFlush as u8 => {
            let json = crate::statsd::record_json(offset, bytes);
            let source = json["source"].as_str().unwrap_or("unknown").to_string();
            // One flush per source and instant: the same id whoever forwards it. An
            // event-time window's results are one per window, change and revision.
            let id = match json.get("window_start_unix_ms") {
                Some(start) => {
                    format!("statsd-{source}-{start}-{}-{}", json["change"].as_str().unwrap_or(""), json["revision"])
                }
                None => format!("statsd-{source}-{}", json["flush_unix_ms"]),
            };
            out.push(Message {
                offset,
                subject: format!("{prefix}.statsd.{source}"),
                id,
                payload: json.to_string().into_bytes(),
            });
        }
        Record::Other { .. } => {
            let mut lines = Vec::new();
            crate::log::record::to_json_lines(offset, record, &mut lines);
            out.push(Message {
                offset,
                subject: format!("{prefix}.{}", record.kind_name()),
                id: format!("{}-{offset}", record.kind_name()),
                payload: lines.first().map(|l| l.to_string().into_bytes()).unwrap_or_default(),
            });
        }
    }
}

fn json_payload(offset: u64, record: &Record<'_>) -> Vec<u8> {
    let mut lines = Vec::new();
    crate::log::record::to_json_lines(offset, record, &mut lines);
    lines.first().map(|l| l.to_string().into_bytes()).unwrap_or_default()
}
