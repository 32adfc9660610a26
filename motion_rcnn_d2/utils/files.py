"""Files written atomically: readers (and a later run) see the old file or the complete new
one, never a partial one."""
import contextlib
import os

__all__ = ["open_atomically", "write_atomically", "temporary_path", "AtomicWritePathManager"]


def temporary_path(path):
    """``<stem>.tmp<pid><ext>`` beside ``path``: the extension stays last, since OpenCV and numpy
    pick the format by it."""
    stem, extension = os.path.splitext(path)
    return f"{stem}.tmp{os.getpid()}{extension}"


@contextlib.contextmanager
def open_atomically(path, mode="wb"):
    """``with open_atomically(path) as f: ...`` writes a temporary file beside ``path``, flushes
    it to disk and renames it over ``path`` when the block ends; when the block (or the rename) raises, the
    temporary file is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    _make_parent(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_atomically(path, write):
    """``write(tmp_path)`` (for writers that want a path, such as cv2.imwrite) and rename onto
    ``path``; when ``write`` raises, the temporary file is removed and ``path`` is left as it
    was. Returns ``path``."""
    path = os.fspath(path)
    _make_parent(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return path


def _make_parent(path):
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)


class AtomicWritePathManager:
    """An iopath ``PathManager`` (as fvcore's and Detectron2's checkpointers hold) whose
    ``open`` writes local files with :func:`open_atomically`; reading, remote paths ("://") and
    every other method are the wrapped path manager's."""

    def __init__(self, path_manager):
        self.path_manager = path_manager

    def __getattr__(self, name):  # only names this class lacks
        if name == "path_manager":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self.path_manager, name)

    def open(self, path, mode="r", **kwargs):
        if "w" in mode and "://" not in path and not kwargs:
            return open_atomically(path, mode)
        return self.path_manager.open(path, mode, **kwargs)
