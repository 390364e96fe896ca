// Sends a fixed set of metrics through the hot-shots client (`node hot_shots_client.js
// udp|tcp HOST PORT`, keys prefixed `hotshots.<protocol>.`), then closes the client and exits.
const StatsD = require('hot-shots');

const [protocol, host, port] = process.argv.slice(2);
const prefix = 'hotshots.' + protocol + '.';
const client = new StatsD({ host, port: Number(port), protocol, prefix, maxBufferSize: 0, errorHandler: (error) => {
  console.error(error);
  process.exitCode = 1;
} });
for (let i = 0; i < 10; i++) {
  client.increment('requests', 1);
  client.timing('latency', i * 10);
}
client.gauge('queue', 42);
client.set('users', 'alice');
client.set('users', 'bob');
client.increment('tagged', 2, ['env:prod']);
client.close(() => process.exit());
