"""Portable numbers: the platform fingerprint a manifest records, the locked environment, and the gate's platform line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerbench.compare import describe_platforms
from layerbench.environment import cpu_identity, describe_platform, environment, lock_pins, lock_status, platform_fingerprint

ROOT = Path(__file__).parent.parent
# The first lines of an Intel host's /proc/cpuinfo (one processor's block, then the next).
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: fpu avx2 avx512f

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_the_cpu_is_read_from_proc_cpuinfo():
    assert cpu_identity(CPUINFO) == {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Platinum 8480+", "family": "6", "model_id": "143", "stepping": "8"}
    assert cpu_identity("")["model"]  # no /proc/cpuinfo: the platform module's name for it


def test_the_fingerprint_names_what_decides_the_bits_and_changes_with_the_threads():
    import torch

    fingerprint = platform_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{12}", fingerprint["id"]) and fingerprint == platform_fingerprint()
    assert fingerprint["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fingerprint["torch"]["blas"] and fingerprint["torch"]["threads"] == torch.get_num_threads()
    assert fingerprint["numpy_blas"] and fingerprint["numpy_blas"][0]["internal_api"]
    assert fingerprint["gpu"] is None or fingerprint["gpu"]["name"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert platform_fingerprint()["id"] != fingerprint["id"]  # another thread count splits the sums otherwise
    finally:
        torch.set_num_threads(threads)
    assert fingerprint["id"] in describe_platform(fingerprint) and "unknown platform" in describe_platform(None)


def test_the_manifest_claims_bitwise_only_for_its_own_platform():
    env = environment()
    assert env["platform_fingerprint"]["id"] == env["reproducibility"]["platform"]
    assert env["reproducibility"]["bitwise"] is (env["platform_fingerprint"]["gpu"] is None)
    if env["reproducibility"]["bitwise"]:
        assert env["platform_fingerprint"]["id"] in env["reproducibility"]["bitwise_with"]


def test_the_lock_pins_every_dependency_and_this_environment_was_installed_from_it():
    """`make venv` installs requirements/lock.txt, so the environment running the tests is the lock's, package for package."""
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    pins = lock_pins(lock)
    assert pins["torch"].startswith("2.13.0") and pins["mteb"] and pins["transformers"] and len(pins) > 80
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for extra in ("gguf", "dev", "ray") for d in project["optional-dependencies"][extra])]
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in wanted}
    assert names <= set(pins), sorted(names - set(pins))
    status = lock_status()
    assert status is not None and status["used"], status["mismatches"]


def test_lock_status_reports_what_differs(tmp_path):
    import numpy

    (tmp_path / "lock.txt").write_text(f"# a comment\nnumpy=={numpy.__version__}\n    # via layerbench\n")
    assert lock_status(tmp_path / "lock.txt")["used"] is True
    (tmp_path / "lock.txt").write_text("numpy==0.0.1\nnot-installed-anywhere==1.0\n")
    status = lock_status(tmp_path / "lock.txt")
    assert status["used"] is False and status["mismatches"] == {"numpy": ["0.0.1", numpy.__version__], "not-installed-anywhere": ["1.0", None]}
    assert lock_status(tmp_path / "missing.txt") is None


def test_compare_says_whether_the_platforms_match():
    from layerbench.results import Manifest

    one = Manifest(run_id="a", environment={"platform_fingerprint": platform_fingerprint()})
    other = Manifest(run_id="b", environment={"platform_fingerprint": {**platform_fingerprint(), "id": "0123456789ab", "cpu": {"model": "Intel(R) Xeon(R)"}}})
    assert describe_platforms([one], [one]).startswith("platform: both on") and "bit for bit" in describe_platforms([one], [one])
    line = describe_platforms([one], [other])
    assert line.startswith("platforms differ") and "0123456789ab" in line and "Intel(R) Xeon(R)" in line
    assert describe_platforms([Manifest(run_id="c")], [one]).startswith("platforms differ")  # an old manifest: unknown, never "the same"
    assert describe_platforms([], [one]).startswith("platform: not recorded")


@pytest.mark.parametrize("target", ["venv", "lock"])
def test_make_installs_from_the_lock_and_can_recompile_it(target):
    """`make -n` shows what each target would do: venv installs the lock, then layerbench without dependencies; lock compiles with uv."""
    import subprocess

    dry = subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent-venv"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if target == "venv":
        assert "-r requirements/lock.txt" in dry and "--no-deps -e ." in dry
    else:
        assert "uv pip compile pyproject.toml --extra all" in dry and "requirements/lock.txt" in dry
