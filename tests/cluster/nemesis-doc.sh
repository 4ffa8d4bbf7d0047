#!/bin/bash
# Renders the nemesis figures stored in docs/results/nemesis*.json (written by a nemesis run
# with VIRTDLM_NEMESIS_RECORD=docs/results/nemesis-<what>.json) into docs/RELIABILITY.md,
# between the lines "<!-- nemesis figures: begin -->" and "<!-- nemesis figures: end -->".
# The figures are never edited by hand. Needs jq.
#   tests/cluster/nemesis-doc.sh            rewrite the section
#   tests/cluster/nemesis-doc.sh --check    exit 1 if the section differs from the stored runs
set -euo pipefail
CHECK=${1:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOC=$ROOT/docs/RELIABILITY.md
command -v jq >/dev/null || { echo "nemesis-doc.sh: jq is missing (tests/install-deps.sh)" >&2; exit 1; }
shopt -s nullglob
files=("$ROOT"/docs/results/nemesis*.json)
[ ${#files[@]} -gt 0 ] || { echo "nemesis-doc.sh: no docs/results/nemesis*.json" >&2; exit 1; }
grep -q '^<!-- nemesis figures: begin -->$' "$DOC" && grep -q '^<!-- nemesis figures: end -->$' "$DOC" ||
  { echo "nemesis-doc.sh: markers missing in $DOC" >&2; exit 1; }
table=$(mktemp)
{
  echo "| run | seed | rounds | time | faults | grants | writes (records on disk) | overlaps | locks left held without owner | longest unusable after owner gone | commit, machine, load |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for f in "${files[@]}"; do
    jq -r --arg run "$(basename "$f" .json)" '
      "| \($run) | \(.seed) | \(.rounds) | \(.duration_s) s | " +
      ([.faults | to_entries[] | "\(.key) \(.value)"] | join(", ")) +
      "; releases in flight at a cut \(.releases_in_flight_at_a_cut); requests cut by a daemon death \(.requests_cut_by_daemon_death)" +
      " | \(.grants) | \(.writes) (\(.records_on_disk)) | **\(.overlaps)** (mismatches read back \(.mismatches)) | **\(.locks_left_held_without_owner)** | " +
      (if .longest_unusable_after_owner_gone == null then "n/a" else
        "\(.longest_unusable_after_owner_gone.seconds * 100 | round / 100) s (\(.longest_unusable_after_owner_gone.kind), \(.longest_unusable_after_owner_gone.disk); \(.owner_gone_cases) cases)" end) +
      " | \(.commit)\(if .dirty then " (work tree modified)" else "" end), \(.machine.cores) cores \(.machine.cpu), load \(.load_before) → \(.load_after)" +
      (if .settings then "; " + ([.settings | to_entries[] | "\(.key) \(.value)"] | join(", ")) else "" end) + " |" +
      (if (.failures | length) > 0 then "\n\nFailures in \($run): " + (.failures | join("; ")) else "" end) +
      (if ((.retire_stuck_rebooted // []) | length) > 0 then "\n\nReleases of an abandoned lockspace stuck in the kernel in \($run) (each node rebooted, see \"a retire that never finishes\"): " + (.retire_stuck_rebooted | join("; ")) else "" end)' "$f"
  done
} > "$table"
awk -v t="$table" '
  /^<!-- nemesis figures: begin -->$/ { print; while ((getline l < t) > 0) print l; skip = 1; next }
  /^<!-- nemesis figures: end -->$/ { skip = 0 }
  !skip { print }' "$DOC" > "$DOC.tmp"
rm -f "$table"
if [ "$CHECK" = --check ]; then
  if cmp -s "$DOC" "$DOC.tmp"; then rm -f "$DOC.tmp"; exit 0; fi
  rm -f "$DOC.tmp"
  echo "docs/RELIABILITY.md: the nemesis figures differ from docs/results/nemesis*.json (tests/cluster/nemesis-doc.sh)"
  exit 1
fi
mv "$DOC.tmp" "$DOC"
echo "docs/RELIABILITY.md: nemesis figures from ${#files[@]} run(s)"
