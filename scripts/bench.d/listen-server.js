// The server of scripts/bench's listen section: a Node.js HTTP server that
// takes guardrun's held socket (fd 3, when LISTEN_PID is its own pid) or
// binds PORT itself, writes its pid to PIDFILE once it listens, and at
// SIGTERM stops accepting, answers what it has, and exits 0, as a service
// under a graceful restart does.
const http = require('http');
const fs = require('fs');
const [pidfile] = process.argv.slice(2);
const server = http.createServer((req, res) => {
  res.setHeader('Connection', 'close');
  res.end('served by ' + process.pid + '\n');
});
const held = process.env.LISTEN_PID === String(process.pid) && +process.env.LISTEN_FDS > 0;
server.listen(held ? { fd: 3 } : { host: '127.0.0.1', port: +process.env.PORT }, () => {
  fs.writeFileSync(pidfile + '.tmp', String(process.pid));
  fs.renameSync(pidfile + '.tmp', pidfile);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
