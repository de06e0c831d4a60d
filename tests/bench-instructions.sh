#!/usr/bin/env bash
# Instructions per packet of each candidate of the ring benchmark (or, with --ffi, of the C ABI
# benchmark), counted by callgrind: a figure that noise does not move, to judge a change by.
# Usage, from the repository root:
#
#   tests/bench-instructions.sh                      # every candidate at 64, 576 and 1500 bytes
#   tests/bench-instructions.sh "tunnel, AQM off" 64 # one candidate, one size
#   tests/bench-instructions.sh --ffi                # the C ABI benchmark, at 64 and 1500 bytes
#   tests/bench-instructions.sh --ffi "C ABI, batch" 64
#
# Only the instructions inside the benchmark's timed loop (`run_batches`) count: the checks,
# set-up and program start are outside it. Needs valgrind (Debian package `valgrind`).
set -euo pipefail

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }

target=ring
if [ "${1:-}" = --ffi ]; then
    target=ffi
    shift
fi
bench=$(cargo bench -p tidegate-tests --bench "$target" --no-run 2>&1 |
    sed -n "s/.*(\(.*$target-[0-9a-f]*\)).*/\1/p" | tail -n1)
[ -x "$bench" ] || { echo "could not build the $target benchmark" >&2; exit 1; }

if [ $# -ge 2 ]; then
    names=("$1"); sizes=("$2")
elif [ "$target" = ffi ]; then
    names=("core" "C ABI, batch" "C ABI, per packet")
    sizes=(64 1500)
else
    names=("memcpy limit" "memcpy, aligned" "tidegate" "tidegate, packed" "tunnel, AQM off"
        "tunnel, CoDel" "tunnel, batch calls" "tunnel, FQ-CoDel" "VecDeque<Vec<u8>>" "heapless spsc"
        "bbqueue framed" "ringbuf + len")
    sizes=(64 576 1500)
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-19s %5s %14s\n' candidate size instr/packet
for size in "${sizes[@]}"; do
    for name in "${names[@]}"; do
        packets=$(valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
            --toggle-collect='*run_batches*' "$bench" --instructions "$name" "$size" 2>/dev/null |
            sed -n 's/^packets //p')
        total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out/cg")
        awk -v n="$name" -v s="$size" -v t="$total" -v p="$packets" \
            'BEGIN { printf "%-19s %5d %14.1f\n", n, s, t / p }'
    done
done
