#!/usr/bin/env bash
# Campaign time of one suite at two git revisions, side by side on this machine, and whether their
# accuracy columns agree.
#
# Usage: benchmarks/campaign_commits.sh OLD_REVISION [NEW_REVISION] [-- resbench run arguments]
#   e.g. benchmarks/campaign_commits.sh HEAD~5 HEAD -- --methods none,ranger,fitact,saf-tanh --trials 20
#
# Each revision is exported (git archive) into a temporary folder and runs the suite (the default suite
# unless the arguments say otherwise) into its own store, sharing one artifact cache so that both evaluate
# the same trained and prepared models. Prints each run's summary line (its campaign phase time) and the
# leaderboards' differences outside the timing columns.
set -euo pipefail
old=${1:?old revision}; shift
new=HEAD
if [[ $# -gt 0 && $1 != -- ]]; then new=$1; shift; fi
[[ ${1:-} == -- ]] && shift
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for revision in "$old" "$new"; do
  folder="$work/$(git rev-parse --short "$revision")"
  mkdir -p "$folder"
  git archive "$revision" | tar -x -C "$folder"
done
for revision in "$old" "$new"; do
  short=$(git rev-parse --short "$revision")
  echo "== $revision ($short)"
  (cd "$work/$short" && PYTHONPATH="$work/$short:$work/$short/plugins" "$python" -m resbench run "$@" \
     --store "$work/$short.sqlite" --cache-dir "$work/cache" --no-progress --report-dir "$work/$short-report" \
     | tail -n 1)
  (cd "$work/$short" && PYTHONPATH="$work/$short:$work/$short/plugins" "$python" -m resbench leaderboard \
     --store "$work/$short.sqlite" --format csv --output "$work/$short.csv")
done
"$python" - "$work/$(git rev-parse --short "$old").csv" "$work/$(git rev-parse --short "$new").csv" <<'EOF'
import sys

import pandas as pd

old, new = (pd.read_csv(path) for path in sys.argv[1:3])
timing = [column for column in old.columns if "overhead" in column or "prepare" in column or "added" in column]
shared = [column for column in old.columns if column in new.columns and column not in timing]
same = old[shared].equals(new[shared])
print(f"accuracy and score columns ({len(shared)} shared, timing and cost columns aside): "
      f"{'identical' if same else 'DIFFERENT'}")
EOF
