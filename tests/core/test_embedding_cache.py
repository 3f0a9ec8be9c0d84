"""The embedding cache over real artifact stores: a local directory, and S3 through moto's HTTP server."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from core import embedding_cache as ec
from core.artifact_store import LocalArtifactStore, S3ArtifactStore
from core.embedding_cache import EmbeddingCache, value_digest


def _vectors(n: int, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    return S3ArtifactStore("s3://lsal/runs", request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def local(tmp_path):
    return LocalArtifactStore(tmp_path / "artifacts")


def test_value_digest_is_stable_and_changes_with_the_value():
    assert value_digest({"b": 1, "a": "é"}) == value_digest({"a": "é", "b": 1})
    assert len(value_digest("x")) == 32 and int(value_digest("x"), 16) >= 0
    assert value_digest("http://a/1.png") != value_digest("http://a/2.png")


def test_round_trip_changed_digest_later_wins_compact_and_clear(store):
    cache = EmbeddingCache(store, "minilm:sha256-abc/def", 7)
    v1 = _vectors(3, seed=1)
    d = [value_digest(f"text {i}") for i in range(3)]
    cache.add([1, 2, 3], d, v1)
    got = cache.lookup([(1, d[0]), (2, d[1]), (3, d[2])])
    assert sorted(got) == [1, 2, 3]
    for i, tid in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(got[tid], v1[i])
        assert got[tid].dtype == np.float32

    # Task 2's text changed: its new digest misses, the old one still hits.
    new = value_digest("text 2 edited")
    assert cache.lookup([(2, new)]) == {}
    np.testing.assert_array_equal(cache.lookup([(2, d[1])])[2], v1[1])
    # Only the asked rows come back.
    assert sorted(cache.lookup([(3, d[2]), (99, d[0])])) == [3]

    # A later segment wins for the same (id, digest); the re-embedded task is stored beside the old entry.
    v2 = _vectors(2, seed=2)
    cache.add([1, 2], [d[0], new], v2)
    got = cache.lookup([(1, d[0]), (2, new), (3, d[2])])
    np.testing.assert_array_equal(got[1], v2[0])
    np.testing.assert_array_equal(got[2], v2[1])
    np.testing.assert_array_equal(got[3], v1[2])

    assert len(store.list_keys(cache.prefix)) == 2
    assert cache.compact(max_segments=2) == 0
    assert cache.compact(max_segments=1) == 2
    keys = store.list_keys(cache.prefix)
    assert len(keys) == 1
    with np.load(io.BytesIO(store.get(keys[0])), allow_pickle=False) as z:
        assert z["ids"].dtype == np.int64 and z["digests"].dtype == np.dtype("<U32")
        assert z["vectors"].dtype == np.float32
        assert sorted(z["ids"].tolist()) == [1, 2, 2, 3]  # one row per (id, digest), the latest
    got = cache.lookup([(1, d[0]), (2, new), (3, d[2])])
    np.testing.assert_array_equal(got[1], v2[0])
    np.testing.assert_array_equal(got[2], v2[1])
    np.testing.assert_array_equal(got[3], v1[2])
    np.testing.assert_array_equal(cache.lookup([(2, d[1])])[2], v1[1])

    other = EmbeddingCache(store, "minilm:sha256-abc/def", 8)
    other.add([1], [d[0]], v1[:1])
    assert cache.clear() == 1
    assert cache.lookup([(1, d[0])]) == {} and store.list_keys(cache.prefix) == []
    np.testing.assert_array_equal(other.lookup([(1, d[0])])[1], v1[0])


def test_list_keys_and_delete(store):
    assert store.list_keys("x") == []
    for key in ["x/b/2.npz", "x/a.npz", "x/b/1.npz", "xy/c.npz"]:
        store.put(key, key.encode())
    assert store.list_keys("x") == ["x/a.npz", "x/b/1.npz", "x/b/2.npz"]
    assert store.list_keys("x/b") == ["x/b/1.npz", "x/b/2.npz"]
    store.delete("x/b/1.npz")
    store.delete("x/b/1.npz")  # missing: not an error
    store.delete("never/was.npz")
    assert store.list_keys("x") == ["x/a.npz", "x/b/2.npz"]
    assert store.get("xy/c.npz") == b"xy/c.npz"


def test_local_list_keys_skips_atomic_write_temporaries(local):
    local.put("p/seg.npz", b"whole")
    (local.root / "p" / ".seg2.npz.abc123.tmp").write_bytes(b"half")
    assert local.list_keys("p") == ["p/seg.npz"]


def test_a_truncated_segment_is_skipped_and_the_others_still_hit(local, caplog):
    cache = EmbeddingCache(local, "enc", 1)
    vectors = _vectors(2)
    cache.add([1, 2], ["a", "b"], vectors)
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array([3], dtype=np.int64), digests=np.array(["c"], dtype="<U32"),
             vectors=_vectors(1, seed=5))
    local.put(f"{cache.prefix}/seg-{2**62:020d}-{'0' * 32}.npz", buffer.getvalue()[:-40])  # a torn file
    with caplog.at_level(logging.WARNING, logger="lsal.embeddings"):
        got = cache.lookup([(1, "a"), (2, "b"), (3, "c")])
    assert sorted(got) == [1, 2]
    np.testing.assert_array_equal(got[2], vectors[1])
    assert "unreadable" in caplog.text


def test_a_crash_inside_add_leaves_no_segment(local, monkeypatch):
    cache = EmbeddingCache(local, "enc", 1)
    cache.add([1], ["a"], _vectors(1))
    before = local.list_keys(cache.prefix)

    def save_then_crash(stream, **arrays):
        stream.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ec.np, "savez", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        cache.add([2], ["b"], _vectors(1))
    monkeypatch.undo()

    class TornWrite(Exception):
        pass

    def put_crashing_midway(key, data):  # the real atomic put, its stream dying half-way
        from plugins import fileio

        def write(stream):
            stream.write(data[: len(data) // 2])
            raise TornWrite

        path = local._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write(path, write)

    monkeypatch.setattr(local, "put", put_crashing_midway)
    with pytest.raises(TornWrite):
        cache.add([3], ["c"], _vectors(1))
    monkeypatch.undo()
    assert local.list_keys(cache.prefix) == before
    assert [p.name for p in (local.root / cache.prefix).iterdir()] == [before[0].rsplit("/", 1)[-1]]
    assert sorted(cache.lookup([(1, "a"), (2, "b"), (3, "c")])) == [1]


def test_a_crash_after_the_merged_segment_is_written_loses_nothing(local, monkeypatch):
    cache = EmbeddingCache(local, "enc", 1)
    vectors = _vectors(4)
    for i in range(4):
        cache.add([i], [f"d{i}"], vectors[i:i + 1])

    def crash(key):
        raise RuntimeError("killed")

    monkeypatch.setattr(local, "delete", crash)
    with pytest.raises(RuntimeError):
        cache.compact(max_segments=2)
    monkeypatch.undo()
    assert len(local.list_keys(cache.prefix)) == 5  # the merged one beside the originals
    got = cache.lookup([(i, f"d{i}") for i in range(4)])
    for i in range(4):
        np.testing.assert_array_equal(got[i], vectors[i])
    assert cache.compact(max_segments=2) == 5
    assert len(local.list_keys(cache.prefix)) == 1
    got = cache.lookup([(i, f"d{i}") for i in range(4)])
    for i in range(4):
        np.testing.assert_array_equal(got[i], vectors[i])


def test_a_segment_added_during_compaction_still_wins(local, monkeypatch):
    cache = EmbeddingCache(local, "enc", 1)
    cache.add([1], ["a"], np.zeros((1, 3)))
    cache.add([2], ["b"], np.zeros((1, 3)))
    listed = cache._segments()
    cache.add([1], ["a"], np.ones((1, 3)))  # after compaction listed the segments
    monkeypatch.setattr(cache, "_segments", lambda: listed)
    assert cache.compact(max_segments=1) == 2
    monkeypatch.undo()
    np.testing.assert_array_equal(cache.lookup([(1, "a")])[1], np.ones(3))


def test_a_vanished_segment_and_a_wrong_dimension_are_skipped(local, monkeypatch, caplog):
    cache = EmbeddingCache(local, "enc", 1)
    cache.add([1], ["a"], np.full((1, 3), 1.0))
    cache.add([2], ["b"], np.full((1, 5), 2.0))
    cache.add([3], ["c"], np.full((1, 3), 3.0))
    keys = cache._segments()
    real_get = local.get
    def get(key):  # the third segment was deleted by a concurrent compaction
        if key == keys[2]:
            raise KeyError(key)
        return real_get(key)

    monkeypatch.setattr(local, "get", get)
    with caplog.at_level(logging.WARNING, logger="lsal.embeddings"):
        got = cache.lookup([(1, "a"), (2, "b"), (3, "c")])
    assert sorted(got) == [1]
    assert "vanished" in caplog.text and "dimension 5" in caplog.text


def test_bad_input_is_refused_and_an_empty_add_writes_nothing(local):
    cache = EmbeddingCache(local, "enc", 1)
    with pytest.raises(ValueError, match="differ in length"):
        cache.add([1, 2], ["a"], _vectors(2))
    with pytest.raises(ValueError, match="differ in length"):
        cache.add([1], ["a"], _vectors(2))
    with pytest.raises(ValueError, match="2-D"):
        cache.add([1], ["a"], np.zeros(1))
    with pytest.raises(ValueError, match="finite"):
        cache.add([1, 2], ["a", "b"], np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="finite"):
        cache.add([1], ["a"], np.array([[np.inf]]))
    with pytest.raises(ValueError, match="at most 32"):
        cache.add([1], ["x" * 33], _vectors(1))
    with pytest.raises(ValueError, match="integers"):
        cache.add([1.5], ["a"], _vectors(1))
    with pytest.raises(ValueError, match="at least 1"):
        cache.compact(max_segments=0)
    cache.add([], [], np.zeros((0, 4)))
    assert local.list_keys(cache.prefix) == []
    assert cache.lookup([]) == {} and cache.compact() == 0 and cache.clear() == 0


def test_identities_stay_one_path_segment_and_never_collide(local):
    identities = ["minilm:sha256-abc/def", "minilm_sha256-abc_def", "minilm:sha256-abc:def", "../x", "."]
    caches = [EmbeddingCache(local, identity, 3) for identity in identities]
    segments = [c.prefix.split("/")[1] for c in caches]
    assert len(set(segments)) == len(identities)
    for c, segment in zip(caches, segments):
        assert c.prefix == f"embeddings/{segment}/project-3"
        assert "/" not in segment and ":" not in segment and segment not in (".", "..")
    for n, c in enumerate(caches):
        c.add([1], ["a"], np.full((1, 2), float(n)))
    for n, c in enumerate(caches):
        np.testing.assert_array_equal(c.lookup([(1, "a")])[1], [float(n), float(n)])
        assert len(local.list_keys(c.prefix)) == 1
