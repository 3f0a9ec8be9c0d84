"""The s3:// artifact store against a real local S3-compatible server (moto's, over HTTP on 127.0.0.1)."""

from __future__ import annotations

import pytest

from core.artifact_store import S3ArtifactStore, open_store


def test_put_get_and_delete_a_prefix_over_http(s3_endpoint):
    store = open_store("s3://lsal/runs", s3_endpoint)
    assert isinstance(store, S3ArtifactStore)
    for i in range(3):
        store.put(f"project-1/shards/r1/{i:05d}.npz", bytes([i]) * 10)
    store.put("project-1/shards/r2/00000.npz", b"keep")
    assert store.get("project-1/shards/r1/00002.npz") == bytes([2]) * 10
    assert store.delete_prefix("project-1/shards/r1") == 3
    with pytest.raises(KeyError):
        store.get("project-1/shards/r1/00000.npz")
    assert store.get("project-1/shards/r2/00000.npz") == b"keep"
    with pytest.raises(ValueError):
        store.put("project-1/../../etc", b"x")


def test_a_store_url_without_a_bucket_is_refused():
    with pytest.raises(ValueError, match="names no bucket"):
        open_store("s3:///prefix-only", "http://127.0.0.1:9")
