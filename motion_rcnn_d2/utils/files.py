"""Files written atomically: readers (and a later run) see the old file or the complete new
one, never a partial one."""
import contextlib
import os

__all__ = ["open_atomically", "AtomicWritePathManager"]


@contextlib.contextmanager
def open_atomically(path, mode="wb"):
    """``with open_atomically(path) as f: ...`` writes ``path + '.tmp'``, flushes it to disk and
    renames it over ``path`` when the block ends; when the block (or the rename) raises, the
    temporary file is removed and ``path`` is left as it was."""
    tmp = path + ".tmp"
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
