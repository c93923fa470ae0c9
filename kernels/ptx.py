"""PTX and SASS of every cuda kernel: registers, spills and shared memory.

Compiles each cuda kernel (tinynet/ops/*/cuda.py, ``cuda_device.KERNELS``) with
``numba.cuda.compile_ptx`` for every signature training launches it with
(float32 and float64) and compute capabilities 8.0 and 9.0, then assembles
the PTX to SASS with ``ptxas -v`` and reads back, per kernel, the registers
per thread, the spill stores and loads, the stack frame and the static
shared memory per block. No GPU is needed; NUMBA_ENABLE_CUDASIM must not be
set (the simulator has no compiler).

ptxas must be able to read the PTX numba-cuda writes: the PTX ISA of the
toolkit numba-cuda uses (13.5 here, ``.version 9.5``) is newer than what an
older system ptxas (CUDA 13.0) accepts, so the ptxas of the
``nvidia-cuda-nvcc`` wheel of the same toolkit version is looked up first
(``pip install nvidia-cuda-nvcc==13.5.37``); ``$TINYNET_PTXAS`` overrides.

    python -m kernels.ptx            # the table
    python -m kernels.ptx --check    # the table, exit 1 on a spill or too much shared memory
"""
import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

__all__ = ["find_ptxas", "ptxas_version", "kernel_resources", "problems", "main",
           "ARCHS", "SHARED_PER_BLOCK"]

ARCHS = ((8, 0), (9, 0))
# Static shared memory a block may declare (48 KiB on every architecture;
# more needs a dynamic opt-in, which no kernel here uses). An SM has more
# (164 KiB on cc 8.0, 228 KiB on cc 9.0), so this bound is the binding one.
SHARED_PER_BLOCK = 48 * 1024


def find_ptxas():
    """Path of a ptxas that reads numba-cuda's PTX, or None."""
    env = os.environ.get("TINYNET_PTXAS")
    if env:
        return env
    try:
        import nvidia
        for root in nvidia.__path__:
            for sub in ("cu13", "cuda_nvcc", "cu12"):
                path = os.path.join(root, sub, "bin", "ptxas")
                if os.path.exists(path):
                    return path
    except ImportError:
        pass
    return shutil.which("ptxas")


def ptxas_version(ptxas):
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def _kernels():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise RuntimeError("kernels.ptx: unset NUMBA_ENABLE_CUDASIM; the simulator cannot "
                           "compile PTX")
    from tinynet.ops import FAMILIES
    for family in FAMILIES:
        importlib.import_module(f"tinynet.ops.{family}.cuda")
    from tinynet.backends import cuda_device as device
    return device


_INFO = {
    "registers": re.compile(r"Used (\d+) registers"),
    "smem": re.compile(r"(\d+) bytes smem"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def _assemble(ptxas, ptx, arch, workdir):
    """ptxas -v of one PTX module: {registers, smem, stack, spill_stores, spill_loads}."""
    src = os.path.join(workdir, "k.ptx")
    with open(src, "w") as f:
        f.write(ptx)
    proc = subprocess.run([ptxas, f"-arch=sm_{arch[0]}{arch[1]}", "-v", src,
                           "-o", os.path.join(workdir, "k.cubin")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{arch[0]}{arch[1]}: {proc.stderr.strip()}")
    # The entry function's lines come after its "Compiling entry function" line.
    text = proc.stderr.split("Compiling entry function", 1)[-1]
    info = {}
    for key, pattern in _INFO.items():
        m = pattern.search(text)
        info[key] = int(m.group(1)) if m else 0
    return info


def kernel_resources(ptxas=None, archs=ARCHS):
    """One dict per (kernel, signature, arch): module, kernel, signature, arch,
    registers, smem, stack, spill_stores, spill_loads."""
    from numba import cuda
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        raise RuntimeError("kernels.ptx: no ptxas found; pip install nvidia-cuda-nvcc==13.5.37 "
                           "(the toolkit version of numba-cuda's NVVM) or set TINYNET_PTXAS")
    device = _kernels()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for module, name, fn, templates, _ in device.KERNELS:
            for sig in device.signatures_of(templates):
                for arch in archs:
                    ptx, _ = cuda.compile_ptx(fn, sig, cc=arch)
                    info = _assemble(ptxas, ptx, arch, workdir)
                    rows.append(dict(module=module.rsplit(".", 1)[-1], kernel=name,
                                     signature=sig, arch=f"sm_{arch[0]}{arch[1]}", **info))
    return rows


def problems(rows):
    """Messages for rows that spill or declare more shared memory than a block may."""
    out = []
    for r in rows:
        where = f"{r['module']}.{r['kernel']} {r['signature']} on {r['arch']}"
        if r["spill_stores"] or r["spill_loads"]:
            out.append(f"{where} spills ({r['spill_stores']} B stored, "
                       f"{r['spill_loads']} B loaded)")
        if r["smem"] > SHARED_PER_BLOCK:
            out.append(f"{where} declares {r['smem']} B of shared memory (> {SHARED_PER_BLOCK})")
    return out


def _dtype_tag(sig):
    return "f64" if sig.startswith("void(float64") else "f32" if "float32" in sig else "-"


def format_table(rows):
    head = f"{'kernel':<34}{'dtype':<7}{'arch':<7}{'regs':>5}{'smem B':>8}{'stack':>7}{'spill':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        spill = r["spill_stores"] + r["spill_loads"]
        lines.append(f"{r['module'] + '.' + r['kernel']:<34}{_dtype_tag(r['signature']):<7}"
                     f"{r['arch']:<7}{r['registers']:>5}{r['smem']:>8}{r['stack']:>7}{spill:>7}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m kernels.ptx")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on any spill or on too much shared memory")
    args = parser.parse_args(argv)
    ptxas = find_ptxas()
    rows = kernel_resources(ptxas)
    print(f"ptxas {ptxas_version(ptxas)} ({ptxas}); {len(rows)} kernel builds")
    print(format_table(rows))
    bad = problems(rows)
    for msg in bad:
        print("PROBLEM:", msg)
    if args.check and bad:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
