"""``benchmarks/_machine.py``: the machine line the speed benchmarks print first."""

from __future__ import annotations

from _bench_modules import load_benchmark_module

_machine = load_benchmark_module("_machine")

_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 2445.422
flags\t\t: fpu sse2

processor\t: 1
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 3100.000
"""


def test_cpu_model_is_the_first_processors_model_and_clock(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(_CPUINFO)
    assert _machine.cpu_model(f) == "AMD EPYC 7B13, 2445 MHz"


def test_cpu_model_without_cpuinfo_or_clock(tmp_path):
    assert _machine.cpu_model(tmp_path / "missing") == "unknown"
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Some CPU\n")
    assert _machine.cpu_model(f) == "Some CPU"
    f.write_text("processor\t: 0\n")
    assert _machine.cpu_model(f) == "unknown"


def test_describe_names_the_cores_and_both_yardsticks(monkeypatch):
    monkeypatch.setattr(_machine, "yardsticks", lambda: {"python": 0.25, "numpy": 0.125})
    line = _machine.describe()
    assert line.startswith("machine: ")
    assert "cores;" in line
    assert "python 0.250, numpy 0.125" in line


def test_yardsticks_are_positive_seconds():
    y = _machine.yardsticks(repeats=1)
    assert set(y) == {"python", "numpy"}
    assert all(0.0 < v < 60.0 for v in y.values())


def test_file_creation_yardstick_writes_in_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    import tumorscope.volume as volume

    written = []
    real = volume.atomic_write

    def spy(path, writer):
        real(path, writer)
        written.append((path.parent.parent, path.stat().st_size))

    monkeypatch.setattr(volume, "atomic_write", spy)
    ms = _machine.file_creation_ms(tmp_path, n=20)
    assert 0.0 <= ms < 1000.0
    assert written == [(tmp_path, 4096)] * 20  # tumorscope's writer, 4 kB, in the folder
    assert list(tmp_path.iterdir()) == []  # its folder removed


def test_describe_names_the_file_yardstick(monkeypatch, tmp_path):
    monkeypatch.setattr(_machine, "yardsticks", lambda: {"python": 0.25, "numpy": 0.125})
    monkeypatch.setattr(_machine, "file_creation_ms", lambda folder=None, n=200: 0.0425)
    assert _machine.describe(tmp_path).endswith("; a new file 0.043 ms CPU")
