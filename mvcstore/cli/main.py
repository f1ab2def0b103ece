"""The ``mvc`` command group, logging switches and the one error handler.

This is the only place that turns exceptions into exit statuses: an
``MvcError`` prints ``error: <message>`` and ``hint: <hint>`` on stderr and
exits 1; a click usage error exits 2; anything else is a bug in mvcstore and
shows its traceback. Commands live in one module per family and are only
registered here.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Final

import click

from mvcstore import __version__
from mvcstore.cli import (
    commit,
    dashboard_cmds,
    diff_cmd,
    gc_cmd,
    history,
    import_cmd,
    metrics_cmds,
    remote_cmds,
    repo_cmds,
    sessions,
    stats_cmd,
)
from mvcstore.errors import MvcError

__all__ = ["cli", "main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE"]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
"""An ``MvcError``: bad input, unknown revision, damaged object, fsck problems."""
EXIT_USAGE: Final = 2
"""A usage error: unknown option, missing argument, malformed option value."""

_LOG_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="mvc", message="%(prog)s %(version)s"
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log what happens on stderr: -v for INFO, -vv for DEBUG.",
)
def cli(verbose: int) -> None:
    """Version control for models in training.

    Epochs are commits of weights, graph and hyper-parameters; sessions are
    branches; metric documents follow the lineage. The repository is the
    .mvc folder in the current folder or a parent, or the one MVC_DIR names.
    """
    _configure_logging(verbose)


def _configure_logging(verbose: int) -> None:
    if verbose <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    package = logging.getLogger("mvcstore")
    package.addHandler(handler)
    package.setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


for _command in (
    repo_cmds.init,
    commit.commit,
    history.log,
    history.show,
    history.reflog,
    sessions.checkout,
    sessions.branch,
    sessions.tag,
    metrics_cmds.metrics,
    repo_cmds.fsck,
    repo_cmds.upgrade,
    dashboard_cmds.compare_cmd,
    dashboard_cmds.best,
    dashboard_cmds.plot,
    dashboard_cmds.ui,
    diff_cmd.diff,
    import_cmd.import_weights,
    gc_cmd.gc,
    gc_cmd.retain_command,
    stats_cmd.stats,
    remote_cmds.remote,
    remote_cmds.push,
    remote_cmds.pull,
    remote_cmds.clone,
):
    cli.add_command(_command)


def _report(exc: MvcError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``mvc`` and exit with its status (0 ok, 1 error, 2 usage).

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` if None.
    """
    args = list(argv) if argv is not None else None
    try:
        result = cli.main(args=args, prog_name="mvc", standalone_mode=False)
    except MvcError as exc:
        _report(exc)
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_ERROR)
    except Exception:
        # not an MvcError: a bug, so the traceback is what a report needs
        traceback.print_exc()
        click.echo("error: internal error in mvcstore (see the traceback)", err=True)
        click.echo("hint: rerun with 'mvc -vv' and report the traceback", err=True)
        sys.exit(EXIT_ERROR)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


if __name__ == "__main__":
    main()
