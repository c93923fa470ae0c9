from kernels.common import *  # noqa: F401,F403
from kernels.common import lab_main


def gpu_lab_main(name, check, bench, argv=None):
    return lab_main(name, check, bench, argv, device="cuda")
