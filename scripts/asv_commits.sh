#!/usr/bin/env bash
# Run the asv benchmarks over the last N commits of this repository, then publish the HTML.
#
#   scripts/asv_commits.sh [N] [extra `asv run` arguments...]       (N defaults to 2)
#
# asv's "existing" environment cannot build old commits itself (it refuses a commit range), so each commit is
# checked out into a temporary git worktree and put first on the import path with ASV_PYTHONPATH (asv drops
# PYTHONPATH); the benchmarks themselves come from this checkout's benchmarks/ and read that commit's
# suites/regress.toml through its harness. Results are saved under the commit's hash (--set-commit-hash).
# Every commit must contain the harness (harness/suite.py, harness/adapters/).
#
# Environment: ASV (default .venv/bin/asv), ASV_CONFIG (default asv.conf.json), ASV_MACHINE (default: host
# name; registered with `asv machine --yes` on first use), GATEBENCH_ASV_FILTER (see benchmarks/grid.py),
# GATEBENCH_ASV_RECOVERY=1 to run the recovery benchmark (RecoveryF1: minutes per commit) too. Without it, and
# without a --bench / -b of the caller's, only the timing and memory benchmarks run.
# Compare two of the runs:  .venv/bin/asv compare --machine "$ASV_MACHINE" --factor 1.3 OLD_SHA NEW_SHA
set -euo pipefail
N="${1:-2}"
[ "$#" -gt 0 ] && shift
case "$N" in ''|*[!0-9]*) echo "N: expected a number of commits; got '$N'" >&2; exit 2 ;; esac
ROOT="$(git rev-parse --show-toplevel)"
ASV="${ASV:-$ROOT/.venv/bin/asv}"
CONFIG="${ASV_CONFIG:-$ROOT/asv.conf.json}"
MACHINE="${ASV_MACHINE:-$(hostname)}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}" TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-0}"

"$ASV" machine --yes --machine "$MACHINE" --config "$CONFIG" >/dev/null
TMP="$(mktemp -d "${TMPDIR:-/tmp}/gatebench-asv.XXXXXX")"
cleanup() {
  for wt in "$TMP"/wt-*; do
    [ -d "$wt" ] && git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true
  done
  git -C "$ROOT" worktree prune >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

BENCH=()
case " $* " in *" --bench"*|*" -b "*|*" -b"*) ;; *)
  [ "${GATEBENCH_ASV_RECOVERY:-0}" = "1" ] || BENCH=(--bench "^bench_gates\.(TimeGate|PeakMemory)\.") ;;
esac

cd "$(dirname "$CONFIG")"
for commit in $(git -C "$ROOT" rev-list --reverse -n "$N" HEAD); do
  wt="$TMP/wt-$commit"
  git -C "$ROOT" worktree add --detach --quiet "$wt" "$commit"
  echo "== asv run at $(git -C "$ROOT" log -1 --format='%h %s' "$commit")"
  ASV_PYTHONPATH="$wt" "$ASV" run --config "$CONFIG" --machine "$MACHINE" --python=same \
    --set-commit-hash "$commit" --launch-method forkserver "${BENCH[@]}" "$@"
  git -C "$ROOT" worktree remove --force "$wt"
done
"$ASV" publish --config "$CONFIG" >/dev/null
html_dir="$(grep -o '"html_dir": *"[^"]*"' "$CONFIG" | sed 's/.*: *"\(.*\)"/\1/')"
echo "HTML: $(pwd)/${html_dir:-html}/index.html"
