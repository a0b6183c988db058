"""Compile DSelect-k's Triton kernels ahead of time for a GPU architecture, without a GPU, and report their
resources: registers per thread, stack frame and spilled bytes (``ptxas -v``, the ptxas shipped with Triton).

The launches are the ones ``gates.dselect_triton`` makes (``kernel_launch``) at the ``kernels`` suite's shapes.
This checks that the kernels compile for the GPU (Triton's interpreter, which the CPU tests use, does not) and
that no launch spills. It says nothing about speed.

    .venv/bin/python -m scripts.triton_resources --out docs/results/triton_resources_sm90.json

Run it without ``TRITON_INTERPRET=1`` in the environment (the interpreter has nothing to compile).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("TRITON_INTERPRET=1 is set: unset it, there is nothing to compile in Triton's interpreter")
# A fresh cache, so that every kernel is compiled here (and compile_s is a compile time, not a cache hit).
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="gatebench-triton-cache-")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gates import dselect_triton  # noqa: E402
from scripts._common import parser as make_parser  # noqa: E402
from scripts._common import write_json  # noqa: E402

# (batch, experts, k): the kernels suite's three named scales, then its sweep of n at the paper's batch.
SHAPES = [(4096, 16, 4), (16384, 64, 4), (16384, 256, 8)] + [(4096, n, 4) for n in (8, 32, 128, 512)]
_TYPES = {torch.float32: "fp32", torch.float64: "fp64"}


def _ptxas() -> str:
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not path.exists():
        sys.exit(f"ptxas not found at {path}: this Triton build does not ship the NVIDIA tools")
    return str(path)


def resources(ptx: str) -> dict[str, int]:
    """Registers, stack frame and spill bytes of the one kernel in ``ptx``, from ``ptxas -v`` for its target."""
    target = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        log = subprocess.run([_ptxas(), "-v", "--gpu-name", target, str(src), "-o", str(Path(tmp) / "kernel.cubin")],
                             capture_output=True, text=True, check=True).stderr
    found = {
        "registers": r"Used (\d+) registers",
        "stack_bytes": r"(\d+) bytes stack frame",
        "spill_store_bytes": r"(\d+) bytes spill stores",
        "spill_load_bytes": r"(\d+) bytes spill loads",
    }
    return {key: int(re.search(pattern, log).group(1)) for key, pattern in found.items()}


def compile_launch(kind: str, batch: int, experts: int, k: int, dtype: torch.dtype, arch: int) -> dict:
    """Compile the ``kind`` kernel as ``gates.dselect_triton`` launches it; its launch and resources."""
    fn = dselect_triton.KERNELS[kind]
    programs, meta = dselect_triton.kernel_launch(kind, batch, experts, k, dtype)
    num_warps = meta.pop("num_warps")
    signature = {name: "constexpr" if name in meta else (f"*{_TYPES[dtype]}" if name.endswith("_ptr") else "i32")
                 for name in fn.arg_names}
    t0 = time.perf_counter()
    compiled = triton.compile(ASTSource(fn, signature, meta), target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps})
    seconds = time.perf_counter() - t0
    launch = {key: value for key, value in meta.items() if key != "ACC"}
    return {"kernel": kind, "batch": batch, "experts": experts, "k": k, "dtype": str(dtype).removeprefix("torch."),
            "programs": programs, "num_warps": num_warps, **launch, **resources(compiled.asm["ptx"]),
            "compile_s": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: H100/H200)")
    parser.add_argument("--shapes", default="all", choices=["all", "named"],
                        help="'named': the suite's three named scales only")
    args = parser.parse_args(argv)
    shapes = SHAPES if args.shapes == "all" else SHAPES[:3]
    rows = []
    for batch, experts, k in shapes:
        for kind in ("fwd", "bwd"):
            row = compile_launch(kind, batch, experts, k, torch.float32, args.arch)
            rows.append(row)
            print(f"{kind} b={batch} n={experts} k={k}: BLOCK_B={row['BLOCK_B']} BLOCK_N={row['BLOCK_N']} "
                  f"warps={row['num_warps']} registers={row['registers']} stack={row['stack_bytes']} B "
                  f"spilled={row['spill_store_bytes']} B ({row['compile_s']} s)")
    write_json(args.out, {"target": f"cuda sm_{args.arch}", "rows": rows},
               extra_provenance={"triton": triton.__version__, "torch": torch.__version__})
    spilled = [f"{r['kernel']} n={r['experts']} ({r['spill_store_bytes']} B)" for r in rows if r["spill_store_bytes"]]
    print(f"{len(rows)} kernels compiled for sm_{args.arch}; spilling: {', '.join(spilled) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
