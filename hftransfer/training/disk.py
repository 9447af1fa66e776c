"""A full disk ends a run with one line naming what could not be written, not a traceback from deep inside a writer.

Each writer reports a full disk in its own words: ``OSError: [Errno 28]`` from Python, ``RuntimeError: [enforce fail
at inline_container.cc] ... unexpected pos`` from ``torch.save`` (which never mentions space), ``SafetensorError ...
No space left on device`` from safetensors. :func:`writing` wraps a write boundary (a checkpoint, the exported
model, ``metrics.json``) and turns any of them into a :class:`~hftransfer.errors.DiskFullError`.

The writers inside are atomic (a temporary sibling renamed into place), so what was there before stays intact;
the message says so and says how to go on.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hftransfer.errors import DiskFullError

RESUME_HINT = "free some space, then resume the run with train.resume_from_checkpoint=latest"

_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# torch's zip writer (caffe2/serialize/inline_container.cc) checks the position after each write: a short write on a
# full disk shows up as "unexpected pos N vs M", a failed one as "file write failed".
_TORCH_MARKERS = ("unexpected pos", "file write failed", "pytorchstreamwriter failed writing")
# safetensors' Rust error carries the OS error's text ("No space left on device (os error 28)").
_SAFETENSORS_MARKERS = ("no space left", "os error 28", "storagefull", "quota exceeded", "os error 122")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) is a write that failed for lack of space or quota."""
    return any(_is_out_of_space_itself(link) for link in _chain(error))


def _is_out_of_space_itself(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno in _SPACE_ERRNOS
    message = str(error).lower()
    if type(error).__name__ == "SafetensorError":
        return any(marker in message for marker in _SAFETENSORS_MARKERS)
    if isinstance(error, RuntimeError):
        return any(marker in message for marker in _TORCH_MARKERS)
    return False


def free_space(path: str | Path) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (its nearest existing ancestor), or None."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _size(num_bytes: int) -> str:
    scaled, unit = float(num_bytes), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{num_bytes} B" if unit == "B" else f"{scaled:.1f} {unit}"


def describe(what: str, path: str | Path, error: BaseException, hint: str = RESUME_HINT) -> str:
    """The one-line message: what could not be written, where, why, how much space is left and what to do."""
    edquot = getattr(errno, "EDQUOT", None)
    quota = any(
        (isinstance(link, OSError) and link.errno == edquot) or "quota" in str(link).lower()
        for link in _chain(error)
    )
    reason = "the disk quota is exceeded" if quota else "the disk is full"
    free = free_space(path)
    # Measured as it failed, before the partial write is removed: what the writer had, not what is left after.
    left = f" ({_size(free)} free on that filesystem as it failed)" if free is not None else ""
    return (
        f"cannot write {what} to {path}: {reason}{left}; what was written before is intact. {hint[:1].upper()}"
        f"{hint[1:]}"
    )


@contextmanager
def writing(what: str, path: str | Path, *, hint: str = RESUME_HINT) -> Iterator[None]:
    """Turn an out-of-space failure inside the block into a :class:`DiskFullError` naming ``what`` and ``path``.

    Other errors pass through unchanged. The outermost boundary names the artefact: a ``trainer_state.json`` that
    fails inside a checkpoint is reported as the checkpoint. Cleaning up the partial write is the block's job (the
    atomic writers of :mod:`hftransfer.utils` already remove their temporaries).

    Args:
        what: what the user knows the artefact as (``"checkpoint step-00000030"``, ``"the exported model"``).
        path: where it was going (its final path, not the temporary).
        hint: what to do about it.

    Raises:
        DiskFullError: the block failed for lack of space (chained from the writer's own error).
    """
    try:
        yield
    except DiskFullError as err:
        raise DiskFullError(describe(what, path, err.__cause__ or err, hint)) from (err.__cause__ or err)
    except Exception as err:
        if not is_out_of_space(err):
            raise
        raise DiskFullError(describe(what, path, err, hint)) from err


def attempt(what: str, path: str | Path, write: Callable[[], Any]) -> DiskFullError | None:
    """Run ``write()`` inside :func:`writing`; return the :class:`DiskFullError` instead of raising it, for a
    caller that must first tell the other processes (:func:`agree_on_failure`). Other errors are raised."""
    try:
        with writing(what, path):
            write()
    except DiskFullError as err:
        return err
    return None


def agree_on_failure(accelerator: Any, error: DiskFullError | None) -> None:
    """Collective: raise on every process when the write failed on any (call on every process).

    Without this, the processes whose part succeeded would wait at the next barrier for one that has gone.
    """
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        messages = [m for m in gather_object([str(error) if error is not None else None]) if m]
        if messages and error is None:
            raise DiskFullError(messages[0])
    if error is not None:
        raise error


def write_on_main(accelerator: Any, what: str, path: str | Path, write: Callable[[], Any]) -> None:
    """Collective: ``write()`` on the main process only, then every process raises the same
    :class:`DiskFullError` if it failed (none waits for a main process that has gone), then a barrier."""
    failed = attempt(what, path, write) if accelerator.is_main_process else None
    agree_on_failure(accelerator, failed)
    accelerator.wait_for_everyone()
