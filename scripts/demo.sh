#!/usr/bin/env bash
# The main job end to end on this machine: a collector on its embedded defaults (UDP
# 127.0.0.1:7400, log under ./driftlog-data, metrics on 127.0.0.1:9400, StatsD on UDP
# 127.0.0.1:8125) and three simulated devices whose clocks are off by up to an hour and drift
# by up to 100 ppm. The devices start first, buffer offline, and deliver everything once the
# collector is up; one of them then loses its network for 15 s and catches up afterwards. The
# log is read back: events with corrected times, and per-device windows that waited for the
# device that was away. A real agent with its StatsD listener (127.0.0.1:8126) starts first
# too: an application's counters sent while the collector is not up yet are counted in the
# windows of the time they were sent.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p driftlog-collector -p driftlog-agent
bin=target/release
demo=driftlog-demo
# Simulated devices are throwaway: each run starts them with empty outboxes and new random
# boot epochs (a lower one than last run's is a device whose counter started over on a fresh
# disk: the collector follows it).
rm -rf "$demo/devices" "$demo/statsd-agent"
mkdir -p "$demo"
# Windows of this run start here (10 s windows); a previous run's last windows, which close
# only now that its devices' new epochs show the old ones complete, are left out below.
since_s=$(( $(date +%s) / 10 * 10 ))
since=$(date -u -d "@$since_s" +%Y-%m-%dT%H:%M:%S.000000Z)
this_run() { awk -v since="$since" 'match($0, /\[[^ ]+/) && substr($0, RSTART + 1, RLENGTH - 1) >= since'; }

# The fleet's keys (simulate derives them from a seed); the collector re-reads the file.
"$bin/driftlog-agent" simulate --devices 3 --events 0 --keys-out "$demo/keys.toml" \
  --data-dir "$demo/devices" --drain-timeout 0 >/dev/null 2>&1 || true

echo "== an application sends StatsD to its device's agent (127.0.0.1:8126) for 6 s, from before the collector is up"
# Device 1 gets its own key (the development key is refused once a keys file is configured).
(umask 077; "$bin/driftlog-collector" keygen --device 1 --keys "$demo/keys.toml" >"$demo/statsd-agent.key" 2>/dev/null)
"$bin/driftlog-agent" run --collector 127.0.0.1:7400 --data-dir "$demo/statsd-agent" --statsd-udp 127.0.0.1:8126 \
  --device-id 1 --key-file "$demo/statsd-agent.key" 2>"$demo/statsd-agent.log" &
agent=$!
sleep 0.5
python3 - "$demo/statsd-sent" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, end = 0, time.time() + 6
while time.time() < end:
    s.sendto(b"app.requests:1|c\napp.latency:42|ms", ("127.0.0.1", 8126))
    sent += 1
    time.sleep(0.05)
open(sys.argv[1], "w").write(str(sent))
PY
app=$!
echo "== devices generate 20 events/s for 30 s; the collector starts 2 s later; device 10000 loses its network from 8 s to 23 s"
"$bin/driftlog-agent" simulate --devices 3 --rate 20 --duration 30 --outage-at 8 --outage-for 15 \
  --clock-offset-ms 3600000 --clock-drift-ppm 100 --data-dir "$demo/devices" 2>"$demo/agents.log" &
agents=$!
sleep 2
first=$("$bin/driftlog-collector" log stats 2>/dev/null | sed -n 's/.*"next_offset": \([0-9]*\).*/\1/p' || true)
"$bin/driftlog-collector" run --keys "$demo/keys.toml" --statsd-udp 127.0.0.1:8125 2>"$demo/collector.log" &
collector=$!
trap 'kill -TERM $agent $collector 2>/dev/null; wait $agent $collector 2>/dev/null' EXIT
sleep 1
echo "== events arriving (log tail --follow, first lines)"
timeout 3 "$bin/driftlog-collector" log tail --follow --from "${first:-0}" | head -n 12 || true
sleep 14
echo "== 18 s in: device 10000 has been away for 10 s; the others' windows closed on their own completeness, its wait"
curl -s http://127.0.0.1:9400/metrics | grep -E '^driftlog_windows_devices(_open)? '
so_far=$("$bin/driftlog-collector" log tail --kind windows --from "${first:-0}" | { grep 'device=10000' || true; } | this_run | wc -l)
echo "   window results of device 10000 so far: $so_far (its window open at the cut waits for the backlog)"
if ! wait "$agents"; then
  echo "the simulated devices failed; see $demo/agents.log:" >&2
  tail -n 5 "$demo/agents.log" >&2
  exit 1
fi
echo "== every device's outbox drained (all events acknowledged)"
echo "== log stats"
"$bin/driftlog-collector" log stats
echo "== replay of the whole log (the pipeline over the stored events; windows.identical: the live results, recomputed byte for byte)"
"$bin/driftlog-collector" log replay --from 0 | python3 -c '
import json, sys
replay = json.load(sys.stdin)
streams = replay.pop("streams")
replay["streams"] = {"count": len(streams), "events": sum(s["events"] for s in streams.values()),
                     "tombstoned": sum(s["tombstoned"] for s in streams.values()),
                     "unrecoverable": sum(s["unrecoverable"] for s in streams.values())}
print(json.dumps(replay, indent=2))'

sleep 1.5 # results are committed with the processor's next checkpoint (every second)
echo "== device 10000's window results (10 s per device and metric, corrected event time): the windows over its"
echo "   outage fired once each, after its backlog landed, with every event: INSERT only, closed by completeness"
"$bin/driftlog-collector" log tail --kind windows --from "${first:-0}" | { grep 'device=10000' || true; } | this_run | head -n 6
echo "   late records (events that missed their window): $("$bin/driftlog-collector" log tail --kind late --from "${first:-0}" | wc -l)"
echo "   (each device's last window stays open: a device that stopped may still send; it closes after watermark.max_outage_ms, 24 h, as closed by timeout)"
echo "== StatsD on 127.0.0.1:8125: an application's counters, timers, gauges and sets, flushed into the log (SIGUSR1 flushes now)"
python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
lines = ["checkout.requests:1|c", "checkout.requests:3|c|@0.5", "checkout.latency:120|ms", "checkout.latency:80|ms",
         "checkout.latency:200|ms", "queue.depth:7|g", "queue.depth:+3|g", "users:alice|s", "users:bob|s",
         "checkout.errors:1|c|#region:eu", "not a metric"]
s.sendto("\n".join(lines).encode(), ("127.0.0.1", 8125))
PY
sleep 0.3
kill -USR1 "$collector"
sleep 0.5
# The server's flush that counted the packet (the interval's own flush may have come first,
# then SIGUSR1's flush is empty); the device's event-time flushes come below.
flush=$("$bin/driftlog-collector" log tail --kind statsd --json --from "${first:-0}" | python3 -c '
import json, sys
flushes = [json.loads(line) for line in sys.stdin]
print(next(json.dumps(f) for f in reversed(flushes) if f["counters"].get("checkout.requests", 0) > 0))')
offset=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["offset"])' "$flush")
"$bin/driftlog-collector" log tail --kind statsd --from "$offset" | head -n 1
echo "$flush"
echo "== StatsD that survived the collector's absence: device 1's flushes by event time, each window once, closed on the device's completeness"
wait "$app"
sent=$(cat "$demo/statsd-sent")
counted() {
  "$bin/driftlog-collector" log tail --kind statsd --json --from "${first:-0}" | python3 -c '
import json, sys
since_ms = int(sys.argv[1]) * 1000
flushes = [json.loads(line) for line in sys.stdin]
print(int(sum(f["counters"].get("app.requests", 0) for f in flushes
              if f.get("source") == "device-1" and f.get("change") == "insert" and f["window_start_unix_ms"] >= since_ms)))' "$since_s"
}
for _ in $(seq 1 80); do
  [ "$(counted)" = "$sent" ] && break
  sleep 0.5
done
"$bin/driftlog-collector" log tail --kind statsd --from "${first:-0}" | grep ' device-1 ' | this_run || true
echo "sent $sent increments to the agent, the collector's flushes for device 1 count $(counted)"
echo "== metrics (drift is fitted only over at least clock.regression_min_span_s of device time (10 min), so 0 ppm in a run this short; the offsets are each device's boot time on the collector clock)"
curl -s http://127.0.0.1:9400/metrics | grep -E '^driftlog_(events_received_total|events_duplicate_total|events_committed_total|acks_sent_total|log_bytes|streams|window_results_total|window_claims_total|windows_devices_open|late_events_total.*|device_clock_(offset_seconds|drift_ppm|uncertainty_seconds).*|statsd_(counter|timer)\{key="checkout.*) '
