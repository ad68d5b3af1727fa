"""The recorded environment: CPU model from /proc/cpuinfo, fallbacks, keys."""
from __future__ import annotations

import platform

from advgeom.results import environment
from advgeom.results.env import cpu_name


def test_cpu_name_reads_model_name(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000 @ 3.0GHz\n"
                 "processor\t: 1\nmodel name\t: Example CPU 9000 @ 3.0GHz\n")
    assert cpu_name(f) == "Example CPU 9000 @ 3.0GHz"


def test_cpu_name_falls_back_without_cpuinfo(tmp_path):
    assert cpu_name(tmp_path / "missing") == (platform.processor() or "cpu")
    empty = tmp_path / "empty"
    empty.write_text("processor\t: 0\nmodel name\t:\n")
    assert cpu_name(empty) == (platform.processor() or "cpu")


def test_environment_keys_and_cpu_device():
    env = environment("cpu")
    assert set(env) == {"advgeom", "git_sha", "code", "torch", "python", "platform", "device", "threads",
                        "world_size"}
    assert env["device"] == f"cpu:{cpu_name()}"
    assert env["world_size"] == "1"   # one process (torchrun runs record their number of ranks)
    assert all(isinstance(v, str) and v for v in env.values())
