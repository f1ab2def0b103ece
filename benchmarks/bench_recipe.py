"""The recipe benchmark: mvcstore beside torch.save, safetensors and its peers.

Runs the workload of ``recipe.md`` (``recipe_model.py`` makes the states): for
each scenario, the 10 epoch states are made once, untimed; then each tool, in
the same run and each from an empty folder on the same disk, stores the 10
epochs durably and brings back epochs 4 and 9, checked bit for bit. The
machine's raw limits (write + fsync, memory copy, BLAKE3, zstd) are measured in
the same run, so that figures can be read as ratios on a shared, noisy machine.

Usage::

    .venv/bin/python benchmarks/bench_recipe.py [--scenarios full,head,prune]
        [--tools torch.save,safetensors,mvcstore,DVC,git-lfs,MLflow]
        [--runs N] [--out benchmarks/results] [--work-dir DIR] [--profile]

It prints a Markdown table and writes it to ``<out>/recipe-<date>-<HHMM>.md``
(UTC), with every sample in ``<out>/latest.json`` (the latest run's).
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import ctypes.util
import datetime
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.utils.prune
import zstandard

import mvcstore
from mvcstore.arrays import adapter_for
from mvcstore.encodings import compiled_kernels
from mvcstore.stores.blobs import StorageOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe_model  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1 << 20
GiB = 1 << 30
CHECKOUT_EPOCHS = (4, 9)
BASELINE = "torch.save"
SECOND_BASELINE = "DVC"
MASK_AMOUNT = 0.3
MASK_EPOCHS = 3
SESSION = "bench"

State = dict[str, torch.Tensor]


# -- machine ---------------------------------------------------------------


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mount_of(path: Path) -> str:
    # the longest mount point above the path names the file system written to
    best, found = "", "unknown"
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                source, point, fstype, *_ = line.split()
                if str(path).startswith(point) and len(point) > len(best):
                    best, found = point, f"{fstype} on {source} (mounted at {point})"
    except OSError:
        pass
    return found


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def machine_info(work_dir: Path) -> dict[str, Any]:
    """Describe the machine, the versions and the file system written to."""
    changed = _git("status", "--porcelain", "--", "mvcstore")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host_cpus": os.cpu_count(),
        "nproc": cores,
        "cpu": _cpu_model(),
        "ram_bytes": _meminfo("MemTotal"),
        "kernel": platform.release(),
        "load_average": os.getloadavg(),
        "filesystem": _mount_of(work_dir.resolve()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "blake3": getattr(blake3, "__version__", "?"),
        "zstandard": zstandard.__version__,
        "mvcstore": mvcstore.__version__,
        "mvcstore_commit": _git("rev-parse", "--short", "HEAD"),
        "mvcstore_modified": bool(changed),
    }


# -- memory ----------------------------------------------------------------


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _load_libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


class PeakRss:
    """Peak resident memory above the level at entry, from /proc (Linux only).

    Writing 5 to ``/proc/self/clear_refs`` resets the high-water mark
    ``VmHWM`` to the current resident size, so the peak of one step can be
    read without a sampling thread. Freed heap memory is first handed back to
    the system (glibc ``malloc_trim``): otherwise a step reusing it would not
    raise the mark. Where any of this is refused, ``extra`` is None.
    """

    def __init__(self) -> None:
        self.extra: int | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakRss:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            return self
        self._start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        peak = _status_bytes("VmHWM")
        if self._start is not None and peak is not None:
            self.extra = max(0, peak - self._start)


# -- files -----------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Fsync a file or folder by name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_files(folder: Path) -> Iterable[Path]:
    """Yield every regular file under ``folder``."""
    for base, _, names in os.walk(folder):
        for name in names:
            path = Path(base) / name
            if path.is_file() and not path.is_symlink():
                yield path


def folder_usage(folder: Path) -> dict[str, int]:
    """Return the apparent bytes, allocated bytes and file count under a folder."""
    apparent = allocated = files = 0
    for path in iter_files(folder):
        stat = path.stat()
        apparent += stat.st_size
        allocated += stat.st_blocks * 512
        files += 1
    return {"bytes": apparent, "allocated": allocated, "files": files}


def evict(folder: Path) -> None:
    """Drop a folder's (already written back) pages from the page cache.

    Needs no privileges: ``POSIX_FADV_DONTNEED`` on clean pages of a file we
    own. A virtual disk's host may still cache them.
    """
    os.sync()
    for path in iter_files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


WARM_BYTES = 3 << 30
"""Memory touched and freed before each measurement (see ``warm_memory``)."""
WARM = {"on": True}
"""Whether ``warm_memory`` runs (``--no-warm`` turns it off)."""


def warm_memory() -> None:
    """Touch and free ``WARM_BYTES``, so every tool starts from the same memory.

    On a virtual machine whose host takes back the guest's free pages (free
    page reporting), the first touch of a page the host took back costs far
    more than a memory copy: ``torch.save`` of one epoch took 90 ms with
    recently used memory and 300 ms without, on tmpfs as on disk. Which of
    the two a tool got depended on what ran before it (a deleted folder gives
    its page-cache pages back to the free lists, warm for a few seconds). So
    each measurement starts right after this: every tool gets recently used
    pages, as it would on a machine of its own.
    """
    if not WARM["on"]:
        return
    ballast = np.ones(WARM_BYTES, dtype=np.uint8)
    del ballast


# -- the tools -------------------------------------------------------------


class Tool:
    """One way to store and bring back the epochs of a scenario."""

    name = ""

    def open(self, folder: Path, states: list[State]) -> None:
        """Prepare an empty folder (untimed)."""
        self.folder = folder

    def save(self, epoch: int, state: State) -> None:
        """Store one epoch durably (timed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``open`` took (untimed)."""

    def load(self, epoch: int) -> Mapping[str, object]:
        """Bring back one epoch, from the folder alone (timed)."""
        raise NotImplementedError

    def store_dir(self) -> Path:
        """The folder whose files count as stored (the whole folder by default)."""
        return self.folder


class TorchSaveTool(Tool):
    """``torch.save`` of the state dict to one file per epoch, then fsync."""

    name = "torch.save"

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:02d}.pt"

    def save(self, epoch: int, state: State) -> None:
        path = self.path(epoch)
        with open(path, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # a file is kept only once its folder entry is on disk too
        fsync_path(self.folder)

    def load(self, epoch: int) -> Mapping[str, object]:
        return load_pt(self.path(epoch))


class SafetensorsTool(Tool):
    """``safetensors.torch.save_file`` to one file per epoch, then fsync."""

    name = "safetensors"

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch:02d}.safetensors"

    def save(self, epoch: int, state: State) -> None:
        path = self.path(epoch)
        safetensors.torch.save_file(state, path)
        fsync_path(path)
        fsync_path(self.folder)

    def load(self, epoch: int) -> Mapping[str, object]:
        return safetensors.torch.load_file(self.path(epoch))


def mvcstore_array_type() -> tuple[str, str]:
    """Return ``torch`` when mvcstore's torch adapter round-trips, else ``numpy``.

    The adapter may be missing or half-written in a working tree; the
    benchmark then commits NumPy views and says so, with the reason.
    """
    probe = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    try:
        adapter = adapter_for("torch")
        back = adapter.from_raw(adapter.to_raw(probe))
        if isinstance(back, torch.Tensor) and torch.equal(back, probe):
            return "torch", "torch adapter present"
        reason = "torch adapter does not round-trip"
    except Exception as exc:  # any failure of a tree being edited means: not ready
        reason = f"torch adapter unusable ({type(exc).__name__}: {exc})"
    return "numpy", reason


class MvcstoreTool(Tool):
    """A durable mvcstore repository; one commit per epoch of the live state.

    Torch tensors go in and come back as they are when the torch adapter is
    present; otherwise they go in as zero-copy NumPy views, made before timing.
    """

    name = "mvcstore"

    def __init__(self, array_type: str, delta_depth: int | None = None) -> None:
        self.array_type = array_type
        self.delta_depth = delta_depth
        self.inputs: list[Mapping[str, object]] = []
        self.stats: dict[str, Any] | None = None

    def open(self, folder: Path, states: list[State]) -> None:
        super().open(folder, states)
        if self.array_type == "torch":
            self.inputs = list(states)
        else:
            self.inputs = [{k: t.numpy() for k, t in s.items()} for s in states]
        self.repo = mvcstore.Repo.init(folder, durable=True)
        if self.delta_depth is not None:
            self.repo.storage = StorageOptions(max_delta_depth=self.delta_depth)
        self.session = self.repo.session(SESSION)

    def save(self, epoch: int, state: State) -> None:
        self.session.commit(self.inputs[epoch])

    def close(self) -> None:
        # untimed: where the bytes went (dedup, deltas, compression)
        self.stats = self.repo.stats(all_refs=True).total.to_json()
        self.repo.close()
        self.inputs = []

    def load(self, epoch: int) -> Mapping[str, object]:
        # a fresh open, as a new process would do; epochs are numbered from 1
        repo = mvcstore.Repo.open(self.folder, durable=True)
        try:
            return repo.checkout(f"{SESSION}#{epoch + 1}", as_=self.array_type).state
        finally:
            repo.close()


# -- the peers (DVC, git-lfs, MLflow), driven as separate processes ----------

PEERS_VENV = HERE / ".venv-peers"
PEERS_HINT = "not installed: run benchmarks/setup_peers.sh"
PEER_NAMES = ("DVC", "git-lfs", "MLflow")

# no analytics, telemetry or update checks from any peer; a git identity
# for the throwaway repositories; nothing read from the user's git config
PEER_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ALLOW_FILE_STORE": "true",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def peer_env(folder: Path) -> dict[str, str]:
    """The environment a peer runs in: telemetry off, the peers' venv first."""
    env = dict(os.environ)
    env.update(PEER_ENV)
    env["HOME"] = str(folder.parent)  # no ~/.gitconfig or ~/.config/dvc of the user
    env["PATH"] = f"{PEERS_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    return env


def peer_missing(name: str) -> str | None:
    """Return why a peer cannot run here, or None when it can."""
    if name == "DVC" and not (PEERS_VENV / "bin" / "dvc").is_file():
        return PEERS_HINT
    if name == "MLflow" and not (PEERS_VENV / "bin" / "mlflow").is_file():
        return PEERS_HINT
    if name in ("DVC", "git-lfs") and shutil.which("git") is None:
        return "not installed: git is missing"
    if name == "git-lfs" and shutil.which("git-lfs") is None:
        return PEERS_HINT + " (git-lfs comes from Debian)"
    return None


def save_pt(state: State, path: Path) -> None:
    """``torch.save`` to ``path`` and fsync it, as the torch.save tool does."""
    with open(path, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def load_pt(path: Path) -> Mapping[str, object]:
    # the states are made on the CPU, so they load there as saved
    loaded: Mapping[str, object] = torch.load(path, weights_only=True)
    return loaded


def peer_versions() -> dict[str, str | None]:
    """The peers' versions (untimed, outside any measurement)."""

    def ask(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                argv,
                env=peer_env(HERE),
                capture_output=True,
                text=True,
                check=True,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None

    python = str(PEERS_VENV / "bin" / "python")
    return {
        "dvc": ask(str(PEERS_VENV / "bin" / "dvc"), "--version"),
        "mlflow": ask(python, "-c", "import mlflow; print(mlflow.__version__)"),
        "git": ask("git", "--version"),
        "git-lfs": ask("git", "lfs", "version"),
    }


class PeerTool(Tool):
    """A tool run as commands in a git work tree (DVC, git-lfs)."""

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            argv,
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"error: {self.name}: {' '.join(argv)} failed ({done.returncode}):"
                f" {done.stderr.strip()[-500:]}"
            )
        return done.stdout

    def open(self, folder: Path, states: list[State]) -> None:
        super().open(folder, states)
        self.env = peer_env(folder)
        self.model = folder / "model.pt"
        self.commits: list[str] = []
        self.run("git", "init", "-q")
        self.run("git", "config", "commit.gpgsign", "false")
        self.prepare()
        self.run("git", "commit", "-q", "--allow-empty", "-m", "init")

    def prepare(self) -> None:
        """Set the tool up in the new repository (untimed)."""

    def commit(self, epoch: int) -> None:
        self.run("git", "commit", "-q", "-m", f"epoch {epoch}")

    def close(self) -> None:
        # untimed: the commit of each epoch, oldest first, after "init"
        self.commits = self.run("git", "rev-list", "--reverse", "HEAD").split()[1:]


class DvcTool(PeerTool):
    """DVC: torch.save to model.pt, ``dvc add`` / ``dvc commit -f``, git commit."""

    name = "DVC"

    def prepare(self) -> None:
        self.run("dvc", "init", "-q")
        self.run("dvc", "config", "core.analytics", "false")
        self.run("dvc", "config", "core.check_update", "false")
        self.run("git", "add", "-A")

    def save(self, epoch: int, state: State) -> None:
        save_pt(state, self.model)
        if epoch == 0:
            self.run("dvc", "add", "-q", "model.pt")
        else:
            self.run("dvc", "commit", "-q", "-f", "model.pt.dvc")
        self.run("git", "add", "model.pt.dvc", ".gitignore")
        self.commit(epoch)

    def load(self, epoch: int) -> Mapping[str, object]:
        self.model.unlink(missing_ok=True)
        self.run("git", "checkout", "-q", self.commits[epoch], "--", "model.pt.dvc")
        self.run("dvc", "checkout", "-q", "model.pt.dvc")
        return load_pt(self.model)

    def store_dir(self) -> Path:
        return self.folder / ".dvc" / "cache"


class GitLfsTool(PeerTool):
    """git-lfs, local only: torch.save to model.pt, git add, git commit."""

    name = "git-lfs"

    def prepare(self) -> None:
        self.run("git", "lfs", "install", "--local")
        self.run("git", "lfs", "track", "*.pt")
        self.run("git", "add", ".gitattributes")

    def save(self, epoch: int, state: State) -> None:
        save_pt(state, self.model)
        self.run("git", "add", "model.pt")
        self.commit(epoch)

    def load(self, epoch: int) -> Mapping[str, object]:
        # a forced checkout of the epoch's commit: git-lfs smudges model.pt
        self.model.unlink(missing_ok=True)
        self.run("git", "checkout", "-q", "-f", self.commits[epoch])
        return load_pt(self.model)

    def store_dir(self) -> Path:
        return self.folder / ".git" / "lfs" / "objects"


class MlflowTool(Tool):
    """MLflow: one run; torch.save, then ``log_artifact`` under ``epoch_NN/``.

    MLflow runs in the peers' environment, in one process started untimed
    (``mlflow_driver.py``), as a training script would import it once; each
    save is the ``torch.save`` plus one ``log_artifact`` call over a pipe.
    """

    name = "MLflow"

    def open(self, folder: Path, states: list[State]) -> None:
        super().open(folder, states)
        env = peer_env(folder)
        env["MLFLOW_TRACKING_URI"] = (folder / "mlruns").as_uri()
        self.staging = folder / "staging"
        self.staging.mkdir()
        self.proc = subprocess.Popen(
            [str(PEERS_VENV / "bin" / "python"), str(HERE / "mlflow_driver.py")],
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready = self._reply()
        if not ready.startswith("ready "):
            raise SystemExit(f"error: MLflow driver did not start: {ready!r}")
        self.artifacts = Path(ready.split(" ", 1)[1])

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def _ask(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        if reply != "ok":
            raise SystemExit(f"error: MLflow driver: {line!r} -> {reply!r}")

    def save(self, epoch: int, state: State) -> None:
        path = self.staging / "model.pt"
        save_pt(state, path)
        self._ask(f"log {path} epoch_{epoch:02d}")

    def close(self) -> None:
        self._ask("end")
        self.proc.wait(timeout=60)
        shutil.rmtree(self.staging, ignore_errors=True)

    def load(self, epoch: int) -> Mapping[str, object]:
        return load_pt(self.artifacts / f"epoch_{epoch:02d}" / "model.pt")

    def store_dir(self) -> Path:
        return self.artifacts


def as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def touch(state: Mapping[str, object]) -> int:
    """Read one byte of every page of every tensor, so mapped data is read in.

    A tool may hand back tensors over a lazily read mapping (safetensors'
    default ``mmap`` backend); reading a byte per page makes every tool's
    figure include getting the bytes into memory. On arrays already in memory
    it costs about 25,000 reads.
    """
    total = 0
    for value in state.values():
        flat = as_numpy(value).reshape(-1).view(np.uint8)
        total += int(flat[::4096].sum())
    return total


def check_same(expected: State, got: Mapping[str, object], what: str) -> None:
    """Exit if ``got`` differs from ``expected`` in any name, dtype, shape or bit."""
    if set(got) != set(expected):
        differing = sorted(set(expected) ^ set(got))[:3]
        raise SystemExit(f"error: {what} has other tensor names ({differing} ...)")
    for name, tensor in expected.items():
        want = tensor.numpy()
        have = as_numpy(got[name])
        if (
            have.dtype != want.dtype
            or have.shape != want.shape
            or not np.array_equal(
                have.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8)
            )
        ):
            raise SystemExit(f"error: {what} differs from the state in {name!r}")


# -- one measurement -------------------------------------------------------


def measure_tool(tool: Tool, states: list[State], work_dir: Path) -> dict[str, Any]:
    """Store every epoch with ``tool`` in a new folder, then bring two back."""
    folder = Path(tempfile.mkdtemp(prefix=f"{tool.name}-", dir=work_dir))
    try:
        tool.open(folder, states)
        os.sync()
        warm_memory()
        epoch_s = []
        with PeakRss() as save_rss:
            for epoch, state in enumerate(states):
                start = time.perf_counter()
                tool.save(epoch, state)
                epoch_s.append(time.perf_counter() - start)
        tool.close()
        usage = folder_usage(tool.store_dir())
        stats = getattr(tool, "stats", None)

        # page cache as left by the writes, then with the tool's pages dropped
        checkout_s: dict[str, float] = {}
        evicted_s: dict[str, float] = {}
        load_rss = PeakRss()
        for label, times in (("cached", checkout_s), ("evicted", evicted_s)):
            if label == "evicted":
                evict(folder)
            warm_memory()
            for epoch in CHECKOUT_EPOCHS:
                with PeakRss() as rss:
                    start = time.perf_counter()
                    got = tool.load(epoch)
                    touch(got)
                    times[str(epoch)] = time.perf_counter() - start
                if label == "cached" and epoch == CHECKOUT_EPOCHS[-1]:
                    load_rss = rss
                check_same(states[epoch], got, f"{tool.name} epoch {epoch}")
                del got
        return {
            "save_s": sum(epoch_s),
            "epoch_s": epoch_s,
            "stored_bytes": usage["bytes"],
            "allocated_bytes": usage["allocated"],
            "files": usage["files"],
            "checkout_s": checkout_s,
            "checkout_evicted_s": evicted_s,
            "save_rss_bytes": save_rss.extra,
            "checkout_rss_bytes": load_rss.extra,
            "store_stats": stats,
            "baseline_file_bytes": (
                (folder / "epoch_00.pt").stat().st_size
                if tool.name == BASELINE
                else None
            ),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- raw limits ------------------------------------------------------------


def weights_bytes(state: State) -> bytes:
    """Return the float32 tensors of a state, concatenated in state order."""
    return b"".join(
        t.numpy().tobytes() for t in state.values() if t.dtype == torch.float32
    )


def best_rate(nbytes: int, action: Callable[[], object], repeat: int = 3) -> float:
    """Return the best throughput in GB/s (10^9 bytes) of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e9


def write_fsync_rate(work_dir: Path, total: int = GiB, chunk: int = 64 * MiB) -> float:
    """Return GB/s for writing ``total`` random bytes to a new file plus fsync.

    The best of two: on a virtual machine the first write into memory the
    guest has not touched for a while can be several times slower.
    """
    return max(_write_fsync_once(work_dir, total, chunk) for _ in range(2))


def _write_fsync_once(work_dir: Path, total: int, chunk: int) -> float:
    block = np.random.default_rng(0).integers(0, 256, chunk, dtype=np.uint8).data
    path = work_dir / "write-test.bin"
    try:
        os.sync()
        start = time.perf_counter()
        with open(path, "wb") as handle:
            for _ in range(total // chunk):
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_path(work_dir)
        return total / (time.perf_counter() - start) / 1e9
    finally:
        path.unlink(missing_ok=True)


def raw_limits(work_dir: Path, weights: bytes) -> dict[str, float]:
    """Measure what the machine allows: disk, memory, hashing, compression."""
    size = len(weights)
    source = np.frombuffer(weights, dtype=np.uint8)
    target = np.empty_like(source)
    packed = zstandard.ZstdCompressor(level=1).compress(weights)
    decompressor = zstandard.ZstdDecompressor()
    warm_memory()
    return {
        "write_fsync_gbps": write_fsync_rate(work_dir),
        "memcpy_gbps": best_rate(size, lambda: np.copyto(target, source)),
        "blake3_1t_gbps": best_rate(
            size, lambda: blake3.blake3(weights, max_threads=1).digest()
        ),
        "blake3_all_gbps": best_rate(
            size, lambda: blake3.blake3(weights, max_threads=blake3.blake3.AUTO)
        ),
        "zstd1_compress_gbps": best_rate(
            size, lambda: zstandard.ZstdCompressor(level=1).compress(weights)
        ),
        "zstd1_decompress_gbps": best_rate(
            size, lambda: decompressor.decompress(packed)
        ),
    }


def byte_planes(data: bytes) -> bytes:
    """Return float32 bytes regrouped: every first byte, then every second..."""
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 4).T.copy().tobytes()


def compression_ratios(epoch0: State, epoch1: State) -> dict[str, float]:
    """Return zstd level-1 ratios on float32 weights, as is and transformed."""

    def ratio(data: bytes) -> float:
        return len(data) / len(zstandard.ZstdCompressor(level=1).compress(data))

    first, second = weights_bytes(epoch0), weights_bytes(epoch1)
    xor = np.bitwise_xor(
        np.frombuffer(first, dtype=np.uint8), np.frombuffer(second, dtype=np.uint8)
    ).tobytes()
    # the difference of the bit patterns as integers, zigzag-mapped (encoding 6)
    diff = np.frombuffer(second, dtype=np.int32) - np.frombuffer(first, dtype=np.int32)
    zigzag = ((diff << 1) ^ (diff >> 31)).astype(np.int32).tobytes()
    return {
        "zstd1_ratio": ratio(first),
        "zstd1_planes_ratio": ratio(byte_planes(first)),
        "zstd1_xor_planes_ratio": ratio(byte_planes(xor)),
        "zstd1_diff_planes_ratio": ratio(byte_planes(zigzag)),
    }


# -- profile ---------------------------------------------------------------


class _SerialPool:
    # cProfile sees only the calling thread: run the repository's work there
    def map(self, fn: Callable[..., object], *iterables: Iterable[object]) -> Any:
        return list(map(fn, *iterables))

    def shutdown(self, wait: bool = True) -> None:
        return None


def profile_mvcstore(states: list[State], array_type: str, work_dir: Path) -> str:
    """Profile one durable commit of a ``full`` epoch and one checkout.

    Two epochs are committed first, so the profiled commit is a steady one.
    The repository's thread pool is replaced by a serial one, so the profile
    shows where the work goes, not how long it takes with threads.
    """
    folder = Path(tempfile.mkdtemp(prefix="profile-", dir=work_dir))
    out = io.StringIO()
    last = len(states) - 1
    try:
        tool = MvcstoreTool(array_type)
        tool.open(folder, states)
        for epoch in range(last):
            tool.save(epoch, states[epoch])
        tool.repo._pool.shutdown()
        tool.repo._pool = _SerialPool()  # type: ignore[assignment]
        for label, action in (
            (
                f"commit of epoch {last} (full, durable)",
                lambda: tool.save(last, states[last]),
            ),
            (
                f"checkout of epoch {last} (page cache)",
                lambda: tool.repo.checkout(f"{SESSION}#{last + 1}", as_=array_type),
            ),
        ):
            profiler = cProfile.Profile()
            start = time.perf_counter()
            profiler.runcall(action)
            took = time.perf_counter() - start
            out.write(f"## {label}: {took:.3f} s serial, under cProfile\n\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(14)
            stats.sort_stats("cumulative").print_stats("mvcstore", 14)
        tool.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out.getvalue()


# -- pruning masks ---------------------------------------------------------


def masked_states(states: list[State]) -> list[State]:
    """Return the states with pruning masks on every convolution.

    The masks come from ``torch.nn.utils.prune.l1_unstructured`` on the
    model loaded with the first state; each state is then the model's state
    dict (``weight_orig`` and ``weight_mask`` in place of ``weight``) with
    the epoch's weights under ``weight_orig``.
    """
    model = recipe_model.build_model()
    model.load_state_dict(states[0])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        torch.nn.utils.prune.l1_unstructured(conv, "weight", amount=MASK_AMOUNT)
    out = []
    for state in states:
        masked = {
            name: tensor.detach().clone() for name, tensor in model.state_dict().items()
        }
        for name, tensor in state.items():
            target = name[: -len(".weight")] + ".weight_orig"
            if target in masked:
                masked[target] = tensor
            else:
                masked[name] = tensor
        out.append(masked)
    return out


def mask_overhead(states: list[State], work_dir: Path) -> dict[str, Any]:
    """Commit the states as they are and with masks; compare stored bytes."""
    sizes: dict[str, list[int]] = {}
    for label, series in (("plain", states), ("masked", masked_states(states))):
        folder = Path(tempfile.mkdtemp(prefix=f"masks-{label}-", dir=work_dir))
        try:
            repo = mvcstore.Repo.init(folder)
            session = repo.session(SESSION)
            before = folder_usage(folder / ".mvc" / "objects")["bytes"]
            sizes[label] = []
            for state in series:
                session.commit(dict(state))
                after = folder_usage(folder / ".mvc" / "objects")["bytes"]
                sizes[label].append(after - before)
                before = after
            repo.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "amount": MASK_AMOUNT,
        "epochs": [
            {"epoch": epoch, "plain": plain, "masked": masked}
            for epoch, (plain, masked) in enumerate(
                zip(sizes["plain"], sizes["masked"], strict=True)
            )
        ],
        "plain": sum(sizes["plain"]),
        "masked": sum(sizes["masked"]),
    }


# -- reporting -------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> Any:
    values = [r[key][sub] if sub else r[key] for r in runs]
    if any(v is None for v in values):
        return None
    return statistics.median(values)


FIGURES = (
    ("save_s", None),
    ("stored_bytes", None),
    ("checkout_s", "4"),
    ("checkout_s", "9"),
    ("checkout_evicted_s", "4"),
    ("checkout_evicted_s", "9"),
    ("save_rss_bytes", None),
    ("checkout_rss_bytes", None),
)


def _ratio(
    runs: list[dict[str, Any]], base: list[dict[str, Any]], key: str, sub: str | None
) -> float:
    # the median of the per-run ratios: run i of a tool against run i of the base
    pairs = [
        (r[key][sub] if sub else r[key], b[key][sub] if sub else b[key])
        for r, b in zip(runs, base, strict=True)
    ]
    return statistics.median(v / w for v, w in pairs)


def summarise(tool_runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median of each figure over runs, and the median of per-run ratios.

    Ratios are to ``torch.save`` (``ratio``) and, when it ran, to DVC
    (``ratio_dvc``).
    """
    summary: dict[str, Any] = {}
    base = tool_runs[BASELINE]
    second = tool_runs.get(SECOND_BASELINE)
    for name, runs in tool_runs.items():
        median: dict[str, Any] = {}
        ratio: dict[str, Any] = {}
        ratio_dvc: dict[str, Any] = {}
        for key, sub in FIGURES:
            label = f"{key}.{sub}" if sub else key
            median[label] = median_of(runs, key, sub)
            if key.endswith("rss_bytes"):
                continue
            ratio[label] = _ratio(runs, base, key, sub)
            if second is not None:
                ratio_dvc[label] = _ratio(runs, second, key, sub)
        median["epoch_s"] = median["save_s"] / len(runs[0]["epoch_s"])
        median["first_epoch_s"] = statistics.median(r["epoch_s"][0] for r in runs)
        median["later_epoch_s"] = statistics.median(
            statistics.median(r["epoch_s"][1:]) for r in runs
        )
        median["files"] = runs[0]["files"]
        summary[name] = {"median": median, "ratio": ratio, "ratio_dvc": ratio_dvc}
    return summary


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.0f} MB"


def render(result: dict[str, Any]) -> str:
    """Return the Markdown report of a result."""
    machine = result["machine"]
    lines = [
        f"# Recipe benchmark, {machine['date']}",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu']}),"
        f" {machine['ram_bytes'] / GiB:.0f} GiB RAM, {machine['filesystem']};"
        f" Python {machine['python']}, torch {machine['torch']},"
        f" safetensors {machine['safetensors']}, mvcstore {machine['mvcstore']}"
        f" at {machine['mvcstore_commit']}"
        + (" (modified)" if machine["mvcstore_modified"] else "")
        + f", tensors into mvcstore as {result['mvcstore_arrays']}"
        + (
            ", its C extension in use."
            if result.get("mvcstore_kernels", True)
            else ", without its C extension (NumPy only)."
        )
        + f" Load average (1 min) {machine['load_average'][0]:.1f} at the start,"
        f" {result['load_average_end'][0]:.1f} at the end."
        + (
            " Memory warmed (3 GiB touched and freed) before each measurement."
            if result.get("memory_warmed", True)
            else " Memory not warmed before the measurements (--no-warm)."
        ),
        f"Median of {result['runs']} run(s); in brackets, the median of the"
        f" per-run ratios to {BASELINE} and, after the semicolon, to"
        f" {SECOND_BASELINE} (when it ran). Raw = the 10 {BASELINE} files."
        " Per epoch: the mean, the first epoch, and the median of the 9 later"
        " ones. Back: open, read, and every page of every tensor in memory,"
        " from the page cache as the writes left it, then after dropping the"
        " tool's files from it. Peak RSS +: resident memory above the level at"
        " the start of saving (all epochs) and of bringing back epoch 9.",
    ]
    peers = result.get("peers") or {}
    if peers:
        lines += [
            "",
            "Peers (driven as separate processes; their stored bytes are"
            " `.dvc/cache`, `.git/lfs/objects` and the MLflow run's artifacts;"
            " peak RSS counts this process only): "
            + ", ".join(f"{k} {v}" for k, v in peers.items())
            + ". Each peer's save includes the `torch.save` + fsync of"
            " `model.pt` it needs.",
        ]
    for name, why in (result.get("missing_tools") or {}).items():
        lines += ["", f"- {name}: {why}"]
    for scenario, data in result["scenarios"].items():
        raw = data["raw_bytes"]
        lines += [
            "",
            f"## Scenario `{scenario}` (raw {raw / 1e6:,.0f} MB)",
            "",
            "| tool | save 10 epochs | per epoch: mean, first, later | stored / raw"
            " | files"
            " | epoch 4 back | epoch 9 back | epoch 4, evicted | epoch 9, evicted"
            " | peak RSS +, save / back |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, summary in data["summary"].items():
            med, rat = summary["median"], summary["ratio"]
            dvc = summary.get("ratio_dvc") or {}

            def cell(label: str, med: Any = med, rat: Any = rat, dvc: Any = dvc) -> str:
                second = f"; {dvc[label]:.2f}x" if label in dvc else ""
                return f"{med[label]:.2f} s ({rat[label]:.2f}x{second})"

            stored_dvc = (
                f"; {dvc['stored_bytes']:.2f}x" if "stored_bytes" in dvc else ""
            )
            lines.append(
                f"| {name} | {cell('save_s')} | {med['epoch_s']:.3f} s,"
                f" {med['first_epoch_s']:.3f} s, {med['later_epoch_s']:.3f} s"
                f" | {med['stored_bytes'] / raw:.2f}x"
                f" ({_mb(med['stored_bytes'])}{stored_dvc}) | {med['files']}"
                f" | {cell('checkout_s.4')} | {cell('checkout_s.9')}"
                f" | {cell('checkout_evicted_s.4')} | {cell('checkout_evicted_s.9')}"
                f" | {_mb(med['save_rss_bytes'])} / {_mb(med['checkout_rss_bytes'])} |"
            )
        state_bytes = data.get("state_bytes")
        mvc = data["summary"].get("mvcstore")
        if mvc and state_bytes and mvc["median"]["save_rss_bytes"] is not None:
            peak = mvc["median"]["save_rss_bytes"]
            lines += [
                "",
                f"mvcstore's peak memory while committing, above the level before:"
                f" {_mb(peak)}, {peak / state_bytes:.2f}x the state of epoch 0"
                f" ({_mb(state_bytes)}); most of it is the session's copy of the"
                " delta bases (`StorageOptions.delta_cache_bytes`).",
            ]
        stats = data["runs"].get("mvcstore", [{}])[0].get("store_stats")
        if stats:
            ratio = stats["ratios"]
            lines += [
                "",
                f"mvcstore's store (`Repo.stats`, first run; longest delta chain"
                f" {result.get('mvcstore_delta_depth')}): dedup"
                f" {ratio['dedup']:.2f}x, deltas {ratio['delta']:.2f}x on"
                f" {_mb(stats['delta_bytes'])}, whole frames"
                f" {ratio['compression']:.2f}x on {_mb(stats['whole_bytes'])},"
                f" frames by encoding {stats['encodings']}.",
            ]
    masks = result.get("masks")
    if masks:
        lines += [
            "",
            "## Pruning masks",
            "",
            f"Epochs 0 to {MASK_EPOCHS - 1} of `full` into mvcstore, as they"
            f" are and with `torch.nn.utils.prune.l1_unstructured` (amount"
            f" {MASK_AMOUNT}) on every convolution: the state then holds"
            " `weight_orig` and a 0/1 `weight_mask` for each (masks made at"
            " epoch 0 and kept).",
            "",
            "| epoch | stored, unpruned | stored, with masks | added |",
            "|---|---|---|---|",
        ]
        for row in masks["epochs"]:
            lines.append(
                f"| {row['epoch']} | {row['plain']:,} B | {row['masked']:,} B"
                f" | {row['masked'] / row['plain'] - 1:+.1%} |"
            )
        lines.append(
            f"| all | {masks['plain']:,} B | {masks['masked']:,} B"
            f" | {masks['masked'] / masks['plain'] - 1:+.1%} |"
        )
    limits = result["raw_limits"]["median"]
    ratios = result["raw_limits"]["compression"]
    lines += [
        "",
        "## Raw limits (same run)",
        "",
        "| 1 GiB write + fsync | memory copy | BLAKE3, 1 thread | BLAKE3, all"
        " | zstd-1 compress | zstd-1 decompress |",
        "|---|---|---|---|---|---|",
        f"| {limits['write_fsync_gbps']:.2f} GB/s | {limits['memcpy_gbps']:.1f} GB/s"
        f" | {limits['blake3_1t_gbps']:.2f} GB/s | {limits['blake3_all_gbps']:.2f} GB/s"
        f" | {limits['zstd1_compress_gbps']:.2f} GB/s"
        f" | {limits['zstd1_decompress_gbps']:.2f} GB/s |",
        "",
        f"zstd level 1 on the float32 weights of epoch 0: {ratios['zstd1_ratio']:.3f}x"
        f" as is, {ratios['zstd1_planes_ratio']:.3f}x in byte planes; epochs 0"
        f" and 1 of `full` in byte planes, as their XOR:"
        f" {ratios['zstd1_xor_planes_ratio']:.3f}x, as the zigzag of their"
        f" difference: {ratios.get('zstd1_diff_planes_ratio', float('nan')):.3f}x.",
        "",
    ]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- main ------------------------------------------------------------------


ALL_TOOLS = ("torch.save", "safetensors", "mvcstore", *PEER_NAMES)


def make_tools(
    names: list[str], array_type: str, delta_depth: int | None
) -> tuple[list[Tool], dict[str, str]]:
    """Return the tools to run, and why each missing peer is left out."""
    makers: dict[str, Callable[[], Tool]] = {
        "torch.save": TorchSaveTool,
        "safetensors": SafetensorsTool,
        "mvcstore": lambda: MvcstoreTool(array_type, delta_depth),
        "DVC": DvcTool,
        "git-lfs": GitLfsTool,
        "MLflow": MlflowTool,
    }
    tools: list[Tool] = []
    missing: dict[str, str] = {}
    for name in names:
        why = peer_missing(name) if name in PEER_NAMES else None
        if why:
            missing[name] = why
        else:
            tools.append(makers[name]())
    return tools, missing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(recipe_model.SCENARIOS))
    parser.add_argument(
        "--tools",
        default=None,
        help="comma-separated, from: " + ", ".join(ALL_TOOLS) + f"; {BASELINE} is"
        " always run (every ratio is to it); default: all, a peer that is not"
        " installed is listed as such",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=HERE / ".work",
        help="where the tools write; the same disk as the repository by default",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one mvcstore commit and checkout with cProfile",
    )
    parser.add_argument(
        "--no-warm",
        action="store_true",
        help="do not touch and free 3 GiB of memory before each measurement",
    )
    parser.add_argument(
        "--delta-depth",
        type=int,
        default=None,
        help="mvcstore's longest delta chain (StorageOptions.max_delta_depth);"
        " the library default when not given",
    )
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for scenario in args.scenarios:
        if scenario not in recipe_model.SCENARIOS:
            parser.error(
                f"scenario {scenario!r} is not one of"
                f" {', '.join(recipe_model.SCENARIOS)}"
            )
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.tools is None:
        args.tools = list(ALL_TOOLS)
    else:
        wanted = [t for t in args.tools.split(",") if t]
        known = {t.lower(): t for t in ALL_TOOLS}
        for name in wanted:
            if name.lower() not in known:
                parser.error(f"tool {name!r} is not one of {', '.join(ALL_TOOLS)}")
        chosen = {known[t.lower()] for t in wanted} | {BASELINE}
        args.tools = [t for t in ALL_TOOLS if t in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    WARM["on"] = not args.no_warm
    work_root = args.work_dir
    work_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=work_root))
    array_type, why = mvcstore_array_type()
    tools, missing = make_tools(args.tools, array_type, args.delta_depth)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    for name, why in missing.items():
        log(f"{name}: {why}")

    result: dict[str, Any] = {
        "recipe": "shared/benchmarks/recipe.md",
        "machine": machine_info(work_dir),
        "runs": args.runs,
        "memory_warmed": WARM["on"],
        "mvcstore_kernels": compiled_kernels(),
        "mvcstore_arrays": array_type,
        "mvcstore_delta_depth": (
            args.delta_depth
            if args.delta_depth is not None
            else StorageOptions().max_delta_depth
        ),
        "mvcstore_arrays_reason": why,
        "tools": [t.name for t in tools],
        "missing_tools": missing,
        "peers": peer_versions() if any(t.name in PEER_NAMES for t in tools) else {},
        "scenarios": {},
    }
    limit_runs: list[dict[str, float]] = []
    try:
        # the raw limits, and the compression figures of the recipe
        log("making epochs 0 and 1 of full for the raw limits")
        epoch0 = recipe_model.initial_state()
        epoch1 = recipe_model.next_epoch(epoch0, 0, "full")
        weights = weights_bytes(epoch0)
        compression = compression_ratios(epoch0, epoch1)
        del epoch1

        for scenario in args.scenarios:
            log(f"making the {recipe_model.EPOCHS} states of {scenario}")
            states = recipe_model.epoch_states(scenario)
            tool_runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tools}
            for run in range(args.runs):
                limit_runs.append(raw_limits(work_dir, weights))
                # rotate the order, so no tool always runs first
                order = tools[run % len(tools) :] + tools[: run % len(tools)]
                for tool in order:
                    log(f"{scenario} run {run + 1}/{args.runs}: {tool.name}")
                    tool_runs[tool.name].append(measure_tool(tool, states, work_dir))
            # the 10 torch.save files (in prune, later epochs are smaller)
            raw = tool_runs[BASELINE][0]["stored_bytes"]
            result["scenarios"][scenario] = {
                "raw_bytes": raw,
                "state_bytes": sum(
                    t.numel() * t.element_size() for t in states[0].values()
                ),
                "runs": tool_runs,
                "summary": summarise(tool_runs),
            }
            del states

        if "mvcstore" in [t.name for t in tools]:
            log("measuring what pruning masks add to mvcstore's store")
            states = [epoch0]
            for epoch in range(MASK_EPOCHS - 1):
                states.append(recipe_model.next_epoch(states[-1], epoch, "full"))
            result["masks"] = mask_overhead(states, work_dir)
            del states

        result["raw_limits"] = {
            "runs": limit_runs,
            "median": {
                key: statistics.median(r[key] for r in limit_runs)
                for key in limit_runs[0]
            },
            "compression": compression,
        }
        if args.profile:
            log("profiling one mvcstore commit and checkout")
            states = [epoch0]
            for epoch in range(2):
                states.append(recipe_model.next_epoch(states[-1], epoch, "full"))
            result["profile"] = profile_mvcstore(states, array_type, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        if work_root.is_dir() and not any(work_root.iterdir()):
            work_root.rmdir()

    result["load_average_end"] = os.getloadavg()
    report = render(result)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    # the time too: a second run on one day keeps the first one's table
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M")
    write_atomic(args.out / f"recipe-{day}.md", report)
    write_atomic(args.out / "latest.json", json.dumps(result, indent=1) + "\n")
    if args.profile:
        write_atomic(args.out / f"profile-{day}.txt", result["profile"])
        print(result["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
