#!/bin/bash
# Checks tests/bench/figures.py itself on a scratch clone of this repository (HEAD, docs as
# committed): passes as committed; a figure measured at the clone's HEAD is fresh, then stale
# once a commit changes a path it measures (and fails with FIGURES_STALE=fail); a result with no
# commit fails; a settings change fails without a "settings:" line in the commit and passes
# with one; an estimate is listed, not stale, and fails without its mark; a record kept as
# history is never stale and fails when quoted without its commit; a shallow clone
# reports staleness as not checked instead of failing.
# Prints "figures-selftest: N passed, N failed"; exit 1 on any failure. Needs git, python3, jq.
#   tests/bench/figures-selftest.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { echo "PASS $*"; pass=$((pass + 1)); }
ko() { echo "FAIL $*"; fail=$((fail + 1)); }
git clone -q --no-hardlinks "$ROOT" "$T/r" || { echo "FAIL cannot clone $ROOT"; exit 1; }
cd "$T/r" || exit 1
git config user.email figures@selftest.invalid; git config user.name figures-selftest
check() { python3 tests/bench/figures.py check >"$T/out" 2>&1; }
R=docs/results/nemesis-ci.json

check && ok "the committed figures pass the check" || ko "the committed figures fail: $(grep FAIL "$T/out" | head -3)"

jq --arg c "$(git rev-parse --short=12 HEAD)" '.commit = $c' $R >$T/x && mv $T/x $R && bash tests/cluster/nemesis-doc.sh >/dev/null
git commit -qam "figure measured at the parent"
if check && ! grep -q "stale .*$R" "$T/out"; then ok "a figure measured at HEAD's parent with no later change is not stale"
else ko "a fresh figure: $(grep "$R" "$T/out")"; fi

echo "// a change" >>crates/lockmgr/src/lib.rs && git commit -qam "a change to the daemon"
if check && grep -q "^warn stale .*$R: measured at .*1 later commit(s) changed what it measures, the last .* a change to the daemon" "$T/out"
then ok "a commit changing crates/lockmgr makes it stale (warning, exit 0)"
else ko "after a change under crates/lockmgr: $(grep "$R" "$T/out")"; fi
FIGURES_STALE=fail python3 tests/bench/figures.py check >/dev/null 2>&1 && ko "FIGURES_STALE=fail passed with a stale figure" ||
  ok "FIGURES_STALE=fail fails on it"

git stash -q 2>/dev/null; jq 'del(.commit)' $R >$T/x && mv $T/x $R
check; grep -q "^FAIL no commit .*$R" "$T/out" && ! check && ok "a result without its commit fails" ||
  ko "a result without a commit: $(grep "$R" "$T/out")"
git checkout -q -- $R

# The rendered table shows the settings: rendered again with each change, as a bench run does.
jq '.settings.log_level = "debug"' $R >$T/x && mv $T/x $R && bash tests/cluster/nemesis-doc.sh >/dev/null && git commit -qam "figures at debug"
jq '.settings.log_level = "info"' $R >$T/x && mv $T/x $R && bash tests/cluster/nemesis-doc.sh >/dev/null && git commit -qam "figures at info"
if ! check && grep -q "^FAIL settings .*$R" "$T/out"; then ok "a settings change without a note fails"
else ko "a settings change without a note: $(grep "$R" "$T/out")"; fi
git commit -q --amend -m "figures at info" -m "settings: log level back to info, as in production"
check && ok "the same change with a 'settings:' line passes" || ko "with a note: $(grep FAIL "$T/out")"

# An estimate is listed, never stale; without its mark in the document the check fails.
E=docs/PERFORMANCE.md M="Unmeasured estimates of the run times"
if check && grep -q "^info estimate .*$E" "$T/out" && ! grep -q "stale .*$E (the run times" "$T/out"
then ok "an estimate is listed as such, not as stale"
else ko "an estimate: $(grep "$E" "$T/out" | head -3)"; fi
sed -i "s/$M/Run times/" $E
check; grep -q "^FAIL unmarked .*$E" "$T/out" && ! check && ok "an estimate without its mark fails" ||
  ko "an estimate without its mark: $(grep "$E" "$T/out" | head -3)"
git checkout -q -- $E

# A record kept as history (the soak): listed with its date, never stale however much changed
# after it; a document quoting it without its commit fails.
H=docs/results/nemesis-soak-500.json
if check && grep -q "^info history .*$H: measured at" "$T/out" && ! grep -q "stale .*$H" "$T/out"
then ok "a history record is listed as history, not as stale"
else ko "a history record: $(grep "$H" "$T/out" | head -3)"; fi
c=$(jq -r .commit $H | cut -c1-7)
sed -i "s/$c[0-9a-f]*/(commit)/g" docs/RELIABILITY.md
check; grep -q "^FAIL history .*$H: docs/RELIABILITY.md quotes it without its commit $c" "$T/out" && ! check &&
  ok "a document quoting a history record without its commit fails" ||
  ko "a history record quoted without its commit: $(grep "$H" "$T/out" | head -3)"
git checkout -q -- docs/RELIABILITY.md

git clone -q --depth 1 "file://$T/r" "$T/shallow" && cd "$T/shallow" &&
  if python3 tests/bench/figures.py check >"$T/out" 2>&1 && grep -q "not checked .*shallow" "$T/out"
  then ok "a shallow clone: staleness not checked, and said so"
  else ko "a shallow clone: $(grep -v '^warn' "$T/out" | head -3)"; fi

echo "figures-selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]
