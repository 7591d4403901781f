"""Writing output files without destroying anything: one atomic writer and the checks run before any work."""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import OutputError


def atomic_write(path: str | os.PathLike, payload: bytes, *, follow_links: bool = True) -> Path:
    """Write `payload` to `path` via a temporary file beside it and os.replace: readers (and a crash) see the old
    file or the new one, never half of one. Returns the path written.

    A symlink is written through (its target is replaced, the link stays); anything but a regular file (device,
    FIFO, socket, folder) is refused. An existing file keeps its mode; a new one gets 0666 minus the umask.
    Failures (refusal, disk full, no permission) raise OutputError naming the path. With `follow_links=False`
    (the cache) a link or special file at `path` is itself replaced, never written through.
    """
    return write_group({path: payload}, follow_links=follow_links)[0]


def write_group(files: Mapping[str | os.PathLike, bytes], *, follow_links: bool = True) -> list[Path]:
    """Write several files that belong together (a report's HTML and its JSON): every payload goes to a temporary
    file first, then all are swapped into place while an exclusive lock on each target folder is held, so two
    writers of the same outputs never leave one run's JSON beside the other's HTML. On any failure before the
    swap, every previous file is unchanged and no temporary file is left. Returns the paths written."""
    targets = {_target(Path(path), follow_links): (Path(path), payload) for path, payload in files.items()}
    for target, (path, _) in targets.items():
        problem = _target_problem(target) if follow_links else _entry_problem(target)
        if problem:
            raise OutputError(f"Cannot write {os.fspath(path)}: {problem}.")
    staged: list[tuple[str, Path]] = []
    try:
        for target, (path, payload) in targets.items():
            staged.append((_stage(target, payload, path), target))
        with _locked({target.parent for target in targets}):
            for tmp, target in staged:
                os.replace(tmp, target)
    except BaseException as exc:  # also KeyboardInterrupt: never leave temporary files behind
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"Could not write {', '.join(os.fspath(p) for p, _ in targets.values())} "
                              f"({exc.strerror or exc}): free some space or choose a writable location; the "
                              "previous files there are unchanged.") from exc
        raise
    return [path for path, _ in targets.values()]


def _target(path: Path, follow_links: bool) -> Path:
    """The name to replace: `path` with every link resolved, or (not following) only its folder's links."""
    if follow_links:
        return Path(os.path.realpath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _entry_problem(target: Path) -> str | None:
    """Why the name `target` (not followed) cannot be replaced by a regular file, or None."""
    try:
        return "it is a folder; give a file name inside it" if stat.S_ISDIR(os.lstat(target).st_mode) else None
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be inspected ({exc.strerror or exc})"


def _stage(target: Path, payload: bytes, path: Path) -> str:
    """A temporary file beside `target` holding `payload` (with the mode `target` has or would get)."""
    try:
        info = os.lstat(target)
        mode = stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else 0o666 & ~current_umask()
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


@contextlib.contextmanager
def _locked(folders: Iterable[Path]) -> Iterator[None]:
    """Exclusive flock on each folder (in a fixed order, so two writers cannot deadlock)."""
    fds = []
    try:
        for folder in sorted(set(folders)):
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


def check_outputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Before any work: every output (option name -> path; None = not written) must be writable, must not be one
    of `inputs` (files, or an existing file inside an input folder) and must differ from every other output.
    Raises OutputError naming the option and the fix."""
    seen: dict[str, str] = {}
    input_paths = [p for p in (Path(i) for i in inputs if i is not None) if p.exists()]
    for option, path in outputs.items():
        if path is None:
            continue
        resolved = os.path.realpath(path)
        if resolved in seen:
            raise OutputError(f"{option} {os.fspath(path)} is also the path of {seen[resolved]}: one would "
                              "overwrite the other. Give each output its own file.")
        seen[resolved] = option
        for source in input_paths:
            if _is_part_of(Path(resolved), source):
                raise OutputError(f"{option} {os.fspath(path)} is an input of this command ({os.fspath(source)}): "
                                  "writing it would destroy the input. Choose another output path.")
        problem = _target_problem(Path(resolved)) or _folder_problem(Path(resolved).parent)
        if problem:
            raise OutputError(f"{option} {os.fspath(path)} cannot be written: {problem}.")


def _is_part_of(output: Path, source: Path) -> bool:
    """Is `output` (resolved) the input file `source` (also as a hard link), or an existing file inside the input
    folder `source`?"""
    real = Path(os.path.realpath(source))
    if output == real or (output.exists() and os.path.samefile(output, source)):
        return True
    return real.is_dir() and output.is_file() and real in output.parents


def _target_problem(target: Path) -> str | None:
    """Why `target` (symlinks resolved) must not be replaced by a regular file, or None."""
    try:
        info = target.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return "a folder on its path is a file, not a folder"
    except OSError as exc:
        return f"it cannot be inspected ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return "it is a folder; give a file name inside it"
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode)
                or stat.S_ISBLK(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a special file")
        return f"it is {kind}, not a regular file; write to a regular file instead"
    return None


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (created later if missing), or None. Probes with a temporary file,
    which tells read-only file systems and permissions apart from what os.access says (e.g. as root)."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".workbench-probe-")
    except OSError as exc:
        return f"cannot create files in {existing} ({exc.strerror or exc}); choose a writable folder"
    os.close(fd)
    os.unlink(probe)
    return None


def current_umask() -> int:
    """The process umask (read by setting it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
