"""What a run manifest records about the software and machine, besides the config.

Two runs give the same bits only on the same platform: float32 kernels (torch's
vectorized CPU code, MKL and oneDNN inside torch, OpenBLAS inside numpy and
scikit-learn) pick their code path from the CPU they run on and split work by
the thread count, so another CPU model moves the last bits of a state, and a
threshold score (an accuracy, an AUROC) can move by an item. The
:func:`platform_fingerprint` names what decides those bits; a manifest claims
``bitwise`` reproduction only for reruns with the same fingerprint.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from layerbench.config import shipped_folder
from layerbench.fingerprint import file_sha256, hash_value

_PACKAGES = ("layerbench", "torch", "transformers", "tokenizers", "sentence-transformers", "numpy", "pandas", "pyarrow", "scikit-learn", "mteb", "gguf", "accelerate")
# Environment variables that choose a kernel's code path or its threads, and so the last bits of a result.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
LOCK_FILE = "lock.txt"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape the numbers (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """Commit of the layerbench checkout (with ``-dirty`` for uncommitted changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_identity(cpuinfo: str | None = None) -> dict[str, str | None]:
    """The CPU: ``vendor`` (``GenuineIntel``, ``AuthenticAMD``), ``model`` (its name), and ``family``/``model_id``/``stepping`` (which tell
    generations apart when a hypervisor shows a bare name such as "AMD EPYC"). Read from ``/proc/cpuinfo`` on Linux (or ``cpuinfo``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return {
        "vendor": fields.get("vendor_id") or None,
        "model": fields.get("model name") or platform.processor() or platform.machine() or None,
        "family": fields.get("cpu family") or None,
        "model_id": fields.get("model") or None,
        "stepping": fields.get("stepping") or None,
    }


def _torch_kernels() -> dict[str, Any]:
    """torch's CPU code path (its capability: AVX2, AVX512...), its BLAS and oneDNN builds, and its threads."""
    import torch

    shown = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", shown)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", shown)
    onednn = re.search(r"MKL-DNN (v[\d.]+)", shown)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.group(1) if blas else None,
        "mkl": mkl.group(1) if mkl else None,
        "onednn": onednn.group(1) if onednn else None,
        "threads": torch.get_num_threads(),
    }


def _numpy_blas() -> tuple[list[dict[str, Any]], int | None]:
    """The BLAS libraries numpy, scipy and scikit-learn call (threadpoolctl): each distinct (library, version, kernel it chose
    for this CPU), whichever of them are loaded yet (numpy's and scipy's OpenBLAS are two copies of one), and their threads."""
    import scipy.linalg  # noqa: F401  (scipy carries its own OpenBLAS: loaded now, so that the list does not depend on what ran before)
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    distinct = {(lib.get("internal_api"), lib.get("version"), lib.get("architecture")) for lib in blas}
    libraries = [{"internal_api": api, "version": version, "architecture": architecture} for api, version, architecture in sorted(distinct, key=str)]
    return libraries, max((int(lib.get("num_threads") or 0) for lib in blas), default=None)


def platform_fingerprint() -> dict[str, Any]:
    """What decides the last bits of a result on this machine, and ``id``: a short hash of all of it.

    Returns:
        ``cpu`` (:func:`cpu_identity`), ``torch`` (CPU capability, BLAS, MKL and
        oneDNN builds, threads), ``numpy_blas`` (OpenBLAS's version and chosen kernel),
        ``blas_threads``, ``kernel_variables`` (those of :data:`KERNEL_VARIABLES` that
        are set), ``gpu`` (name, CUDA and cuDNN versions; None on a CPU), and
        ``id``, the first 12 hex digits of their sha256: runs with equal ids
        reproduce each other bit for bit on a CPU.
    """
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    libraries, blas_threads = _numpy_blas()
    fingerprint: dict[str, Any] = {
        "cpu": cpu_identity(),
        "torch": _torch_kernels(),
        "numpy_blas": libraries,
        "blas_threads": blas_threads,
        "kernel_variables": {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ},
        "gpu": gpu,
    }
    fingerprint["id"] = hash_value(fingerprint)[:12]
    return fingerprint


def describe_platform(fingerprint: dict[str, Any] | None) -> str:
    """One line for a fingerprint: ``AMD EPYC (AuthenticAMD 26/2), torch AVX512, OpenBLAS Haswell, 2 threads [id]``; ``unknown platform`` for None."""
    if not fingerprint:
        return "unknown platform (a run before fingerprints were recorded)"
    cpu, kernels = fingerprint.get("cpu") or {}, fingerprint.get("torch") or {}
    blas = ", ".join(f"{lib.get('internal_api')} {lib.get('architecture')}" for lib in fingerprint.get("numpy_blas") or [])
    gpu = fingerprint.get("gpu")
    return (f"{cpu.get('model')} ({cpu.get('vendor')} {cpu.get('family')}/{cpu.get('model_id')}), torch {kernels.get('cpu_capability')}, "
            f"{blas or 'no BLAS seen'}, {kernels.get('threads')} threads" + (f", GPU {gpu.get('name')}" if gpu else "") + f" [{fingerprint.get('id')}]")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, str]:
    """``name==version`` lines of a lock file (``uv pip compile`` output) as normalized name -> version; comments and options skipped."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            pins[_normalized(match.group(1))] = match.group(2)
    return pins


def lock_status(lock: Path | None = None) -> dict[str, Any] | None:
    """Whether the installed packages are the lock's: ``file``, ``sha256`` (first 12 digits), ``used`` (every pinned package
    installed at its pinned version) and ``mismatches`` (name -> [locked, installed or None], the first 20). None when no lock file is found.

    ``lock`` defaults to the checkout's ``requirements/lock.txt`` (or the wheel's copy).
    """
    lock = lock or shipped_folder("requirements") / LOCK_FILE
    try:
        text = lock.read_text()
    except OSError:
        return None
    installed = {_normalized(dist.metadata["Name"] or ""): dist.version for dist in importlib.metadata.distributions()}
    mismatches = {name: [version, installed.get(name)] for name, version in lock_pins(text).items() if installed.get(name) != version}
    return {"file": str(lock), "sha256": file_sha256(lock)[:12], "used": not mismatches, "mismatches": dict(list(mismatches.items())[:20]),
            "mismatched": len(mismatches)}


def reproducibility(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a rerun gives the same bits, and whether it can.

    On a CPU a rerun with the same code, data, seed and ``--batch-size`` on a
    machine with the same platform fingerprint (CPU model, kernels, BLAS,
    threads) gives the same rows bit for bit (batches are a function of the
    text list, and the activation cache is keyed by batch). Another CPU or
    thread count moves a state's last float32 bits (about 1e-6 of its scale),
    and a threshold score by up to a few items. CUDA kernels (atomics in
    reductions, autotuned matmuls) are not bit-reproducible run to run.
    """
    gpu = fingerprint.get("gpu") is not None
    return {
        "threads": fingerprint["torch"]["threads"],
        "platform": fingerprint["id"],
        "bitwise": not gpu,
        "bitwise_with": None if gpu else f"reruns on platform {fingerprint['id']} (the same CPU model, kernels, BLAS and threads)",
        "why_not": "CUDA kernels are not bit-reproducible run to run; compare within noise" if gpu else None,
    }


def environment() -> dict[str, Any]:
    import torch

    fingerprint = platform_fingerprint()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform_fingerprint": fingerprint,
        "lock": lock_status(),
        "reproducibility": reproducibility(fingerprint),
    }
