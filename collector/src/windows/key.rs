//! A window key: what results are grouped by.

use driftlog_protocol::DeviceId;
use driftlog_protocol::wire::Tags;
use std::fmt::Write;

/// `name`, then ` tag=value` for each grouped tag present (in the configured order), then
/// ` device=N` when grouping per device. Readable in `log tail`, stable across runs.
pub fn window_key(out: &mut String, name: &str, tags: &Tags<'_>, group_by: &[String], device: Option<DeviceId>) {
    out.clear();
    out.push_str(name);
    for wanted in group_by {
        if let Some(tag) = tags.iter().find(|t| t.key == wanted) {
            out.push(' ');
            out.push_str(tag.key);
            out.push('=');
            out.push_str(tag.value);
        }
    }
    if let Some(device) = device {
        let _ = write!(out, " device={device}");
    }
}
