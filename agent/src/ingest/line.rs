//! The ingest line format, one event per line:
//!
//! - text: `name=value[,tag=value...]`, a gauge (`cpu.temp=41.5,room=lab`);
//! - JSON: `{"name": "...", "value": 1.5, "kind": "counter", "tags": {"k": "v"}}`, where
//!   `kind` is one of `counter`, `gauge`, `gauge_delta`, `timer`, `histogram`, `set` (default
//!   `gauge`) and a set's `value` is the member string.

use driftlog_protocol::sender::{OwnedEvent, OwnedPayload};
use driftlog_protocol::{Instant, WallTime};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Longest accepted line; longer ones are refused without being buffered further.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Counter,
    Gauge,
    #[value(name = "gauge_delta", alias = "gauge-delta")]
    GaugeDelta,
    Timer,
    Histogram,
    Set,
}

impl Kind {
    /// The name the JSON line format uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::GaugeDelta => "gauge_delta",
            Kind::Timer => "timer",
            Kind::Histogram => "histogram",
            Kind::Set => "set",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Member(String),
}

/// An event as an input described it, before it is stamped.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parsed {
    pub name: String,
    pub value: Value,
    #[serde(default = "default_kind")]
    pub kind: Kind,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_kind() -> Kind {
    Kind::Gauge
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("empty line")]
    Empty,
    #[error("expected name=value[,tag=value...]: {0}")]
    Text(String),
    #[error("bad JSON event: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

pub fn parse_line(line: &str) -> Result<Parsed, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong);
    }
    let line = line.trim();
    if line.is_empty() {
        return Err(LineError::Empty);
    }
    let parsed = if line.starts_with('{') {
        serde_json::from_str::<Parsed>(line).map_err(|error| LineError::Json(error.to_string()))?
    } else {
        parse_text(line)?
    };
    check(&parsed)?;
    Ok(parsed)
}

fn parse_text(line: &str) -> Result<Parsed, LineError> {
    let mut fields = line.split(',');
    let first = fields.next().unwrap_or_default();
    let (name, value) = first.split_once('=').ok_or_else(|| LineError::Text(format!("no '=' in {first:?}")))?;
    let value: f64 = value.trim().parse().map_err(|_| LineError::Text(format!("value {value:?} is not a number")))?;
    let mut tags = BTreeMap::new();
    for field in fields {
        let (key, tag_value) =
            field.split_once('=').ok_or_else(|| LineError::Text(format!("tag {field:?} has no '='")))?;
        tags.insert(key.trim().to_string(), tag_value.trim().to_string());
    }
    Ok(Parsed { name: name.trim().to_string(), value: Value::Number(value), kind: Kind::Gauge, tags })
}

fn check(parsed: &Parsed) -> Result<(), LineError> {
    match (&parsed.value, parsed.kind) {
        (Value::Member(_), Kind::Set) | (Value::Number(_), _) => {}
        (Value::Member(_), _) => return Err(LineError::Invalid("only a set takes a string value".into())),
    }
    // The protocol's own limits (name and tag lengths, finite values).
    let event = stamp(parsed.clone(), Instant::ZERO, None);
    event.with_event(|event| event.payload.validate()).map_err(|error| LineError::Invalid(error.to_string()))?;
    if parsed.tags.len() > driftlog_protocol::wire::MAX_TAGS {
        return Err(LineError::Invalid(format!("more than {} tags", driftlog_protocol::wire::MAX_TAGS)));
    }
    Ok(())
}

/// Stamps a parsed event with the device clocks.
pub fn stamp(parsed: Parsed, mono: Instant, wall: Option<WallTime>) -> OwnedEvent {
    let tags: Vec<(String, String)> = parsed.tags.into_iter().collect();
    let name = parsed.name;
    let payload = match (parsed.kind, parsed.value) {
        (Kind::Set, Value::Member(member)) => OwnedPayload::Set { name, member, tags },
        (Kind::Set, Value::Number(number)) => OwnedPayload::Set { name, member: number.to_string(), tags },
        (kind, value) => {
            let value = match value {
                Value::Number(number) => number,
                Value::Member(_) => f64::NAN,
            };
            match kind {
                Kind::Counter => OwnedPayload::Counter { name, value, tags },
                Kind::GaugeDelta => OwnedPayload::GaugeDelta { name, value, tags },
                Kind::Timer => OwnedPayload::Timer { name, value, tags },
                Kind::Histogram => OwnedPayload::Histogram { name, value, tags },
                Kind::Gauge | Kind::Set => OwnedPayload::Gauge { name, value, tags },
            }
        }
    };
    OwnedEvent { mono, wall, payload }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_parse() {
        let text = parse_line("cpu.temp=41.5,room=lab\n").unwrap();
        assert_eq!(text.name, "cpu.temp");
        assert_eq!(text.value, Value::Number(41.5));
        assert_eq!(text.tags.get("room").map(String::as_str), Some("lab"));
        let json = parse_line(r#"{"name":"logins","value":"alice","kind":"set","tags":{"app":"web"}}"#).unwrap();
        assert_eq!((json.kind, json.value), (Kind::Set, Value::Member("alice".into())));
        let counter = parse_line(r#"{"name":"requests","value":3,"kind":"counter"}"#).unwrap();
        assert_eq!(counter.kind, Kind::Counter);
    }

    #[test]
    fn bad_lines_get_clear_errors() {
        assert_eq!(parse_line("   "), Err(LineError::Empty));
        assert!(matches!(parse_line("novalue"), Err(LineError::Text(_))));
        assert!(matches!(parse_line("x=abc"), Err(LineError::Text(_))));
        assert!(matches!(parse_line("x=1,broken"), Err(LineError::Text(_))));
        assert!(matches!(parse_line("x=NaN"), Err(LineError::Invalid(_))));
        assert!(matches!(parse_line("=1"), Err(LineError::Invalid(_))));
        assert!(matches!(parse_line(r#"{"name":"x","value":"y"}"#), Err(LineError::Invalid(_))));
        assert!(matches!(parse_line(r#"{"name":"x","value":1,"extra":2}"#), Err(LineError::Json(_))));
        assert!(matches!(parse_line(&format!("{}=1", "n".repeat(300))), Err(LineError::Invalid(_))));
        assert_eq!(parse_line(&"x".repeat(MAX_LINE_BYTES + 1)), Err(LineError::TooLong));
    }
}
