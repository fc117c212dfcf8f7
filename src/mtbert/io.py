"""Atomic writes: a crash leaves either the old file or the new one, never half of one.

What mtbert writes gets the modes any program's files get, 0666 and 0777 less the user's umask (not
the 0600 and 0700 of `tempfile`), so a colleague or a serving container can read a run; a file written
over an existing one keeps that file's mode. Temporary names are `.<name>.<8 characters>.tmp` beside the
final name, and a directory being replaced is parked as `.<name>.old`: `leftover_of` recognises both, so a
run can clear what a kill left behind without touching any other file.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import stat
import string
from collections.abc import Callable
from pathlib import Path

_TEMP_CHARS = string.ascii_lowercase + string.digits + "_"  # tempfile's alphabet: earlier runs' names match too
_TEMP = re.compile(rf"^\.(?P<name>.+)\.[{re.escape(_TEMP_CHARS)}]{{8}}\.tmp$")
_OLD = re.compile(r"^\.(?P<name>.+)\.old$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_names(path: Path):
    rng = random.Random()
    while True:
        yield path.with_name(f".{path.name}.{''.join(rng.choices(_TEMP_CHARS, k=8))}.tmp")


def _new_temp_file(path: Path) -> Path:
    """An empty file beside `path`, created with 0666 so that the kernel applies the umask."""
    for tmp in _temp_names(path):
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _new_temp_dir(path: Path) -> Path:
    for tmp in _temp_names(path):
        try:
            os.mkdir(tmp, 0o777)  # the umask applies, as to any folder the user makes
            return tmp
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def leftover_of(name: str) -> str | None:
    """The final name whose half-written temporary (or parked old directory) `name` is, else None."""
    match = _TEMP.match(name) or _OLD.match(name)
    return match["name"] if match else None


def old_dir(path: str | Path) -> Path:
    """Where `atomic_write_dir` parks the previous version for the instant between its two renames."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, fsync the result and rename it over `path`.

    A symlink is written through (the link stays, its target gets the new content), and an existing
    file keeps its mode."""
    path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temp_file(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else stat.S_IMODE(tmp_path.stat().st_mode)
        write(tmp_path)
        os.chmod(tmp_path, mode)  # whatever `write` did to the file, it gets the mode chosen above
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync: a crash can cut at most this line, never an earlier one."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def _umask_modes(tmp: Path) -> None:
    """Give what a writer put in `tmp` the umask's modes: some create their files 0600 themselves
    (safetensors does). `tmp` was made 0777 less the umask, so its mode says what the umask is."""
    folder_mode = stat.S_IMODE(tmp.stat().st_mode)
    for p in tmp.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, folder_mode if p.is_dir() else folder_mode & 0o666)


def atomic_write_dir(path: str | Path, write: Callable[[Path], None]) -> None:
    """Build a whole directory beside `path`, then swap it in.

    The previous version is parked as `.<name>.old` for the instant between the two renames, and
    `resolve_dir` falls back to it, so a reader never sees a half-written directory. Whoever calls this
    has decided that whatever is at `path` may be replaced (it is mtbert's own, or the user said so).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_dir(path)
    old = old_dir(path)
    try:
        write(tmp)
        _umask_modes(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_dir(path: str | Path) -> Path:
    """The directory `atomic_write_dir` wrote last, even if a crash came between its two renames."""
    path = Path(path)
    old = old_dir(path)  # not `<name>.old`, the name before: that one may be the user's own backup
    if not path.exists() and old.exists():
        return old
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether `a` and `b` are one file, also through a symlink or a hard link."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): they cannot be the same
        return False


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies inside it, symlinks resolved."""
    inner, outer = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return inner == outer or outer in inner.parents
