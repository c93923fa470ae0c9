"""The run directory of ``tinynet train``: what it holds, who may write it, when it may go on.

A run directory (``--out``) holds one run:

    config.json             every setting that affects the result, and the architecture
    checkpoint.safetensors  model, optimizer, schedule, history, counters (each epoch)
    history.json            per-epoch records (train and validation metrics)
    curves.png              the learning curves
    result.json             the test metrics, measured once after the last epoch
    eval*.json, *.png       what ``tinynet eval`` wrote there
    .lock                   the process that holds the run (while it runs)

Its guarantees (docs/architecture.md, "The run directory"):

- **One writer.** ``RunDir.acquire`` takes an exclusive ``fcntl.flock`` on the
  directory itself; a second writer is refused with the holder's pid and
  command. The lock is the kernel's: it goes when the process dies, however
  it dies, so there is no stale lock to clean up.
- **A refused command changes nothing.** Every check (the lock, a non-empty
  directory, a resume whose settings differ) runs before the first write.
- **Resume continues the same run or nothing.** ``resume_differences``
  compares every recorded setting; only ``epochs`` may grow, and only when
  the schedule does not depend on it (``--schedule step`` or ``none``): the
  first E epochs of a longer run are then the same computation, so a run
  extended from 5 to 10 epochs equals a run started with 10.
"""
import fcntl
import fnmatch
import json
import math
import os
import shlex
import sys

from .serialization import temp_pattern, atomic_write, remove_stale_temps

__all__ = ["RUN_FILES", "EVAL_PATTERNS", "RunDir", "RunRefused", "SETTINGS", "LATER_SETTINGS", "check_settings",
           "resume_differences", "read_config", "write_json"]

# the files `tinynet train` writes into its run directory, each atomically
RUN_FILES = ("config.json", "checkpoint.safetensors", "checkpoint.npz", "history.json",
             "curves.png", "result.json")
# what `tinynet eval` writes beside a checkpoint
EVAL_PATTERNS = ("eval.json", "eval-tta.json", "confusion.png", "confusion-tta.png",
                 "misclassified.png", "misclassified-tta.png", "filters.png",
                 "feature_maps.png")
LOCK_FILE = ".lock"


class RunRefused(RuntimeError):
    """The run directory cannot take this command: in use, holding another run, or
    a resume with other settings. Nothing was written."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# setting -> (check of its value, what it must be); config.json's settings are
# checked with these before they are used, so a tampered file is one clear error.
SETTINGS = {
    "dataset": (lambda v: v in ("mnist", "fashion-mnist"), "'mnist' or 'fashion-mnist'"),
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "norm": (lambda v: v in ("batch", "layer", "instance", "group", "none"),
             "one of batch, layer, instance, group, none"),
    "num_classes": (lambda v: v == 10, "10 (the datasets have 10 classes)"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**32, "an int in [0, 2**32)"),
    "epochs": (lambda v: _is_int(v) and 1 <= v <= 10_000, "an int in [1, 10000]"),
    "batch_size": (lambda v: _is_int(v) and 1 <= v <= 65_536, "an int in [1, 65536]"),
    "lr": (lambda v: _is_real(v) and 0 < v <= 10, "a number in (0, 10]"),
    "optimizer": (lambda v: v in ("sgd", "adam", "adamw"), "one of sgd, adam, adamw"),
    "weight_decay": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "schedule": (lambda v: v in ("cosine", "step", "none"), "one of cosine, step, none"),
    "label_smoothing": (lambda v: _is_real(v) and 0 <= v < 1, "a number in [0, 1)"),
    "shift": (lambda v: _is_int(v) and 0 <= v <= 13, "an int in [0, 13] (under half an image)"),
    "flip": (lambda v: isinstance(v, bool), "true or false"),
    "limit": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: every training image)"),
    "val_split": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: no validation set)"),
    "split_seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "test_limit": (lambda v: _is_int(v) and v >= 0, "an int >= 0 (0: every test image)"),
    "normalization": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_real, v))
                      and v[1] > 0, "[mean, std] with std > 0"),
}
# settings added after runs were first written -> the value a run without them used
LATER_SETTINGS = {"flip": False}
# settings whose change a resume may accept (see resume_differences)
EXTENSIBLE = ("epochs",)


def check_settings(settings, where):
    """Raise ValueError naming ``where`` and the first setting that is missing or wrong.

    A setting of LATER_SETTINGS that ``settings`` lacks (a run written before
    it existed) is added to the dict with the value such a run used.
    """
    if not isinstance(settings, dict):
        raise ValueError(f"{where}: must be a JSON object of settings, got "
                         f"{type(settings).__name__}")
    for key, value in LATER_SETTINGS.items():
        settings.setdefault(key, value)
    for key, (ok, what) in SETTINGS.items():
        if key not in settings:
            raise ValueError(f"{where}: setting {key!r} is missing")
        if not ok(settings[key]):
            raise ValueError(f"{where}: {key} must be {what}, got {settings[key]!r}")
    return settings


def resume_differences(saved, now):
    """The settings in which ``now`` differs from the run ``saved``, as messages.

    ``epochs`` may grow when the schedule does not depend on it (step, none);
    any other difference is listed.
    """
    diffs = []
    for key in SETTINGS:
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if key == "epochs" and b > a and now.get("schedule") in ("step", "none"):
            continue
        why = ""
        if key == "epochs":
            why = (" (fewer epochs than the run has)" if b < a else
                   " (the cosine schedule spans the run's epochs; a longer run is a new run)")
        flag = f"--{key.replace('_', '-')}"
        if isinstance(b, bool):  # a switch: given or not
            diffs.append(f"{flag} {'is given' if b else 'is not given'} but the run was "
                         f"trained {'with' if a else 'without'} it")
            continue
        diffs.append(f"{flag} {_arg(b)} differs from the run's {_arg(a)}{why}")
    return diffs


def _arg(value):
    return json.dumps(value) if not isinstance(value, str) else value


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_config(path):
    """config.json of a run as a dict; ValueError naming the file when it does not parse."""
    try:
        with open(path) as f:
            config = json.load(f)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e.reason})") from e
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: must be a JSON object, got {type(config).__name__}")
    return config


class RunDir:
    """One run directory and the exclusive lock of the process writing it.

    Parameters
    ----------
    path : str
        The directory; it is created by ``acquire`` when missing.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = None

    def file(self, name):
        return os.path.join(self.path, name)

    def check_usable(self):
        """Raise ValueError when the path, or a run file in it, is not what it must be."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"--out {self.path}: exists and is not a directory")
        for name in RUN_FILES:
            if os.path.isdir(self.file(name)):
                raise ValueError(f"{self.file(name)} is a directory; tinynet writes a file "
                                 f"there (remove it, or pick another --out)")

    def contents(self):
        """The names in the directory other than the lock (empty when it does not exist)."""
        try:
            return sorted(n for n in os.listdir(self.path) if n != LOCK_FILE)
        except FileNotFoundError:
            return []

    def acquire(self):
        """Create the directory if needed and take its lock, or raise RunRefused.

        The lock is ``flock(LOCK_EX | LOCK_NB)`` on the directory itself, so
        taking it writes nothing; once held, ``.lock`` records this process's
        pid and command for the message another writer gets.
        """
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunRefused(f"{self.path} is in use by {self._holder()}; wait for it to "
                             f"finish, or pick another --out") from None
        self._fd = fd
        return self

    def mark_holder(self, argv=None):
        """Write ``.lock``: this process's pid and command (call after every check passed).

        ``argv``: the command's arguments (default sys.argv[1:])."""
        command = shlex.join(["tinynet"] + list(sys.argv[1:] if argv is None else argv))
        remove_stale_temps(self.file(LOCK_FILE))
        write_json(self.file(LOCK_FILE), {"pid": os.getpid(), "command": command})

    def _holder(self):
        try:
            with open(self.file(LOCK_FILE)) as f:
                info = json.load(f)
            return f"process {info['pid']} ({info['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self):
        """Remove ``.lock`` and release the lock (the kernel releases it anyway on exit)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.file(LOCK_FILE))
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def temp_files(self):
        """The names of the temp files that killed writes of the run's files left
        behind (``.<name>.<random>.tmp``, serialization.atomic_write)."""
        patterns = [os.path.basename(temp_pattern(self.file(name))) for name in RUN_FILES]
        return [n for n in self.contents() if any(fnmatch.fnmatch(n, p) for p in patterns)]

    def remove_temps(self):
        """Delete those temp files (the caller holds the lock); returns their paths."""
        removed = []
        for name in RUN_FILES:
            removed += remove_stale_temps(self.file(name))
        return removed

    def clear(self):
        """Remove the files of an earlier run (and what ``tinynet eval`` wrote); returns them."""
        removed = []
        for name in RUN_FILES + EVAL_PATTERNS:
            removed += remove_stale_temps(self.file(name))
            if os.path.isfile(self.file(name)):
                os.unlink(self.file(name))
                removed.append(self.file(name))
        return removed

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
