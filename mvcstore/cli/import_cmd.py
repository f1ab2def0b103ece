"""``mvc import``: commit the weights of a ``.pt``, ``.pth`` or safetensors file.

A safetensors file is read with every offset checked (``mvcstore.stfile``).
A torch file is read only through ``mvcstore.torch.files``, which loads it
with ``torch.load(weights_only=True)``: a file that would run code when
unpickled is refused, and nothing of it runs. The file is read and checked
before the repository is opened, so a refused file changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click

from mvcstore.arrays import RawTensor
from mvcstore.cli.common import open_repo
from mvcstore.errors import InvalidInputError
from mvcstore.repo import Session
from mvcstore.stfile import read_safetensors

__all__ = ["import_weights", "read_weights_file"]

_SAFETENSORS: Final = ".safetensors"
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _is_safetensors(path: Path) -> bool:
    """Return whether the file looks like safetensors: a size, then ``{``."""
    if path.suffix.lower() == _SAFETENSORS:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror or exc}", hint="check the file path"
        ) from exc
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 2 <= size <= path.stat().st_size - 8


def read_weights_file(path: Path) -> tuple[dict[str, RawTensor], dict[str, str]]:
    """Read the tensors of a weights file, never running code from it.

    Args:
        path: A safetensors file, or a ``torch.save`` file (``.pt``, ``.pth``).

    Returns:
        Tensors by name, and facts about the file for the epoch's ``meta``
        (``file``, ``format``, and for torch files where the tensors were).

    Raises:
        InvalidInputError: If the file cannot be read, is refused by the
            weights-only loader, or holds no state dict of tensors; or if it
            is a torch file and torch is not installed.
    """
    if _is_safetensors(path):
        tensors, _ = read_safetensors(path)
        return tensors, {"file": path.name, "format": "safetensors"}
    try:
        # torch loads only when a torch file is imported: mvc starts without it
        from mvcstore.torch.files import read_torch_file
    except ImportError as exc:
        raise InvalidInputError(
            f"reading {path} needs torch, which is not installed ({exc})",
            hint="install it with: pip install 'mvcstore[torch]', or convert the"
            " file to safetensors and run 'mvc import' again",
        ) from exc
    tensors, where = read_torch_file(path)
    return tensors, {"file": path.name, "format": "torch", "source": where}


@click.command("import")
@click.argument("file", metavar="FILE", type=_FILE)
@click.option(
    "--session",
    "-s",
    "session_name",
    metavar="NAME",
    help="Session to commit to (created if new); default: the current session.",
)
@click.option(
    "--message",
    "-m",
    help="A message describing the epoch; default: 'imported FILE'.",
)
def import_weights(file: Path, session_name: str | None, message: str | None) -> None:
    """Commit the weights in FILE (.pt, .pth or .safetensors) as a new epoch.

    A .pt or .pth file is loaded only with torch.load(weights_only=True), so a
    file holding anything but tensors and plain containers is refused and
    none of its code runs. It may hold a state dict, or a dict whose
    "state_dict" or "model" entry is one. The epoch continues from the
    session's head, keeps its graph and hyper-parameters, and the session
    becomes the current one. Prints the new epoch's full id.
    """
    # the file first: a refused file costs no repository access
    tensors, facts = read_weights_file(file)

    repo = open_repo()
    name = session_name if session_name is not None else repo.head_session()
    if name is None:
        raise InvalidInputError(
            "no current session to import into",
            hint="run 'mvc branch NAME' to start one, or pass --session NAME",
        )
    session = Session(repo, name)
    epoch = session.commit(
        tensors,
        message=message if message is not None else f"imported {file.name}",
        meta={"import": facts},
    )
    # HEAD moves only once the epoch is safely in the session
    repo.set_head(name)
    if epoch.id is not None:
        click.echo(epoch.id.hex)
