"""Views at scale: one lineage of 100,000 epochs holding 10,000,000 metric documents.

Builds a repository straight through the index APIs, in bulk: epoch records in
the object store and the epoch index, documents in the metrics index. Session
``main`` has ``--epochs`` epochs; session ``side`` forks at the middle of
``main`` with one epoch per hundred. The documents (``--docs`` in all) are
spread evenly: each epoch logs ``loss``, ``grad_norm``, ``lr`` and
``throughput`` at each of its steps, and its summary ``acc`` and ``params`` at
its last step.

Then it times, on ``main``: resolving the view, counting its documents,
streaming one metric's full series, a window of 1,000 steps, the latest and
best values (``summarize``), ``mvc log -n 20`` and ``mvc best``; and the same
questions asked of a plain table filtered by session id, the way a platform
stores documents when a fork copies its parent's documents (the baseline).

    .venv/bin/python benchmarks/bench_scale.py                    # full size
    .venv/bin/python benchmarks/bench_scale.py --epochs 2000 --docs 50000
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mvcstore import Repo
from mvcstore.dashboard import open_view, select_best, series, summarize
from mvcstore.metrics.base import MetricDoc
from mvcstore.objects import Epoch, Graph
from mvcstore.stores.base import put_object

HERE = Path(__file__).resolve().parent
NAMES = ("loss", "grad_norm", "lr", "throughput")
BATCH = 50_000


@dataclass(frozen=True)
class Plan:
    """The shape of the repository to build."""

    epochs: int
    docs: int

    @property
    def side_epochs(self) -> int:
        return max(1, self.epochs // 100)

    @property
    def fork_at(self) -> int:
        return max(1, self.epochs // 2)

    @property
    def steps_per_epoch(self) -> int:
        per_epoch = self.docs // (self.epochs + self.side_epochs)
        return max(1, (per_epoch - 2) // len(NAMES))

    @property
    def docs_per_epoch(self) -> int:
        return self.steps_per_epoch * len(NAMES) + 2

    @property
    def best_number(self) -> int:
        """The epoch of ``main`` with the highest ``acc``."""
        return max(1, (self.epochs * 7) // 10)


def acc_of(plan: Plan, session: str, number: int) -> float:
    """A summary accuracy that peaks at ``plan.best_number`` on ``main``."""
    distance = abs(number - plan.best_number) / plan.epochs
    return round(0.9 - distance - (0.01 if session == "side" else 0.0), 9)


def uid_of(session: str, number: int) -> str:
    return f"{session[:1]}{number:031x}"


def _docs(plan: Plan, session: str, number: int) -> Iterator[MetricDoc]:
    spe = plan.steps_per_epoch
    first = (number - 1) * spe + 1
    uid = uid_of(session, number)
    for step in range(first, first + spe):
        yield MetricDoc(
            uid, step, "loss", 1.0 / step + (0.5 if session == "side" else 0)
        )
        yield MetricDoc(uid, step, "grad_norm", math.sin(step) + 2.0)
        yield MetricDoc(uid, step, "lr", 0.1 / (1 + number // 1000))
        yield MetricDoc(uid, step, "throughput", 1000.0 + step % 7)
    last = first + spe - 1
    yield MetricDoc(uid, last, "acc", acc_of(plan, session, number))
    yield MetricDoc(uid, last, "params", float(50_000 - number // 1000))


def _lines(plan: Plan) -> Iterator[tuple[str, int]]:
    for number in range(1, plan.epochs + 1):
        yield "main", number
    for number in range(plan.fork_at + 1, plan.fork_at + 1 + plan.side_epochs):
        yield "side", number


def build(plan: Plan, path: Path, *, say: Callable[[str], None] = print) -> Repo:
    """Build the repository at ``path`` (created) and return it open."""
    repo = Repo.init(path, durable=False)
    graphs = [
        put_object(repo.objects, Graph.from_value({"nodes": [{"id": f"g{i}"}]}))
        for i in range(1 + plan.epochs // 1000)
    ]
    heads: dict[str, object] = {}
    ids: dict[tuple[str, int], object] = {}
    started = time.perf_counter()
    batch: list[MetricDoc] = []
    for session, number in _lines(plan):
        if session == "main":
            parent = ids.get(("main", number - 1))
        else:
            parent = ids.get(("side", number - 1)) or ids[("main", plan.fork_at)]
        epoch = Epoch(
            parents=(parent,) if parent is not None else (),  # type: ignore[arg-type]
            graph=graphs[number // 1000],
            params={"lr": 0.1, "seed": 0},
            number=number,
            step=number * plan.steps_per_epoch,
            time_ns=1_700_000_000_000_000_000
            + number * 1_000_000_000
            + (1 if session == "side" else 0),
            summary={
                "acc": acc_of(plan, session, number),
                "params": float(50_000 - number // 1000),
            },
            uid=uid_of(session, number),
            session=session,
        )
        oid = put_object(repo.objects, epoch)
        repo.index.add(oid, epoch)
        ids[(session, number)] = oid
        heads[session] = oid
        batch.extend(_docs(plan, session, number))
        if len(batch) >= BATCH:
            repo.metrics_index.add(batch)
            batch = []
        if number % 10_000 == 0:
            say(f"  built {session}#{number} ({time.perf_counter() - started:.0f} s)")
    repo.metrics_index.add(batch)
    for session, oid in heads.items():
        repo.refs.compare_and_set(
            f"sessions/{session}",
            old=None,
            new=oid,
            message="bench",  # type: ignore[arg-type]
        )
    repo.set_head("main")
    return repo


def build_baseline(plan: Plan, path: Path) -> sqlite3.Connection:
    """The baseline: one table filtered by session id; a fork copies documents."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(
        """
        CREATE TABLE docs (session INTEGER, epoch INTEGER, name INTEGER,
                           step INTEGER, value REAL);
        CREATE INDEX docs_by_session ON docs (session, name, step);
        CREATE TABLE epochs (session INTEGER, number INTEGER, step INTEGER,
                             acc REAL, PRIMARY KEY (session, number));
        """
    )
    names = {name: i for i, name in enumerate([*NAMES, "acc", "params"])}
    sessions = {"main": 0, "side": 1}
    conn.execute("BEGIN")
    rows: list[tuple[int, int, int, int, float]] = []

    def flush() -> None:
        conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
        rows.clear()

    for session, number in _lines(plan):
        # a fork starts with a copy of its parent's documents and epochs
        copied = (
            [("main", n) for n in range(1, plan.fork_at + 1)]
            if session == "side" and number == plan.fork_at + 1
            else []
        )
        for source, source_number in [*copied, (session, number)]:
            for doc in _docs(plan, source, source_number):
                rows.append(
                    (
                        sessions[session],
                        source_number,
                        names[doc.name],
                        doc.step,
                        doc.value,
                    )
                )
            conn.execute(
                "INSERT INTO epochs VALUES (?, ?, ?, ?)",
                (
                    sessions[session],
                    source_number,
                    source_number * plan.steps_per_epoch,
                    acc_of(plan, source, source_number),
                ),
            )
            if len(rows) >= BATCH:
                flush()
    flush()
    conn.execute("COMMIT")
    return conn


def verify(repo: Repo, plan: Plan) -> None:
    """Check the views, the series and the best epoch; raise AssertionError."""
    main = open_view(repo, "main")
    side = open_view(repo, "side")
    assert len(main.epochs) == plan.epochs
    assert len(side.epochs) == plan.fork_at + plan.side_epochs
    assert repo.metrics_index.count(main.uids()) == plan.epochs * plan.docs_per_epoch
    assert (
        repo.metrics_index.count(side.uids()) == len(side.epochs) * plan.docs_per_epoch
    )

    steps = [doc.step for doc in series(repo, "side", names=["loss"])]
    assert steps == list(range(1, len(side.epochs) * plan.steps_per_epoch + 1))
    fork_step = plan.fork_at * plan.steps_per_epoch
    after = next(series(repo, "side", names=["loss"], steps=(fork_step + 1, None)))
    assert after.uid == uid_of("side", plan.fork_at + 1)

    loss = summarize(repo, "main", names=["loss"], view=main)["loss"]
    assert loss.latest.step == plan.epochs * plan.steps_per_epoch
    assert loss.latest.number == plan.epochs
    best = select_best(repo, ["main", "side"], metric="acc")
    assert best.winner is not None and best.winner.session == "main"
    assert best.winner.number == plan.best_number
    numbers = [epoch.number for epoch in repo.log("main", limit=20)]
    assert numbers == list(range(plan.epochs, max(0, plan.epochs - 20), -1))


def _timed(action: Callable[[], object], runs: int) -> tuple[float, object]:
    times: list[float] = []
    result: object = None
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2], result


def _peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _mvc(repo_root: Path, *args: str) -> str:
    mvc = Path(sys.executable).with_name("mvc")
    env = {k: v for k, v in os.environ.items() if k != "MVC_DIR"}
    return subprocess.run(
        [str(mvc), *args],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def measure(
    repo: Repo, root: Path, baseline: sqlite3.Connection, plan: Plan, runs: int
) -> list[tuple[str, float, float | None, str]]:
    """Return (question, mvcstore seconds, baseline seconds, note) rows."""
    rows: list[tuple[str, float, float | None, str]] = []
    window = (
        plan.epochs * plan.steps_per_epoch // 2,
        plan.epochs * plan.steps_per_epoch // 2 + 999,
    )

    view_s, view = _timed(lambda: open_view(repo, "main"), runs)
    uids = view.uids()  # type: ignore[attr-defined]
    count_s, count = _timed(lambda: repo.metrics_index.count(uids), runs)
    base_count_s, base_count = _timed(
        lambda: baseline.execute(
            "SELECT count(*) FROM docs WHERE session = 0"
        ).fetchone()[0],
        runs,
    )
    assert count == base_count, (count, base_count)
    rows.append(
        ("resolve the view (epochs reachable)", view_s, None, f"{len(uids):,} epochs")
    )
    rows.append(
        ("count the view's documents", count_s, base_count_s, f"{count:,} documents")
    )

    def stream() -> int:
        return sum(1 for _ in series(repo, "main", names=["loss"], view=view))  # type: ignore[arg-type]

    def base_stream() -> int:
        return sum(
            1
            for _ in baseline.execute(
                "SELECT step, value FROM docs WHERE session = 0 AND name = 0"
                " ORDER BY step"
            )
        )

    _peak_rss_reset()
    before = _peak_rss_mib()
    stream_s, streamed = _timed(stream, 1)
    peak = _peak_rss_mib() - before
    base_stream_s, base_streamed = _timed(base_stream, 1)
    assert streamed == base_streamed
    rows.append(
        (
            "stream one metric's full series (view resolved)",
            stream_s,
            base_stream_s,
            f"{streamed:,} documents; peak RSS +{peak:.0f} MiB",
        )
    )

    def win() -> int:
        return sum(
            1 for _ in series(repo, "main", names=["loss"], steps=window, view=view)
        )  # type: ignore[arg-type]

    def base_win() -> int:
        return sum(
            1
            for _ in baseline.execute(
                "SELECT step, value FROM docs WHERE session = 0 AND name = 0"
                " AND step BETWEEN ? AND ? ORDER BY step",
                window,
            )
        )

    win_s, got = _timed(win, runs)
    base_win_s, base_got = _timed(base_win, runs)
    assert got == base_got == 1000
    rows.append(
        ("1,000-step window of one metric (view resolved)", win_s, base_win_s, "")
    )

    def full_query() -> int:
        return sum(1 for _ in series(repo, "main", names=["loss"], steps=window))

    full_s, _ = _timed(full_query, runs)
    rows.append(("same window, resolving the view too", full_s, base_win_s, ""))

    summ_s, _ = _timed(lambda: summarize(repo, "main", names=["loss"], view=view), runs)  # type: ignore[arg-type]
    base_summ_s, _ = _timed(
        lambda: baseline.execute(
            "SELECT min(value), max(value), max(step) FROM docs WHERE session = 0"
            " AND name = 0"
        ).fetchone(),
        runs,
    )
    rows.append(
        ("latest, min and max of one metric (view resolved)", summ_s, base_summ_s, "")
    )

    log_lib_s, _ = _timed(lambda: list(repo.log("main", limit=20)), runs)
    log_cli_s, out = _timed(lambda: _mvc(root, "log", "main", "-n", "20"), runs)
    base_log_s, _ = _timed(
        lambda: baseline.execute(
            "SELECT * FROM epochs WHERE session = 0 ORDER BY number DESC LIMIT 20"
        ).fetchall(),
        runs,
    )
    assert len(str(out).splitlines()) == 20
    rows.append(("`mvc log -n 20` (library)", log_lib_s, base_log_s, ""))
    rows.append(("`mvc log -n 20` (command, with start-up)", log_cli_s, base_log_s, ""))

    best_lib_s, _ = _timed(lambda: select_best(repo, ["main"], metric="acc"), runs)
    best_cli_s, _ = _timed(lambda: _mvc(root, "best", "main", "--metric", "acc"), runs)
    base_best_s, _ = _timed(
        lambda: baseline.execute(
            "SELECT number FROM epochs WHERE session = 0 ORDER BY acc DESC, number"
            " LIMIT 1"
        ).fetchone(),
        runs,
    )
    rows.append(("`mvc best --metric acc` (library)", best_lib_s, base_best_s, ""))
    rows.append(
        (
            "`mvc best --metric acc` (command, with start-up)",
            best_cli_s,
            base_best_s,
            "",
        )
    )
    return rows


def _size_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--docs", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3, help="median of N timings")
    parser.add_argument("--work-dir", type=Path, default=HERE / ".work" / "scale")
    parser.add_argument("--keep", action="store_true", help="keep the built files")
    args = parser.parse_args(argv)
    plan = Plan(epochs=args.epochs, docs=args.docs)

    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    print(
        f"building {plan.epochs:,} + {plan.side_epochs:,} epochs,"
        f" {plan.docs_per_epoch} documents each, in {args.work_dir}"
    )
    started = time.perf_counter()
    repo = build(plan, args.work_dir / "repo")
    built_s = time.perf_counter() - started
    started = time.perf_counter()
    baseline = build_baseline(plan, args.work_dir / "baseline.sqlite")
    base_built_s = time.perf_counter() - started
    try:
        verify(repo, plan)
        rows = measure(repo, args.work_dir / "repo", baseline, plan, args.runs)
    finally:
        repo.close()
        baseline.close()

    total = (plan.epochs + plan.side_epochs) * plan.docs_per_epoch
    print()
    print(
        f"{plan.epochs:,} epochs on main, {plan.side_epochs:,} on side;"
        f" {total:,} documents stored (baseline: fork copies, "
        f"{total + plan.fork_at * plan.docs_per_epoch:,} rows)"
    )
    print(
        f"build: mvcstore {built_s:.0f} s, {_size_mib(args.work_dir / 'repo'):.0f} MiB;"
        f" baseline {base_built_s:.0f} s,"
        f" {_size_mib(args.work_dir / 'baseline.sqlite'):.0f} MiB"
    )
    print()
    print("| question (session main) | mvcstore | baseline | ratio | note |")
    print("|---|---:|---:|---:|---|")
    for question, ours, theirs, note in rows:
        base = f"{theirs * 1000:,.1f} ms" if theirs is not None else "-"
        ratio = f"{ours / theirs:,.1f}x" if theirs else "-"
        print(f"| {question} | {ours * 1000:,.1f} ms | {base} | {ratio} | {note} |")
    if not args.keep:
        shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
