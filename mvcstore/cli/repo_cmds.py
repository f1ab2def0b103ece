"""Commands on the repository as a whole: ``mvc init`` and ``mvc fsck``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.errors import MvcError
from mvcstore.repo import REPO_DIR, FsckReport, Repo

__all__ = ["init", "fsck"]


@click.command()
@click.argument(
    "path",
    required=False,
    type=click.Path(file_okay=False, path_type=Path),
)
def init(path: Path | None) -> None:
    """Create a repository: PATH/.mvc (PATH defaults to the current folder).

    Without PATH, MVC_DIR (if set) names where the repository goes: a folder
    ending in .mvc is the repository itself, any other folder gets a .mvc
    inside it. Prints the repository's folder.
    """
    if path is None:
        env = os.environ.get("MVC_DIR")
        if env:
            target = Path(env)
            path = target.parent if target.name == REPO_DIR else target
        else:
            path = Path.cwd()
    with Repo.init(path) as repo:
        click.echo(f"created empty repository in {repo.path.absolute()}")


@click.command()
@json_option
def fsck(as_json: bool) -> None:
    """Verify every stored object and that every ref reaches whole epochs.

    Each object is read back and its hash checked; each session and tag is
    walked down to the bytes of every tensor. Every problem is printed with its
    kind, the object id, what is wrong and the refs and epochs it affects.
    Exits 1 if there is any problem.
    """
    repo = open_repo()
    report = repo.fsck()
    if as_json:
        echo_json(_report_json(report))
    else:
        _print_report(report)
    if not report.ok:
        raise MvcError(
            f"fsck found {_plural(len(report.problems), 'problem')}"
            f" in {_plural(report.objects, 'object')}",
            hint="restore the named object files from a copy of the repository,"
            " then run 'mvc fsck' again",
        )


def _report_json(report: FsckReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "objects": report.objects,
        "epochs": report.epochs,
        "unreferenced": report.unreferenced,
        "problems": [
            {
                "kind": problem.kind,
                "object": problem.object_id,
                "detail": problem.detail,
                "affects": list(problem.affects),
            }
            for problem in report.problems
        ],
    }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _print_report(report: FsckReport) -> None:
    for problem in report.problems:
        click.echo(f"{problem.kind}: {problem.detail}")
        if problem.affects:
            click.echo(f"  affects {', '.join(problem.affects)}")
    verdict = "ok" if report.ok else _plural(len(report.problems), "problem")
    click.echo(
        f"checked {_plural(report.objects, 'object')},"
        f" {_plural(report.epochs, 'epoch')} reachable,"
        f" {report.unreferenced} unreferenced: {verdict}"
    )
