// leak.js FILE THRESHOLD_MIB CAP_MIB [cgroup]
//
// The leaking child of scripts/bench's reaction measurement. Every 10 ms it
// allocates a 1 MiB Buffer, fills it (so the pages are really resident) and
// keeps it, until its RSS reaches CAP_MIB; then it holds what it has. It
// appends to FILE, times in ns from process.hrtime.bigint() (one monotonic
// clock, so differences between lines of the same run are exact):
//   start NS            when it began
//   rss NS              when its RSS (process.memoryUsage.rss()) first
//                       reached THRESHOLD_MIB
//   cgroup NS           with the argument `cgroup`: when the usage of its own
//                       memory cgroup (memory.usage_in_bytes on v1,
//                       memory.current on v2) first did; not for the root
//   signal NS SIGNAME   when SIGTERM or SIGINT came; it exits 0 at once.
'use strict';
const fs = require('fs');

const [file, thresholdMiB, capMiB, cgArg] = process.argv.slice(2);
const MiB = 1024 * 1024;
const threshold = Number(thresholdMiB) * MiB;
const cap = Number(capMiB) * MiB;
if (!file || !(threshold > 0) || !(cap > 0)) {
	console.error('usage: leak.js FILE THRESHOLD_MIB CAP_MIB [cgroup]');
	process.exit(2);
}

// ownUsageFile: the usage file of this process's memory cgroup, or ''.
function ownUsageFile() {
	let v1 = '';
	let v2 = '';
	for (const line of fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
		const [, ctrls, path] = line.match(/^[0-9]+:([^:]*):(.*)$/) || [];
		if (ctrls === undefined) continue;
		if (ctrls.split(',').includes('memory')) v1 = path;
		if (ctrls === '') v2 = path;
	}
	if (v1 && v1 !== '/') return `/sys/fs/cgroup/memory${v1}/memory.usage_in_bytes`;
	if (!v1 && v2 && v2 !== '/') return `/sys/fs/cgroup${v2}/memory.current`;
	return '';
}
const cgFile = cgArg === 'cgroup' ? ownUsageFile() : '';

const now = () => process.hrtime.bigint();
const record = (line) => fs.appendFileSync(file, line + '\n');
const kept = [];
let rssSeen = false;
let cgSeen = !cgFile;

for (const sig of ['SIGTERM', 'SIGINT']) {
	process.on(sig, () => {
		record(`signal ${now()} ${sig}`);
		process.exit(0);
	});
}
record(`start ${now()}`);

function check() {
	if (!rssSeen && process.memoryUsage.rss() >= threshold) {
		rssSeen = true;
		record(`rss ${now()}`);
	}
	if (!cgSeen) {
		let usage = 0;
		try {
			usage = Number(fs.readFileSync(cgFile, 'utf8'));
		} catch {
			cgSeen = true; // not readable: say nothing
		}
		if (usage >= threshold) {
			cgSeen = true;
			record(`cgroup ${now()}`);
		}
	}
}

setInterval(() => {
	if (process.memoryUsage.rss() < cap) {
		kept.push(Buffer.alloc(MiB, 1));
	}
	check();
}, 10);
