// Preloaded into the reference server (`node -r ./manual_flush.js stats.js config.js`) so a
// test decides when it flushes: the server's flush timer is held back, and a line `N` on
// stdin flushes once the server has handled N UDP packets, then prints `flushed N`. It
// prints `ready` once the server is up, and `handled N` for a line `?`. Its log lines are dropped; nothing else changes.
// Nothing else of the server changes.
const dgram = require('dgram');
const readline = require('readline');
const util = require('util');

// The server logs every bad line to stdout, one synchronous write each, which is slow
// enough to overflow its socket's receive buffer under a test's burst: logs off.
util.log = function () {};

let handled = 0;
const createSocket = dgram.createSocket;
dgram.createSocket = function (type, listener) {
  const counting = listener && function (message, remote) {
    handled += 1;
    return listener(message, remote);
  };
  return createSocket.call(this, type, counting);
};

let flushMetrics = null;
let started = false;
const realSetTimeout = global.setTimeout;
global.setTimeout = function (callback, delay, ...rest) {
  if (callback && callback.name === 'flushMetrics') {
    if (flushMetrics === null && !started) {
      // The first flush timer is set once the servers and backends are up.
      started = true;
      process.stdout.write('ready\n');
    }
    flushMetrics = callback;
    return { ref() { return this; }, unref() { return this; }, hasRef() { return false; } };
  }
  return realSetTimeout(callback, delay, ...rest);
};

readline.createInterface({ input: process.stdin }).on('line', function (line) {
  if (line === '?') {
    process.stdout.write('handled ' + handled + '\n');
    return;
  }
  const target = Number(line);
  const attempt = function () {
    if (handled >= target && flushMetrics) {
      const flush = flushMetrics;
      flushMetrics = null;
      flush();
      process.stdout.write('flushed ' + handled + '\n');
    } else {
      realSetTimeout(attempt, 5);
    }
  };
  attempt();
});
