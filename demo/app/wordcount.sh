#!/bin/sh
# wordcount <dataset dir> [report]: one "lines words bytes path" line per file (sorted by path) and a
# total, written to the report (default /sd-container/output/result). Busybox sh, no bashisms.
set -eu
dir=${1:?usage: wordcount <dataset dir> [report]}
report=${2:-/sd-container/output/result}
cd "$dir"
find . -type f | sort | while IFS= read -r f; do
  wc -l -w -c <"$f" | {
    read -r l w c
    printf '%s %s %s %s\n' "$l" "$w" "$c" "$f"
  }
done >"$report.tmp"
total=$(awk '{l += $1; w += $2; c += $3} END {printf "%d %d %d total", l, w, c}' "$report.tmp")
printf '%s\n' "$total" >>"$report.tmp"
mv "$report.tmp" "$report"
echo "wordcount: $(wc -l <"$report") lines written to $report"
