#!/usr/bin/env bash
# One full compress + decompress of FILE with the CLI, as a user would run it:
# archive size and bpb, ideal code length, KB/s each way, peak RSS each way.
#   bench/roundtrip.sh ../shared/corpora/alice29.txt [extra compress flags, e.g. --window 4096]
# Run it on an idle machine: llama.cpp's threads spin at barriers, so a second busy process
# on the same cores slows it down many times over.
set -euo pipefail
file=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$file" "$work/input"
size=$(stat -c %s "$work/input")

/usr/bin/time -f "%e %M" -o "$work/ctime" nczip -k -f -vv "$@" "$work/input" 2> "$work/clog"
/usr/bin/time -f "%e %M" -o "$work/dtime" nczip -d -c "$work/input.ncz" > "$work/output"
cmp "$work/input" "$work/output"

archive=$(stat -c %s "$work/input.ncz")
read -r csec crss < "$work/ctime"
read -r dsec drss < "$work/dtime"
ideal=$(grep -o 'ideal [0-9.]*' "$work/clog" | awk '{print $2}')
payload=$(nczip info "$work/input.ncz" | awk '$2 == "LLM" {p += $6} END {print p + 0}')
echo "file: $(basename "$file")  bytes: $size  round trip: identical"
echo "archive: $archive bytes = $(awk -v a="$archive" -v s="$size" 'BEGIN {printf "%.4f", a*8/s}') bpb"
echo "LLM payload: $payload bytes = $(awk -v a="$payload" -v s="$size" 'BEGIN {printf "%.4f", a*8/s}') bpb; ideal (-sum log2 p): $ideal bpb"
echo "compress:   $csec s = $(awk -v s="$size" -v t="$csec" 'BEGIN {printf "%.3f", s/1024/t}') KB/s, peak RSS $((crss / 1024)) MB"
echo "decompress: $dsec s = $(awk -v s="$size" -v t="$dsec" 'BEGIN {printf "%.3f", s/1024/t}') KB/s, peak RSS $((drss / 1024)) MB"
