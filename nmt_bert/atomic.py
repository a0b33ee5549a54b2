"""Writing outputs atomically, and never replacing what is not ours.

A file or directory is built under a temporary sibling name, `.NAME.PID-RANDOM.tmp`, and
renamed into place only when complete, so an interrupted run never leaves something that
looks finished but is not. The PID in the name lets the next writer of the same path remove
the temporaries of writers that died (SIGKILL leaves no chance to clean up). Finished outputs
get the permissions the umask gives any new file (an existing file keeps its own).

An existing directory is replaced only when `ours(path)` says it is one of ours (its
manifest says so) or it is empty; anything else is refused with one line.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from nmt_bert.errors import UserError


def umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove `path`'s temporary siblings left by writers that no longer run; return them."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)-[^/]*\.tmp$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.iterdir():
        match = pattern.match(sibling.name)
        if not match or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                sibling.unlink()
        removed.append(sibling)
    return removed


def check_not_cwd(path: Path, option: str = "--out") -> None:
    """Refuse the current directory or one of its parents as a directory to (re)place."""
    here, target = Path.cwd().resolve(), Path(path).resolve()
    if target == here or target in here.parents:
        raise UserError(f"{option} {path}: is the current directory (or contains it); "
                        "give a new directory name")


def check_replaceable(path: Path, ours: Callable[[Path], bool], what: str,
                      option: str = "--out") -> None:
    """Whether `path` may become (or be replaced by) a directory of kind `what`.

    Absent, an empty directory, or one that `ours` recognises: fine. A file, or a directory
    holding anything else: UserError, so that nothing the user made is ever replaced.
    """
    path = Path(path)
    check_not_cwd(path, option)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise UserError(f"{option} {path}: is a file; give a directory name")
    if ours(path) or not any(path.iterdir()):
        return
    raise UserError(f"{option} {path}: exists and is not {what}; nothing was changed. "
                    "Choose another directory or remove it yourself")


def _publish(path: Path, keep_mode_of: Path | None = None) -> None:
    """Give a finished temporary file or tree the modes a plain new file would have."""
    mask = umask()
    if keep_mode_of is not None and keep_mode_of.exists():
        os.chmod(path, keep_mode_of.stat().st_mode & 0o7777)
        return
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def _name_write_failure(err: BaseException, path: Path) -> None:
    """A write that failed without naming its file (a full disk under a file handle) is
    reported against the output it was for."""
    if isinstance(err, OSError) and not err.filename:
        raise UserError(f"{path}: cannot write ({err.strerror or err}); nothing was "
                        "changed") from None


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` on success.

    The parent directory must exist. An existing file keeps its permissions.
    """
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _publish(Path(tmp), keep_mode_of=path)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _name_write_failure(err, path)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path, ours: Callable[[Path], bool] | None = None,
               what: str = "an nmt-bert directory") -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only if the block succeeds.

    `path` is checked first with `check_replaceable(path, ours, what)` (without `ours` only
    an absent or empty `path` may be replaced), and again just before the rename.
    """
    path = Path(path)
    ours = ours or (lambda _: False)
    check_replaceable(path, ours, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish(tmp)
        check_replaceable(path, ours, what)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _name_write_failure(err, path)
        raise
    for old in path.parent.glob(f".{glob.escape(path.name)}.old-*"):  # this one, and any a
        shutil.rmtree(old, ignore_errors=True)  # kill between the two renames left behind


def replaced_versions(path: Path) -> list[Path]:
    """Previous versions of `path` moved aside by `atomic_dir` and not yet removed (a kill
    between its two renames leaves one, and `path` may then be missing)."""
    return sorted(Path(path).parent.glob(f".{glob.escape(Path(path).name)}.old-*"))
