"""The allocator setting (tinynet/alloc.py, made by tinynet/process.py when the cpu
backend loads): glibc's mallopt parameters, applied once, and not when the user chose."""
import platform

import pytest

from tinynet import alloc, process
from tinynet.backends import cpu  # noqa: F401 (loading it applies the settings)

GLIBC = platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt parameters are glibc's")


@needs_glibc
def test_import_applied_the_setting(monkeypatch):
    for name in alloc._USER_VARIABLES + ("TINYNET_MALLOPT",):
        monkeypatch.delenv(name, raising=False)
    want = {"M_MMAP_THRESHOLD": alloc.MMAP_THRESHOLD, "M_TRIM_THRESHOLD": alloc.TRIM_THRESHOLD,
            "M_TOP_PAD": alloc.TOP_PAD}
    assert alloc.configure_allocator() == want
    if "M_TOP_PAD" in process.APPLIED:  # the test process may run with TINYNET_MALLOPT=0
        assert {k: process.APPLIED[k] for k in want} == want


FAULTS = """
import resource, numpy as np
import tinynet.backends.cpu
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.empty(2 << 20, np.float32); a[:] = 1; del a
before = faults()
for _ in range(20):
    a = np.empty(2 << 20, np.float32)  # 8 MB
    a[:] = 1
    del a
print(faults() - before)
"""


@needs_glibc
def test_freed_arrays_are_reused_without_page_faults():
    """Allocating, filling and freeing an 8 MB array 20 times: with the
    setting the pages stay mapped and the loop takes (almost) no page faults;
    with glibc's defaults every round maps fresh pages."""
    import os
    import subprocess
    import sys
    from conftest import REPO

    def run(**env):
        environ = {k: v for k, v in os.environ.items()
                   if k not in alloc._USER_VARIABLES + ("TINYNET_MALLOPT",)}
        environ.update(env, PYTHONPATH=REPO)
        out = subprocess.run([sys.executable, "-c", FAULTS], env=environ, capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])
    with_setting, defaults = run(), run(TINYNET_MALLOPT="0")
    assert with_setting < 20 <= defaults, (with_setting, defaults)


@pytest.mark.parametrize("name, value", [("TINYNET_MALLOPT", "0"),
                                         ("MALLOC_TOP_PAD_", "1000"),
                                         ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                         ("MALLOC_TRIM_THRESHOLD_", "131072")])
def test_user_choice_wins(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    assert alloc.configure_allocator() == {}
