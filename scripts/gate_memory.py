"""Peak memory of one forward + backward of each gate on the CPU (PyTorch profiler), written as JSON.

    .venv/bin/python scripts/gate_memory.py --out docs/results/gate_memory_cpu.json

Same method as ``tests/test_gates_memory.py``: ``harness.adapters.torch.peak_memory_bytes`` (allocator events).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import gates.torch as gt
from harness.adapters.torch import peak_memory_bytes
from harness.results import provenance

CASES = [("topk", "auto"), ("softmax", "auto"), ("dselect_k", "factorized"), ("dselect_k", "bitwise"),
         ("dselect_k", "reference"), ("hard_concrete", "auto")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--input-dim", type=int, default=256)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(args.batch, args.input_dim)), dtype=torch.float32)
    cot = torch.tensor(rng.normal(size=(args.batch, args.experts)), dtype=torch.float32)
    rows = []
    for name, impl in CASES:
        gate = gt.make_gate(name, args.experts, args.k, args.input_dim, impl=impl).train()

        def step(gate=gate):
            gate.zero_grad(set_to_none=True)
            (gate(x) * cot).sum().backward()

        step()
        rows.append({"gate": name, "impl": impl, "peak_mem_bytes": peak_memory_bytes(step)})
        print(f"{name:14s} {impl:11s} {rows[-1]['peak_mem_bytes'] / 1e6:9.2f} MB")
    shape = {"batch": args.batch, "input_dim": args.input_dim, "experts": args.experts, "k": args.k}
    doc = {"what": "peak extra CPU memory of forward + backward, torch profiler", "shape": shape, "rows": rows,
           "provenance": provenance({"torch": torch.__version__})}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
