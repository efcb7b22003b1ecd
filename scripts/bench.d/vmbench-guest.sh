#!/bin/sh
# vmbench-guest.sh ROUNDS SAMPLE_SECONDS SAMPLE_EVERY [SECTIONS [TRUE_RUNS]]
#
# The measuring half of scripts/vmbench. It runs as the VM's only program
# (vminit's vmtest.exec, from /bench) and, the same, on the host, from a copy
# of that dir. Beside it: guardrun (static), leak.js, tini (tini-static) and
# benchtimer (static, built by scripts/vmbench). Plain POSIX sh for dash,
# using nothing but its builtins, cat, sleep, true, node and those, which is
# all the VM has. SECTIONS: which to run, of leak,sample,true (default all,
# comma-separated); TRUE_RUNS: the rounds of true (default 100). It prints
# lines for scripts/vmbench to read:
#   VMBENCH check LINE          guardrun check's first line (the backend)
#   VMBENCH BEGIN leak ... VMBENCH END leak
#                               leak.js's record of ROUNDS restarts, raw
#   VMBENCH sample MODE SECONDS TICKS SCHED_NS NPROCS
#                               guardrun's CPU (itself and its sentinel) over
#                               SECONDS of an idle child with --sample MODE:
#                               utime+stime in clock ticks, and the threads'
#                               run time from schedstat in ns (- without it),
#                               and how many processes were counted (2)
#   VMBENCH true statedir DIR FSTYPE
#                               guardrun's default state dir and the
#                               filesystem it is on (- : none; ",missing" if
#                               it did not exist before the runs)
#   VMBENCH BEGIN true ... VMBENCH END true
#                               benchtimer's "K ROUND NS STATUS" lines, K 0
#                               for true, 1 tini -s -- true, 2 guardrun
#                               --max 256M -- true, run in turn TRUE_RUNS
#                               times after 3 warmup rounds
#   VMBENCH DONE
# It measures; it asserts nothing. Exit status 0 unless it could not run.
set -u

rounds=${1:-10}
secs=${2:-20}
every=${3:-100ms}
sections=${4:-leak,sample,true}
truns=${5:-100}
dir=${0%/*}
[ "$dir" != "$0" ] || dir=.
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
gr=$dir/guardrun
tmp=${TMPDIR:-/tmp}
# What the runs write where they stand (Node's diagnostic reports, if
# guardrun asks for them) goes to the temp dir.
cd "$tmp" || exit 1
say() { printf 'vmbench-guest: %s\n' "$*" >&2; }
want() {
	case ,$sections, in *,"$1",*) return 0 ;; esac
	return 1
}

line=$("$gr" check 2>&1) || true
printf 'VMBENCH check %s\n' "${line%%
*}"

# --- reaction to a leak (scripts/bench section 4, same command) -------------
# signals FILE: how many signal lines it has.
signals() {
	n=0
	while read -r k _; do
		[ "$k" = signal ] && n=$((n + 1))
	done <"$1"
	echo "$n"
}
if want leak; then
	f=$tmp/leak.rec
	: >"$f"
	say "leak reaction: $rounds rounds"
	"$gr" -q --max 512M --restart-at 200M --restart-at-grace 0 --restart always --max-restarts 0 \
		--backoff-min 0 --backoff-max 0 --name benchleak -- node "$dir/leak.js" "$f" 200 400 cgroup &
	pid=$!
	# Under TCG a node start takes seconds, and the fill is slower: 60 s a round
	# is far beyond what one takes.
	i=0
	while [ "$(signals "$f")" -lt "$rounds" ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "guardrun ended before $rounds restarts"
			break
		fi
		i=$((i + 1))
		if [ "$i" -gt $((rounds * 300)) ]; then
			say "timed out before $rounds restarts"
			break
		fi
		sleep 0.2
	done
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	echo "VMBENCH BEGIN leak"
	cat "$f"
	echo "VMBENCH END leak"
fi

# --- CPU per sample ------------------------------------------------------------
# cpu PID...: "TICKS SCHED_NS" summed over the processes (all their threads).
cpu() {
	t=0 s=0
	for p in "$@"; do
		read -r st <"/proc/$p/stat" || continue
		# The command is "(guardrun)" or "(guardrun-sentin)": no spaces,
		# so field 14 and 15 are utime and stime.
		# shellcheck disable=SC2086 # splitting is the point
		set -- $st
		t=$((t + ${14} + ${15}))
		for ss in /proc/"$p"/task/*/schedstat; do
			if [ -r "$ss" ] && read -r ns _ <"$ss"; then
				s=$((s + ns))
			else
				s=-
				break
			fi
		done
	done
	echo "$t $s"
}
# helpers: guardrun's sentinel, the child of $pid that runs guardrun's own
# binary (its argv[0] is guardrun-sentinel, its comm the binary's name).
helpers() {
	for st in /proc/[0-9]*/stat; do
		read -r l <"$st" 2>/dev/null || continue
		# shellcheck disable=SC2086
		set -- $l
		if [ "$4" = "$pid" ] && [ "$2" = "(${gr##*/})" ]; then
			echo "$1"
		fi
	done
}
if want sample; then
	for mode in 0 "$every"; do
		say "CPU per sample: --sample $mode over an idle child, ${secs} s"
		"$gr" -q --sample "$mode" --max 256M --name benchsample -- sleep $((secs + 30)) &
		pid=$!
		# Past the start-up and the sentinel's start (100 ms after the child's).
		sleep 2
		pids="$pid $(helpers)"
		# shellcheck disable=SC2086
		set -- $(cpu $pids)
		t0=$1 s0=$2
		sleep "$secs"
		# shellcheck disable=SC2086
		set -- $(cpu $pids)
		t1=$1 s1=$2
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		if [ "$s0" = - ] || [ "$s1" = - ]; then
			ds=-
		else
			ds=$((s1 - s0))
		fi
		# shellcheck disable=SC2086
		set -- $pids
		echo "VMBENCH sample $mode $secs $((t1 - t0)) $ds $#"
	done
fi

# --- a whole run of true ---------------------------------------------------------
if want true; then
	# guardrun's default state dir (observe.DefaultStateDir): /run/guardrun
	# for root, else $XDG_RUNTIME_DIR/guardrun, else none.
	euid=
	while read -r k _ e _; do
		[ "$k" = Uid: ] && euid=$e
	done </proc/self/status
	if [ "$euid" = 0 ]; then
		sd=/run/guardrun
	elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then
		sd=$XDG_RUNTIME_DIR/guardrun
	else
		sd=-
	fi
	# Its filesystem: that of the longest mount point above it (the last of
	# equal ones is on top).
	fs=-
	if [ "$sd" != - ]; then
		best=
		while read -r _ mp ty _; do
			case $sd/ in
			"${mp%/}"/*)
				if [ ${#mp} -ge ${#best} ]; then
					best=$mp fs=$ty
				fi
				;;
			esac
		done </proc/self/mounts
		# guardrun makes it if need be (the warmup runs), as on a host's
		# first run; scripts/vmbench packs it into the VM.
		[ -d "$sd" ] || fs=$fs,missing
	fi
	echo "VMBENCH true statedir $sd $fs"
	say "a whole run of true: $truns rounds (3 warmup) of true, tini -s -- true, guardrun --max 256M -- true"
	echo "VMBENCH BEGIN true"
	"$dir/benchtimer" "$truns" 3 true :: "$dir/tini" -s -- true :: "$gr" --max 256M -- true ||
		say "benchtimer failed (exit $?)"
	echo "VMBENCH END true"
fi
echo "VMBENCH DONE"
