"""Keeps numbered copies of every saved checkpoint and resumes training from the newest one."""

import os
import re
import shutil

from .base import BaseCallback

_VERSION_FILE = re.compile(r"version_(\d+)\.ckpt")


class ContinuousTrainingCallback(BaseCallback):
    def __init__(self, checkpoint_dir, keep_versions=None):
        if keep_versions is not None and (
            isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 1
        ):
            raise ValueError(
                f"ContinuousTrainingCallback keep_versions must be None (keep all) or a positive int; "
                f"got {keep_versions!r}."
            )
        self.checkpoint_dir = os.fspath(checkpoint_dir)
        self.keep_versions = keep_versions
        self.version = self._get_latest_version()
        self.resumed_from = None
        self.copies = []

    def on_training_start(self, trainer):
        if self.version > 0:
            checkpoint_path = self._get_checkpoint_path(self.version)
            trainer.load_checkpoint(checkpoint_path)
            self.resumed_from = checkpoint_path

    def on_checkpoint_saved(self, trainer, checkpoint_path):
        self.version += 1
        new_path = self._get_checkpoint_path(self.version)
        if _is_url(self.checkpoint_dir):
            self._copy_remote(checkpoint_path, new_path)
            return
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        # Copy under a name that does not match version_N.ckpt, then rename: a crash mid-copy
        # must never leave a partial file that the next run would resume from.
        tmp_path = os.path.join(self.checkpoint_dir, f".version_{self.version:04d}.ckpt.tmp-{os.getpid()}")
        shutil.copy2(checkpoint_path, tmp_path)
        os.replace(tmp_path, new_path)
        self.copies.append(new_path)
        self._prune()

    def _copy_remote(self, checkpoint_path, new_path):
        # A remote folder (s3://, memory://): copied through fsspec inside a transaction, so a failed copy
        # publishes nothing (object stores make an upload visible whole).
        import fsspec

        fs, folder = fsspec.core.url_to_fs(self.checkpoint_dir)
        fs.makedirs(folder, exist_ok=True)
        with fsspec.open(checkpoint_path, "rb") as source:
            data = source.read()
        with fs.transaction:
            with fs.open(fsspec.core.url_to_fs(new_path)[1], "wb") as handle:
                handle.write(data)
        self.copies.append(new_path)
        self._prune()

    def _listdir(self):
        if _is_url(self.checkpoint_dir):
            import fsspec

            fs, folder = fsspec.core.url_to_fs(self.checkpoint_dir)
            if not fs.isdir(folder):
                return []
            return [name.rstrip("/").rsplit("/", 1)[-1] for name in fs.ls(folder, detail=False)]
        if not os.path.isdir(self.checkpoint_dir):
            return []
        return os.listdir(self.checkpoint_dir)

    def _versions(self):
        versions = []
        for filename in self._listdir():
            match = _VERSION_FILE.fullmatch(filename)
            if match:
                versions.append(int(match.group(1)))
        return sorted(versions)

    def _get_latest_version(self):
        versions = self._versions()
        return versions[-1] if versions else 0

    def _get_checkpoint_path(self, version):
        if _is_url(self.checkpoint_dir):
            return f"{self.checkpoint_dir.rstrip('/')}/version_{version:04d}.ckpt"
        return os.path.join(self.checkpoint_dir, f"version_{version:04d}.ckpt")

    def _prune(self):
        if self.keep_versions is None:
            return
        versions = self._versions()
        for version in versions[:-self.keep_versions]:
            path = self._get_checkpoint_path(version)
            if _is_url(path):
                import fsspec

                fs, target = fsspec.core.url_to_fs(path)
                fs.rm(target)
            else:
                os.remove(path)


def _is_url(path):
    """A remote folder or file (``s3://``, ``memory://``): handled through fsspec."""
    return "://" in str(path) and not str(path).startswith("file://")
