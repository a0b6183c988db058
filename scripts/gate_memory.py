"""Peak memory of one forward + backward of each gate on the CPU (PyTorch profiler), written as JSON.

    .venv/bin/python -m scripts.gate_memory --out docs/results/gate_memory_cpu.json
    .venv/bin/python -m scripts.gate_memory --triton --input-dim 2048 --out docs/results/gate_memory_cpu_triton.json

Same method as ``tests/test_gates_memory.py``: ``harness.adapters.torch.peak_memory_bytes`` (allocator events).
``--triton`` adds DSelect-k's ``impl="triton"`` with its two kernel launches replaced by no-ops: what is counted is
every PyTorch allocation of that path (the projection, ``q``, ``dz``, ``dw``, the gradients), which is all it
allocates on a GPU, where the kernels keep their work in registers. (Run in Triton's CPU interpreter instead, the
interpreter's own copies would be counted too.) The weights it computes are then meaningless; only their memory
is measured.
"""

from __future__ import annotations

import os
import sys

if "--triton" in sys.argv:  # lets impl="triton" take CPU tensors (read when gates.dselect_triton is imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import torch

import gates.torch as gt
from harness.adapters.torch import peak_memory_bytes
from scripts._common import parser as make_parser
from scripts._common import write_json

CASES = [("topk", "auto"), ("softmax", "auto"), ("dselect_k", "factorized"), ("dselect_k", "bitwise"),
         ("dselect_k", "reference"), ("hard_concrete", "auto")]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--input-dim", type=int, default=256)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--triton", action="store_true",
                        help="also DSelect-k impl='triton', kernel launches replaced by no-ops (its allocations only)")
    args = parser.parse_args()
    cases = CASES + ([("dselect_k", "triton")] if args.triton else [])
    if args.triton:
        from gates import dselect_triton

        class _NoLaunch:  # kernel[grid](...) does nothing: the outputs stay as allocated
            def __getitem__(self, grid):
                return lambda *args, **kwargs: None

        dselect_triton.KERNELS.update(fwd=_NoLaunch(), bwd=_NoLaunch())
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(args.batch, args.input_dim)), dtype=torch.float32)
    cot = torch.tensor(rng.normal(size=(args.batch, args.experts)), dtype=torch.float32)
    rows = []
    for name, impl in cases:
        gate = gt.make_gate(name, args.experts, args.k, args.input_dim, impl=impl).train()

        def step(gate=gate):
            (gate(x) * cot).sum().backward()

        step()  # warm-up
        gate.zero_grad(set_to_none=True)  # outside the measured call, as in the harness: new gradients count
        rows.append({"gate": name, "impl": impl, "peak_mem_bytes": peak_memory_bytes(step)})
        print(f"{name:14s} {impl:11s} {rows[-1]['peak_mem_bytes'] / 1e6:9.2f} MB")
    shape = {"batch": args.batch, "input_dim": args.input_dim, "experts": args.experts, "k": args.k}
    what = "peak extra CPU memory of forward + backward, torch profiler"
    if args.triton:
        what += "; dselect_k/triton with its kernel launches replaced by no-ops (its PyTorch allocations only)"
    write_json(args.out, {"what": what, "shape": shape, "rows": rows}, extra_provenance={"torch": torch.__version__})


if __name__ == "__main__":
    main()
