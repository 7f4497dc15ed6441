#!/bin/sh
# Run every benchmark under bench/ in turn (`make bench` calls this after building
# build/surat). A benchmark is any executable file in bench/ other than this script and
# other than files ending in .md/.txt; each one starts, measures and stops its own
# servers on loopback. Settings pass through the environment (BENCH_N=500 for a quick
# run; see the header of each benchmark). Exit status: 0 when all of them succeeded.
# Here: bench/smtp (inbound), bench/queue (inbound with a large deferred backlog),
# bench/outbound (delivery to smtp-sink), all vs Postfix; bench/imap and bench/pop3 vs
# Dovecot.
set -u

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.." || exit 2

failed=""
ran=0
for b in "$here"/*; do
	name=$(basename "$b")
	case "$name" in
	run.sh | *.md | *.txt | .*) continue ;;
	esac
	if [ ! -f "$b" ] || [ ! -x "$b" ]; then continue; fi
	ran=$((ran + 1))
	echo "==> bench/$name"
	start=$(date +%s)
	"$b"
	rc=$?
	echo "<== bench/$name: exit $rc after $(($(date +%s) - start))s"
	echo
	[ "$rc" -eq 0 ] || failed="$failed $name"
done

if [ "$ran" -eq 0 ]; then
	echo "bench/run.sh: no benchmarks found in $here" >&2
	exit 2
fi
if [ -n "$failed" ]; then
	echo "bench/run.sh: failed:$failed" >&2
	exit 1
fi
echo "bench/run.sh: $ran benchmark(s) done"
