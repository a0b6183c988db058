#!/usr/bin/env bash
# GPU check: the GPU tests (tests/test_gpu.py), the `kernels` suite's PyTorch cases on one CUDA GPU, the GPU
# timing-fidelity comparison against triton.testing.do_bench, the GPU targets (`gatebench targets` over
# suites/targets/kernels.toml), and last the Triton kernels' edge-case tests compiled for the GPU. Results as
# JSON/JSONL in the output folder given as the only argument.
#
#   scripts/gpu_check.sh OUT_DIR
#
# Written for the project's GPU machine: Python 3.12, torch + triton, NumPy, no TensorFlow, nothing installed,
# run from the source tree (PYTHONPATH=.). Uses only the standard library (tomllib), NumPy, PyTorch and Triton.
# Budget (each step is cut at its limit): GPU tests 120 s, the suite SUITE_SECONDS, fidelity 55 s, targets 60 s,
# the kernels' edge cases 60 s: under 9 minutes in all. Each row is fsynced as its case finishes, so a run cut
# short by the time limit keeps every finished case; run again with the same OUT_DIR to resume where it stopped.
set -u -o pipefail

OUT="${1:?usage: scripts/gpu_check.sh OUT_DIR}"
SUITE_SECONDS="${SUITE_SECONDS:-230}"      # the kernels suite (PyTorch cases)
FIDELITY_SECONDS="${FIDELITY_SECONDS:-55}" # harness vs triton.testing.do_bench
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
  "$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$OUT/environment.txt"

# The GPU tests first (CUDA gates against the CPU's, a harness case timed with CUDA events): about a minute.
timeout --signal=KILL 120 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

resume=""
[ -s "$OUT/kernels.jsonl" ] && resume="--resume"
start=$(date +%s)
timeout --signal=KILL "$SUITE_SECONDS" "$PYTHON" -m gatebench run suites/kernels.toml --framework torch --device gpu \
  --out "$OUT" $resume 2>&1 | tee "$OUT/kernels.log"
suite_rc=${PIPESTATUS[0]}
echo "kernels suite: exit $suite_rc after $(( $(date +%s) - start )) s (137: stopped at the time limit; rows so far kept)"

start=$(date +%s)
timeout --signal=KILL "$FIDELITY_SECONDS" "$PYTHON" -m scripts.timing_fidelity --device gpu --rounds 3 \
  --out "$OUT/timing_fidelity_gpu.json" 2>&1 | tee "$OUT/timing_fidelity.log"
fid_rc=${PIPESTATUS[0]}
echo "timing fidelity: exit $fid_rc after $(( $(date +%s) - start )) s"

# The GPU targets (DSelect-k against Top-k, forward against the copy-bandwidth floor, the harness timer against
# do_bench) from the suite's rows and the fidelity results.
start=$(date +%s)
fidelity=()
[ -s "$OUT/timing_fidelity_gpu.json" ] && fidelity=("$OUT/timing_fidelity_gpu.json")
timeout --signal=KILL 60 "$PYTHON" -m gatebench targets "$OUT/kernels.jsonl" "${fidelity[@]}" \
  --targets suites/targets/kernels.toml --out "$OUT/gpu_targets.json" 2>&1 | tee "$OUT/gpu_targets.log"
targets_rc=${PIPESTATUS[0]}
echo "gpu targets: exit $targets_rc after $(( $(date +%s) - start )) s"

"$PYTHON" - "$OUT/kernels.jsonl" <<'PY' | tee "$OUT/summary.txt"
import collections, sys
from harness.results import read_rows
read = read_rows(sys.argv[1])
print(f"rows: {len(read.rows)}, unreadable lines: {len(read.problems)}")
print("status:", dict(collections.Counter(r["status"] for r in read.rows)))
for r in [r for r in read.rows if r["status"] != "ok"][:40]:
    if True:
        print(f"  {r['status']}: {r['case_id']}: {str(r.get('error'))[:200]}")
PY
# The Triton kernels' edge cases (chunks, partial tiles, leading axes, NaN rows, bf16, empty batch) compiled for the
# GPU; the CPU suite runs the same tests in Triton's interpreter.
timeout --signal=KILL 60 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gates_triton.py 2>&1 \
  | tee "$OUT/triton_tests.log"
triton_rc=${PIPESTATUS[0]}

exit $(( tests_rc == 0 && suite_rc == 0 && fid_rc == 0 && targets_rc == 0 && triton_rc == 0 ? 0 : 1 ))
