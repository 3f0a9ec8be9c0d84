"""Where workers leave intermediate results (rescoring shards): a local directory, or S3-compatible storage.

Keys are relative paths ("project-7/shards/<id>/3.npz"). Local writes are atomic (temp file + rename);
S3 puts are atomic by nature. Choose with LSAL_ARTIFACT_STORE: a directory (default: MODEL_DIR) or
``s3://bucket/prefix`` (credentials from the usual AWS_* variables, endpoint from LSAL_S3_ENDPOINT_URL for
MinIO and other S3-compatible servers; needs `boto3`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from plugins.fileio import atomic_write


class ArtifactStore(Protocol):
    """put/get/delete bytes by key."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


def _safe_key(key: str) -> str:
    parts = [p for p in key.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid artifact key {key!r}")
    return "/".join(parts)


class LocalArtifactStore:
    """A directory shared by the workers (one machine, or a shared filesystem)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda stream: stream.write(data))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.exists():
            return 0
        files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else [base]
        for p in files:
            p.unlink(missing_ok=True)
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), reverse=True) if base.is_dir() else []:
            d.rmdir()
        if base.is_dir():
            base.rmdir()
        return len(files)

    def list_keys(self, prefix: str) -> list[str]:
        """The sorted keys of the files under the folder `prefix` (not atomic_write's temporaries)."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                      if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")))

    def delete(self, key: str) -> None:
        """Delete one file; a missing one is not an error."""
        self._path(key).unlink(missing_ok=True)


class S3ArtifactStore:
    """A bucket (and prefix) on S3 or an S3-compatible server, for workers on several machines."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError:
            raise ValueError("LSAL_ARTIFACT_STORE is an s3:// URL but boto3 is not installed "
                             "(pip install boto3)") from None
        parts = urlsplit(url)
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        if not self.bucket:
            raise ValueError(f"LSAL_ARTIFACT_STORE={url!r} names no bucket (s3://bucket/prefix)")
        self.client = boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_safe_key(key)}" if self.prefix else _safe_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def delete_prefix(self, prefix: str) -> int:
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                         Prefix=self._key(prefix) + "/"):
            keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000]})
        return len(keys)

    def list_keys(self, prefix: str) -> list[str]:
        """The sorted keys of the objects under the folder `prefix`, without this store's own prefix."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                         Prefix=self._key(prefix) + "/"):
            keys += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Delete one object; a missing one is not an error."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_store(location: str, endpoint_url: str | None = None) -> ArtifactStore:
    """The store for LSAL_ARTIFACT_STORE: s3://bucket/prefix, or a local directory."""
    if location.startswith("s3://"):
        return S3ArtifactStore(location, endpoint_url)
    return LocalArtifactStore(location)
