"""`cxrkit.machine` and `cxrkit info`: the CPU features that pick cxrkit's paths, read from /proc/cpuinfo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cxrkit import machine
from cxrkit.cli.main import main
from cxrkit.training.trainer import resolve_precision

ZEN4 = ("processor\t: 0\nmodel name\t: AMD EPYC 9454\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16 "
        "avx512_vpopcntdq\n\nprocessor\t: 1\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni avx512_bf16\n")
ZEN3 = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"


@pytest.fixture
def cpuinfo(monkeypatch):
    """Pretend to be another CPU: ``cpuinfo(text)``; the cached read is cleared before and after."""
    real = machine._cpuinfo
    real.cache_clear()
    yield lambda text: monkeypatch.setattr(machine, "_cpuinfo", lambda: text)
    real.cache_clear()


@pytest.mark.parametrize("text, bf16, vnni, model", [
    (ZEN4, True, True, "AMD EPYC 9454"),
    (ZEN3, False, False, "AMD EPYC 7B13"),
    (ARM, False, False, None),  # no "model name": platform's name instead
    ("", False, False, None),  # no /proc/cpuinfo: every feature absent, the safe paths taken
])
def test_features_decide_bf16_and_int8(cpuinfo, text, bf16, vnni, model):
    cpuinfo(text)
    assert machine.native_bf16() is bf16 and machine.int8_dot_product() is vnni
    assert resolve_precision("auto") == ("bf16" if bf16 else "fp32")
    if model:
        assert machine.cpu_model() == model
    assert isinstance(machine.cpu_model(), str)


def test_flags_are_whole_words_of_the_first_flags_line(cpuinfo):
    cpuinfo(ZEN4)
    assert "avx512_vpopcntdq" in machine.cpu_flags() and "avx512" not in machine.cpu_flags()
    assert machine.cpu_flags_line().startswith("flags")
    cpuinfo(ARM)
    assert machine.cpu_flags() == {"fp", "asimd", "asimddp"}


def test_info_describes_the_other_side_of_each_line(cpuinfo):
    cpuinfo(ZEN4)
    zen4 = machine.info_lines(machine.machine_info())
    cpuinfo(ZEN3)
    zen3 = machine.info_lines(machine.machine_info())
    assert any("-> bf16" in line for line in zen4) and any("-> fp32" in line and "emulated" in line for line in zen3)
    assert any("VNNI present" in line for line in zen4) and any("no VNNI" in line for line in zen3)


def test_cli_info_prints_this_machine(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(machine.FEATURES) == set(info["features"])
    assert info["features"]["avx2"] == ("avx2" in machine.cpu_flags())
    assert info["training_precision_auto"] == resolve_precision("auto")
    assert info["packages"]["numpy"] and info["usable_cpus"] >= 1
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "BNN engine" in text and info["bnn_kernel"] in text and info["cpu"] in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's tunables exist on Linux only")
@pytest.mark.parametrize("given, expected", [
    ({}, machine.FAST_MALLOC),  # nothing set: the process starts again with the fast settings
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc.malloc.arena_max=2"),  # the caller's own choice is kept
    ({"CXRKIT_NO_REEXEC": "1"}, None),  # opted out: runs as it is
])
def test_reexec_gives_the_fast_allocator_once(given, expected, tmp_path):
    """The benchmarks and the CLI measure what a user gets only if the settings are in place before the process
    starts; the child reports the environment it ended up in (and would loop forever if the guard failed)."""
    script = tmp_path / "child.py"
    script.write_text("import os, sys\nfrom cxrkit.machine import reexec_with_fast_malloc\n"
                      "reexec_with_fast_malloc([sys.executable, *sys.argv])\nprint(os.environ.get('GLIBC_TUNABLES'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CXRKIT_NO_REEXEC")}
    out = subprocess.run([sys.executable, str(script)], env={**env, **given}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)
