"""Commands on the repository as a whole: ``mvc init`` and ``mvc fsck``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from mvcstore.cli.common import echo_json, json_option, open_repo
from mvcstore.errors import InvalidInputError, InvalidNameError, MvcError
from mvcstore.remote import check_remote_name, list_remotes
from mvcstore.repair import repair as repair_from
from mvcstore.repo import FORMAT_VERSION, REPO_DIR, FsckReport, Repo, current_folder
from mvcstore.stores.registry import LOCAL, redact_uri

__all__ = ["init", "fsck", "upgrade"]


@click.command()
@click.argument(
    "path",
    required=False,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--objects",
    metavar="URI",
    default=LOCAL,
    show_default=True,
    help="Where objects live: local, gs://BUCKET/PREFIX or mongodb://HOST/DB.",
)
@click.option(
    "--refs",
    metavar="URI",
    default=LOCAL,
    show_default=True,
    help="Where refs and the epoch index live: local or mongodb://HOST/DB.",
)
@click.option(
    "--metrics",
    metavar="URI",
    default=LOCAL,
    show_default=True,
    help="Where metric documents live: local, es+http://HOST:PORT/INDEX or"
    " os+http://HOST:PORT/INDEX.",
)
def init(path: Path | None, objects: str, refs: str, metrics: str) -> None:
    """Create a repository: PATH/.mvc (PATH defaults to the current folder).

    Without PATH, MVC_DIR (if set) names where the repository goes: a folder
    ending in .mvc is the repository itself, any other folder gets a .mvc
    inside it. Each part stays embedded unless --objects, --refs or --metrics
    names a backend; a URI holding credentials is refused. Prints the
    repository's folder and the backends it uses.
    """
    if path is None:
        env = os.environ.get("MVC_DIR")
        if env:
            target = Path(env)
            path = target.parent if target.name == REPO_DIR else target
        else:
            path = current_folder()
    with Repo.init(path, objects=objects, refs=refs, metrics=metrics) as repo:
        click.echo(f"created empty repository in {repo.path.absolute()}")
        for part, uri in (("objects", objects), ("refs", refs), ("metrics", metrics)):
            if uri != LOCAL:
                click.echo(f"  {part} in {redact_uri(uri)}")


@click.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Restore corrupt and missing objects from the repository --from names.",
)
@click.option(
    "--from",
    "source",
    metavar="PATH",
    help="Another local copy of this repository to restore objects from, or"
    " the name of a remote that is one.",
)
@json_option
def fsck(repair: bool, source: str | None, as_json: bool) -> None:
    """Verify every stored object and that every ref reaches whole epochs.

    Each object is read back and its hash checked; each session and tag is
    walked down to the bytes of every tensor; both SQLite files get SQLite's
    integrity check. Every problem is printed with its kind, the object id,
    what is wrong and the refs and epochs it affects. With --repair --from
    PATH, damaged and missing objects are first restored from that copy.
    Exits 1 if there is any problem.
    """
    if repair != (source is not None):
        raise click.UsageError("--repair and --from PATH go together")
    repo = open_repo()
    if source is not None:
        repaired = repair_from(repo, _repair_source(repo, source))
        report = repaired.fsck
        if not as_json:
            for oid in repaired.repaired:
                click.echo(f"restored {oid.hex} from {repaired.source}")
            for oid, why in repaired.unrepaired.items():
                click.echo(f"not restored {oid.hex}: {why}")
    else:
        report = repo.fsck()
    if as_json:
        echo_json(_report_json(report))
    else:
        _print_report(report)
    if not report.ok:
        kinds = {problem.kind for problem in report.problems}
        hint = (
            "restore the named objects from another copy of the repository"
            " with 'mvc fsck --repair --from PATH'"
        )
        if kinds == {"database"}:
            hint = (
                "restore the named database file from a backup of the repository"
                " (repair restores objects, not databases)"
            )
        elif "database" in kinds:
            hint += "; restore the named database file from a backup"
        raise MvcError(
            f"fsck found {_plural(len(report.problems), 'problem')}"
            f" in {_plural(report.objects, 'object')}",
            hint=hint,
        )


@click.command()
def upgrade() -> None:
    """Move the repository to the current format; nothing stored is rewritten.

    An older repository is read as it is and written in its own format, so
    that the mvcstore which wrote it can still read it. After this, commits
    use the current encodings (smaller, faster deltas) and that older
    mvcstore refuses the repository.
    """
    repo = open_repo()
    before = repo.format_version
    if before == FORMAT_VERSION:
        click.echo(f"repository format {before} is current: nothing to do")
        return
    repo.upgrade_format()
    click.echo(f"repository format {before} -> {repo.format_version}")


def _repair_source(repo: Repo, source: str) -> str:
    # the name of a remote stands for its folder; anything else is a path
    try:
        check_remote_name(source)
    except InvalidNameError:
        return source
    spec = {remote.name: remote for remote in list_remotes(repo)}.get(source)
    if spec is None:
        return source
    if spec.path is None:
        raise InvalidInputError(
            f"remote {source!r} is a set of backends; a repair reads from a"
            " repository folder",
            hint="copy it with 'mvc clone --objects URI --refs URI --metrics URI"
            " DIR' ('mvc remote -v' lists them), then repair with --from DIR",
        )
    return str(spec.path)


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
        f" {report.unreferenced} not reached from a session or tag: {verdict}"
    )
