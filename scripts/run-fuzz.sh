#!/bin/sh
# Run every libFuzzer target for a bounded time each, starting from its seed
# corpus in tests/fuzz/corpus/NAME (copied, so runs never write into the repo).
set -eu
secs=$1
shift
status=0
for bin in "$@"; do
	name=$(basename "$bin")
	work=build/fuzz/corpus/$name
	mkdir -p "$work"
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp -r "tests/fuzz/corpus/$name/." "$work/"
	fi
	echo "fuzz: $name for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=0 "$work" 2>build/fuzz/$name.log; then
		echo "fuzz: $name FAILED, see build/fuzz/$name.log" >&2
		tail -40 build/fuzz/$name.log >&2
		status=1
	fi
done
exit $status
