"""``tinynet info``: what this machine gives tinynet.

Versions (tinynet, Python, numpy, numba, and numba-cuda, CuPy, safetensors,
torch when installed); each backend and, when it cannot load, why, and whose
launcher the cuda backend's kernels go through when it loads; the thread
counts, numba's threading layer and the BLAS libraries in use (through
threadpoolctl); the kernel compile cache: whether it holds every kernel
signature that ``tinynet warmup`` compiled (the kernels of ``tinynet
train``'s models), and how many of all cpu kernels it holds; and where each
data set was found.

Kernel counts: a numba kernel is compiled once per signature (the dtype,
rank and layout of its arguments), and the cache holds each signature for
one CPU and one version of the source. ``kernels`` counts the kernels that
compile on their own (not the ``inline="always"`` helpers, which compile
into their callers only), ``cached`` those with at least one signature in
the cache for this CPU and source; the train models use about half of all
kernels, so ``cached < kernels`` is normal after a warmup. ``warmup``
compares the signatures each warmup recorded with the cache.
"""
import importlib
import importlib.metadata
import os
import platform

import numpy as np

__all__ = ["collect", "format_info"]

# distributions whose versions are reported when installed
_DISTRIBUTIONS = ("numpy", "numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x", "cupy",
                  "safetensors", "threadpoolctl", "tqdm", "matplotlib", "torch")


def _versions():
    from . import __version__
    out = {"tinynet": __version__, "python": platform.python_version()}
    for name in _DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _backends():
    """name -> "available" or the RuntimeError that loading it raises."""
    from . import backends
    out = {}
    for name in ("ref", "cpu", "cuda"):
        try:
            backends._load(name)
        except (ImportError, RuntimeError) as e:
            out[name] = f"unavailable: {e}"
        else:
            out[name] = "available"
    return out


def _threads():
    """Thread counts, numba's threading layer and the BLAS libraries."""
    import numba
    from threadpoolctl import threadpool_info

    from . import backends
    from .threads import get_num_threads
    out = {"tinynet_threads": get_num_threads(), "numba_threads": numba.get_num_threads(),
           "numba_threading_layer_requested": numba.config.THREADING_LAYER,
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    try:
        cpu = backends._load("cpu")
        # the threading layer is chosen when the first parallel kernel runs
        cpu.relu_forward(np.zeros(64, dtype=np.float32))
        out["numba_threading_layer"] = numba.threading_layer()
    except (RuntimeError, ValueError) as e:
        out["numba_threading_layer"] = f"unknown ({e})"
    out["blas"] = [{"library": p.get("internal_api"), "version": p.get("version"),
                    "threads": p.get("num_threads"), "path": p.get("filepath"),
                    "threading": p.get("threading_layer")}
                   for p in threadpool_info() if p.get("user_api") == "blas"]
    out["openmp"] = [{"library": p.get("internal_api"), "path": p.get("filepath"),
                      "threads": p.get("num_threads")}
                     for p in threadpool_info() if p.get("user_api") == "openmp"]
    return out


def _kernel_cache():
    """Where the cpu kernels are cached, how many of them are, and whether the
    cache holds every signature that ``tinynet warmup`` compiled."""
    from .ops import FAMILIES
    for family in FAMILIES:
        try:
            importlib.import_module(f"tinynet.ops.{family}.cpu")
        except ImportError as e:
            return {"error": f"the cpu backend does not import: {e}"}
    from .backends.cpu_jit import cached_signatures, kernel_name, kernels
    from .warmup import recorded_signatures
    # inline="always" helpers are not counted: they compile into their callers only
    all_kernels = kernels()
    dirs = sorted({k.stats.cache_path for k in all_kernels if k.stats.cache_path})
    cached = {kernel_name(k): cached_signatures(k) for k in all_kernels}
    recorded = recorded_signatures()
    missing = sorted(f"{name}({sig})" for name, sigs in recorded.items()
                     for sig in sigs - cached[name])
    needed = sum(len(sigs) for sigs in recorded.values())
    warm = {"kernels": len(recorded), "signatures": needed,
            "cached": needed - len(missing), "missing": missing}
    state = ("no cache directory is writable: every process compiles" if not dirs else
             "not warmed up" if not recorded else
             "warm" if not missing else
             "cold" if len(missing) == needed else "partly warm")
    return {"directories": dirs, "state": state,
            "kernels": len(all_kernels), "cached": sum(bool(s) for s in cached.values()),
            "signatures": sum(len(s) for s in cached.values()),
            "warmup": warm, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR")}


def _datasets():
    """dataset -> {"found": directories, "missing": files, "searched": [...]}, looked up
    the way the loaders look (a missing $TINYNET_DATA_DIR is reported, not raised)."""
    from .data import datasets
    root = datasets.data_root()
    out = {"root": root}
    for name, subdir, extra in (("mnist", "mnist", ()),
                                ("fashion-mnist", "fashion-mnist",
                                 datasets.FASHION_MNIST_SYSTEM_DIRS)):
        try:
            search = [datasets.dataset_dir(subdir), *extra]
        except datasets.DatasetNotFoundError as e:
            out[name] = {"found": [], "missing": [], "searched": [], "error": str(e)}
            continue
        files = {}
        for prefix in ("train", "t10k"):
            for kind in ("images-idx3", "labels-idx1"):
                base = f"{prefix}-{kind}-ubyte"
                files[base] = datasets.find_file(base, search)
        dirs = sorted({os.path.dirname(p) for p in files.values() if p})
        missing = [k for k, p in files.items() if p is None]
        out[name] = {"found": dirs, "missing": missing, "searched": search}
    return out


def _cuda_launcher(backends):
    """How the cuda backend launches its kernels (cuda_device.LAUNCHER), or None
    when it is not available."""
    if backends.get("cuda") != "available":
        return None
    from .backends import cuda_device
    if cuda_device.SIMULATOR:
        return "numba's CUDA simulator"
    if cuda_device.LAUNCHER == "cupy":
        return "CuPy's launcher after each kernel's first launch (TINYNET_CUDA_LAUNCHER=cupy)"
    return "numba-cuda's launcher (TINYNET_CUDA_LAUNCHER=numba)"


def collect():
    """Everything ``tinynet info`` prints, as a JSON-serializable dict."""
    backends = _backends()
    return {"versions": _versions(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "backends": backends,
            "cuda_launcher": _cuda_launcher(backends), "threads": _threads(),
            "kernel_cache": _kernel_cache(), "datasets": _datasets()}


def format_info(info):
    """The report as text, one fact a line."""
    lines = ["versions"]
    lines += [f"  {k:<16}{v}" for k, v in info["versions"].items()]
    lines.append(f"platform          {info['platform']}, {info['cpu_count']} CPUs")
    lines.append("backends")
    lines += [f"  {k:<16}{v}" for k, v in info["backends"].items()]
    if info.get("cuda_launcher"):
        lines.append(f"  cuda launches   {info['cuda_launcher']}")
    t = info["threads"]
    lines.append("threads")
    lines.append("  counts          " + ", ".join(f"{k} {v}" for k, v in
                                                  t["tinynet_threads"].items()))
    lines.append(f"  numba layer     {t['numba_threading_layer']} "
                 f"(requested: {t['numba_threading_layer_requested']}, "
                 f"OMP_WAIT_POLICY={t['OMP_WAIT_POLICY']})")
    for b in t["blas"] or [{"library": "none found", "version": "", "threads": "",
                            "path": "", "threading": ""}]:
        lines.append(f"  BLAS            {b['library']} {b['version']}, {b['threads']} threads, "
                     f"{b['threading']} threading, {b['path']}")
    for o in t["openmp"]:
        lines.append(f"  OpenMP          {o['library']}, {o['threads']} threads, {o['path']}")
    c = info["kernel_cache"]
    lines.append("kernel cache")
    if "error" in c:
        lines.append(f"  {c['error']}")
    else:
        w, dirs = c["warmup"], c["directories"]
        if not dirs:
            lines.append(f"  {c['state']}")
        elif c["state"] == "not warmed up":
            lines.append("  not warmed up: no record of `tinynet warmup` in these directories; "
                         "it compiles the kernels of tinynet train's models")
        else:
            lines.append(f"  {c['state']}: {w['cached']}/{w['signatures']} signatures of the "
                         f"{w['kernels']} kernels that `tinynet warmup` compiled are cached")
        if w["missing"]:
            lines.append(f"  missing (source changed, another CPU or a cleared cache; run "
                         f"`tinynet warmup`): {', '.join(w['missing'][:3])}"
                         f"{', ...' if len(w['missing']) > 3 else ''}")
        lines.append(f"  all cpu kernels: {c['cached']}/{c['kernels']} cached, "
                     f"{c['signatures']} signatures (one per dtype, rank and layout a "
                     f"kernel was called with)")
        if dirs:
            lines.append(f"  in {os.path.commonpath(dirs)} ({len(dirs)} directories)"
                         if len(dirs) > 1 else f"  in {dirs[0]}")
    d = info["datasets"]
    lines.append(f"datasets (root {d['root']})")
    for name in ("mnist", "fashion-mnist"):
        entry = d[name]
        if "error" in entry:
            lines.append(f"  {name:<16}{entry['error']}")
        elif not entry["missing"]:
            lines.append(f"  {name:<16}found in {', '.join(entry['found'])}")
        else:
            hint = (" (Debian: apt-get install dataset-fashion-mnist)"
                    if name == "fashion-mnist" else "")
            lines.append(f"  {name:<16}missing {len(entry['missing'])} of 4 files; searched "
                         f"{', '.join(entry['searched'])}{hint}")
    return "\n".join(lines)
