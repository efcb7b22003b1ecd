// The client of scripts/bench's listen section: CLIENTS loops on
// 127.0.0.1:PORT, each sending GETs one after another on a new connection
// (as a proxy without keep-alive does). For each of ROUNDS restarts it
// waits for the server in PIDFILE to answer, loads it for WARM ms, sends
// it SIGTERM (the stop of a graceful restart), and goes on until a new
// server has answered and WARM ms more have passed. It prints one JSON
// line a round: requests answered, refused (ECONNREFUSED), other errors
// (ECONNRESET and the like), the longest an answered request waited (ms),
// and the gap from the SIGTERM to the new server's first answer (ms).
const http = require('http');
const fs = require('fs');
const [port, pidfile, rounds, clients, warm] = process.argv.slice(2).map((v, i) => (i === 1 ? v : +v));

let round = null; // the counters of the round under way
let stopped = false;
const now = () => Number(process.hrtime.bigint()) / 1e6;

function loop() {
  if (stopped) return;
  const t0 = now();
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
    let body = '';
    res.on('data', (d) => (body += d));
    res.on('end', () => {
      const r = round;
      if (r) {
        r.answered++;
        r.longest = Math.max(r.longest, now() - t0);
        const pid = body.trim().split(' ').pop();
        if (r.killedAt && pid !== r.oldPid && r.gap === null) r.gap = now() - r.killedAt;
      }
      setImmediate(loop);
    });
  });
  req.on('error', (e) => {
    if (round) {
      if (e.code === 'ECONNREFUSED') round.refused++;
      else round.errors++;
    }
    // A refused connect returns at once: 1 ms apart, the loop does not spin.
    setTimeout(loop, e.code === 'ECONNREFUSED' ? 1 : 0);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function serverPid(not) {
  for (let i = 0; i < 3000; i++) {
    try {
      const p = fs.readFileSync(pidfile, 'utf8').trim();
      if (p && p !== not) return p;
    } catch {}
    await sleep(5);
  }
  throw new Error('no server wrote ' + pidfile + ' within 15 s');
}

(async () => {
  let pid = await serverPid(null);
  for (let i = 0; i < clients; i++) loop();
  for (let n = 0; n < rounds; n++) {
    round = { answered: 0, refused: 0, errors: 0, longest: 0, gap: null, oldPid: pid, killedAt: 0 };
    await sleep(warm);
    round.killedAt = now();
    process.kill(+pid, 'SIGTERM');
    pid = await serverPid(pid);
    for (let i = 0; i < 3000 && round.gap === null; i++) await sleep(5);
    await sleep(warm);
    const r = round;
    round = null;
    console.log(JSON.stringify({ answered: r.answered, refused: r.refused, errors: r.errors, longest_ms: +r.longest.toFixed(1), gap_ms: r.gap === null ? null : +r.gap.toFixed(1) }));
  }
  stopped = true;
})().catch((e) => {
  console.error('listen-load:', e.message);
  process.exit(1);
});
