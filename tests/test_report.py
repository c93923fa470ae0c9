"""The GPU report's plumbing (kernels/report.py ``--device cuda``), without a GPU.

Its sections are processes; here they are small Python scripts standing in
for them: one that reports, one that reads what the doc and the earlier
sections already hold, one that fails, one that runs past its time limit
(and leaves a child of its own running). The GPU itself is faked where the
report asks for it.
"""
import json
import os
import signal
import sys
import textwrap
import time
import types

import pytest

from kernels import report

DOC = """# GPU performance

<!-- gpu-report:start -->
old results
<!-- gpu-report:end -->

between

<!-- ptx:start -->
old table
<!-- ptx:end -->
tail
"""


def fake_section(name, code, marker="gpu-report"):
    """A Section running ``code`` (Python; ``OUT`` is the --section-out path it gets)."""
    script = "import json, os, sys\nOUT = sys.argv[-1]\n" + textwrap.dedent(code)
    return report.Section(name, f"fake {name}", marker, [sys.executable, "-c", script])


def write_result(body, ok=True, data=None):
    """The code of a section that writes its result (``body`` is Python text)."""
    return (f"json.dump({{'body': {body}, 'ok': {ok}, 'data': {data or {}}}}, "
            f"open(OUT, 'w'))\n")


def test_device_name_accepts_str_and_bytes():
    """numba-cuda 0.30 gives the name as a str, older versions as bytes."""
    for name in ("NVIDIA H200", b"NVIDIA H200"):
        assert report.device_name(types.SimpleNamespace(name=name)) == "NVIDIA H200"


def test_device_section_names_the_gpu(monkeypatch):
    from numba import cuda
    gpu = types.SimpleNamespace(name="NVIDIA H200", compute_capability=(9, 0))
    monkeypatch.setattr(cuda, "get_current_device", lambda: gpu, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="13.6.0"))
    from tinynet.backends import cuda_device
    monkeypatch.setattr(cuda_device, "LAUNCHER", "cupy")
    body, ok, data = report.device_section()
    assert "on NVIDIA H200 (cc 9.0)" in body and "CuPy 13.6.0" in body and ok and data == {}
    assert "kernels launched by cupy's launcher (TINYNET_CUDA_LAUNCHER)" in body


def test_pytest_summary_keeps_every_failure_and_the_counts():
    output = textwrap.dedent("""\
        ..F.E.                                                     [100%]
        ==================================== ERRORS ====================================
        ____________________ ERROR at setup of test_b ____________________
        E   RuntimeError: no device
        =================================== FAILURES ===================================
        ____________________ test_a ____________________
        E   assert 1 == 2
        =========================== short test summary info ============================
        FAILED tests/test_x.py::test_a - assert 1 == 2
        ERROR tests/test_x.py::test_b - RuntimeError: no device
        1 failed, 4 passed, 1 error in 0.52s
        """)
    assert report.pytest_summary(output) == (
        "FAILED tests/test_x.py::test_a - assert 1 == 2\n"
        "ERROR tests/test_x.py::test_b - RuntimeError: no device\n"
        "1 failed, 4 passed, 1 error in 0.52s")
    assert report.pytest_summary("....\n4 passed in 0.1s\n") == "4 passed in 0.1s"


def _alive(pid):
    """True while process ``pid`` exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_sections_run_apart_and_each_is_written_as_it_ends(tmp_path):
    """Every section runs in its own process and lands in the doc as soon as it ends,
    with what earlier ones reported; a failure and a timeout are written with their
    output and the run goes on; the timed-out section's own child is killed too."""
    doc = tmp_path / "gpu.md"
    doc.write_text(DOC)
    child_pid = tmp_path / "child.pid"
    sections = [
        fake_section("first", write_result("'first body'", data={"bandwidth": 4e12})),
        fake_section("second", f"""
            text = open({str(doc)!r}).read()
            seen = 'first body' in text and 'Not run yet when this was written: second' in text
            bandwidth = json.loads(os.environ['TINYNET_REPORT_DATA'])['bandwidth']
            """ + write_result("f'saw the first: {seen}, bandwidth {bandwidth:g}'")),
        fake_section("failing", """
            print('partial work')
            raise ValueError('boom')
            """),
        fake_section("slow", f"""
            import subprocess, time
            child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
            open({str(child_pid)!r}, 'w').write(str(child.pid))
            print('started', flush=True)
            time.sleep(60)
            """),
        fake_section("table", write_result("'the table'"), marker="ptx"),
    ]
    echoed = []
    logs = tmp_path / "logs"
    ok = report.run_sections(sections, str(doc), timeout=3, echo=echoed.append, logs=str(logs))
    assert not ok and len(echoed) == 5
    # Each section's whole output is kept, the failed and the timed-out ones' too.
    assert sorted(p.name for p in logs.iterdir()) == [
        "failing.log", "first.log", "second.log", "slow.log", "table.log"]
    assert "partial work" in (logs / "failing.log").read_text()
    assert "ValueError: boom" in (logs / "failing.log").read_text()
    assert (logs / "slow.log").read_text() == "started\n"
    text = doc.read_text()
    head, rest = text.split("<!-- gpu-report:start -->\n")
    results, rest = rest.split("<!-- gpu-report:end -->")
    assert head == "# GPU performance\n\n" and "old results" not in results
    assert "### fake first (" in results and "first body" in results
    assert "saw the first: True, bandwidth 4e+12" in results
    assert "### fake failing (failed" in results and "FAILED (exit 1)" in results
    assert "partial work" in results and "ValueError: boom" in results
    assert "### fake slow (timed out)" in results and "killed after 3 s" in results
    assert "started" in results
    assert results.index("first body") < results.index("boom") < results.index("started")
    assert "Not run yet" not in text
    assert rest.startswith("\n\nbetween\n\n<!-- ptx:start -->\n### fake table (")
    assert rest.endswith(" s)\n\nthe table\n<!-- ptx:end -->\ntail\n")
    pid = int(child_pid.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the timed-out section's child survived it")


def test_a_section_that_writes_no_result_fails(tmp_path):
    text, ok, data = report.run_section(fake_section("quiet", "print('nothing')"), timeout=30)
    assert not ok and data == {} and "exit 0 but no result written" in text


def _fake_gpu_run(monkeypatch, tmp_path, argv, missing):
    """gpu_main's sections and exit status for ``argv``, with ``gpu_missing``
    faked (None: a GPU) and the sections not run."""
    ran = []

    def run_sections(sections, doc, timeout, logs=None):
        ran.append(([s.name for s in sections], doc, timeout))
        return True
    monkeypatch.setattr(report, "gpu_missing", lambda: missing)
    monkeypatch.setattr(report, "run_sections", run_sections)
    status = report.gpu_main(report.parse_args(["--device", "cuda",
                                                "--out", str(tmp_path / "gpu.md")] + argv))
    return ran[0], status


def test_the_ptx_table_runs_only_without_a_gpu(monkeypatch, tmp_path):
    (names, doc, timeout), status = _fake_gpu_run(monkeypatch, tmp_path, [], None)
    assert names == ["device", "tests", "bandwidth", "gpu_launch", "gpu_norm", "gpu_gemm",
                     "step", "speedrun"]
    assert status == 0 and timeout == report.SECTION_TIMEOUT == 300
    (names, _, _), status = _fake_gpu_run(monkeypatch, tmp_path, [], "no GPU found")
    assert names == ["ptx"] and status == 1
    (names, doc, timeout), status = _fake_gpu_run(
        monkeypatch, tmp_path, ["--ptx-only", "--no-write", "--section-timeout", "60"], None)
    assert names == ["ptx"] and doc is None and timeout == 60 and status == 0


def test_only_picks_and_orders_the_gpu_sections(monkeypatch, tmp_path):
    (names, _, _), _ = _fake_gpu_run(monkeypatch, tmp_path, ["--only", "step,tests"], None)
    assert names == ["step", "tests"]
    # Without a GPU only the PTX table runs, whatever --only says.
    (names, _, _), _ = _fake_gpu_run(monkeypatch, tmp_path, ["--only", "step"], "no GPU")
    assert names == ["ptx"]


def test_only_names_real_sections_and_test_workers_is_positive(capsys):
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cuda", "--only", "tests,nope"])
    assert "--only: no GPU section 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cuda", "--test-workers", "0"])
    assert "--test-workers must be at least 1, got 0" in capsys.readouterr().err


def test_launchers_repeat_the_timed_sections_each_in_its_environment(tmp_path):
    sections = report.gpu_sections(True, test_workers=2, only=["device", "tests", "step"],
                                   launchers=["numba", "cupy"])
    assert [(s.name, s.env) for s in sections] == [
        ("device", {}), ("tests", {"TINYNET_CUDA_LAUNCHER": "numba"}),
        ("tests", {"TINYNET_CUDA_LAUNCHER": "cupy"}), ("step", {"TINYNET_CUDA_LAUNCHER": "numba"}),
        ("step", {"TINYNET_CUDA_LAUNCHER": "cupy"})]
    assert sections[2].title.endswith("-n 2`, cupy's launcher")
    # The environment reaches the section's process, and each run keeps its own log.
    probe = fake_section("probe", write_result("os.environ['TINYNET_CUDA_LAUNCHER']"))
    logs = tmp_path / "logs"
    for launcher in ("numba", "cupy"):
        text, ok, _ = report.run_section(
            probe._replace(env={"TINYNET_CUDA_LAUNCHER": launcher}), timeout=30, logs=str(logs))
        assert ok and text.endswith(f"\n\n{launcher}")
    assert sorted(p.name for p in logs.iterdir()) == ["probe-cupy.log", "probe-numba.log"]
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cuda", "--launchers", "numba,fast"])


def test_the_tests_section_spreads_over_workers():
    assert report.test_command(1) == report.TEST_COMMAND
    assert report.test_command(4) == report.TEST_COMMAND + ["-n", "4"]
    tests = [s for s in report.gpu_sections(True, test_workers=3) if s.name == "tests"][0]
    assert tests.argv[-2:] == ["--test-workers", "3"] and "-n 3`" in tests.title


def test_a_new_doc_is_made_with_the_markers_and_a_wrong_one_refused(tmp_path, capsys):
    new = tmp_path / "new.md"
    report.prepare_doc(str(new), {"gpu-report", "ptx"})
    report.write_doc(str(new), {"gpu-report": "results"})
    assert "<!-- gpu-report:start -->\nresults\n<!-- gpu-report:end -->" in new.read_text()
    other = tmp_path / "other.md"
    other.write_text("# notes\n")
    with pytest.raises(ValueError, match="prepare_doc: the doc .*other.md \\(--out\\) has no "
                                         "<!-- ptx:start --> line"):
        report.prepare_doc(str(other), {"ptx"})
    status = report.gpu_main(report.parse_args(["--device", "cuda", "--ptx-only",
                                                "--out", str(other)]))
    assert status == 2 and "has no <!-- ptx:start --> line" in capsys.readouterr().err
    assert other.read_text() == "# notes\n"


def test_section_timeout_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cuda", "--section-timeout", "0"])
    assert "--section-timeout must be a positive number of seconds" in capsys.readouterr().err


def test_a_section_run_alone_writes_its_result(monkeypatch, tmp_path):
    monkeypatch.setitem(report.SECTION_FUNCTIONS, "device",
                        lambda: ("body", False, {"bandwidth": 1.0}))
    out = tmp_path / "result.json"
    assert report.main(["--device", "cuda", "--section", "device",
                        "--section-out", str(out)]) == 0
    assert json.loads(out.read_text()) == {"body": "body", "ok": False,
                                           "data": {"bandwidth": 1.0}}


def test_the_cpu_report_writes_the_speedrun_table(monkeypatch):
    """The speedrun table (kernels.speedrun's rows) with a header naming the command,
    the CPU and the load, and the doc's speedrun region that it replaces."""
    from kernels import speedrun
    rows = [{"seed": s, "tinynet": {"train_s": 2.0 + s, "test_acc": 0.99},
             "torch": {"train_s": 4.0, "test_acc": 0.98}} for s in range(2)]
    monkeypatch.setattr(speedrun, "bench", lambda seeds, torch=True: rows[:seeds])
    text = report.speedrun_table(2)
    head, table = text.split("\n\n")
    assert "`python -m kernels.speedrun --seeds 2`" in head and report.cpu_model() in head
    assert table.splitlines()[-1] == "| median / mean | 2.50 | 99.00% | 4.00 | 98.00% | 0.62 |"
    with open(os.path.join(report.DOC, "performance.md")) as f:
        doc = f.read()
    new = report.replace_between(doc, "speedrun", text)
    assert text in new and new.count("<!-- speedrun:start -->") == 1
    assert report.parse_args([]).speedrun_seeds == 10
    assert report.parse_args(["--speedrun-seeds", "0"]).speedrun_seeds == 0
