#!/bin/sh
# Run the cmocka unit-test binaries given, twice as many at a time as there
# are CPUs (the slow ones wait on fsync and timers, not the CPU); print
# their output in the order given, then one summary line; exit 1 on any
# failure.
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
jobs=$(($(nproc 2>/dev/null || echo 2) * 2))
printf '%s\n' "$@" | xargs -P "$jobs" -I{} sh -c \
	'n=$(basename "$1"); "$1" > "$2/$n.log" 2>&1 && : > "$2/$n.ok"' _ {} "$dir"
passed=0
failed=0
for t in "$@"; do
	n=$(basename "$t")
	cat "$dir/$n.log"
	if [ -e "$dir/$n.ok" ]; then
		passed=$((passed + 1))
	else
		echo "unit: FAILED: $t" >&2
		failed=$((failed + 1))
	fi
done
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
