// A backend for the reference server (statsd 0.9.0) that appends each flush as one JSON
// line to `config.captureFile`, written synchronously inside the flush handler (before the
// server resets its state), with the names the driftlog collector's flush records use.
const fs = require('fs');

exports.init = function (startupTime, config, events) {
  events.on('flush', function (timestamp, metrics) {
    const sets = {};
    for (const key in metrics.sets) {
      sets[key] = metrics.sets[key].size();
    }
    const flush = {
      counters: metrics.counters,
      counter_rates: metrics.counter_rates,
      gauges: metrics.gauges,
      timer_data: metrics.timer_data,
      timer_counters: metrics.timer_counters,
      sets: sets,
      statsd_metrics: metrics.statsd_metrics,
    };
    fs.appendFileSync(config.captureFile, JSON.stringify(flush) + '\n');
  });
  return true;
};
