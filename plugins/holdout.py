"""A held-out set that is stable across versions: a task, once held out, stays held out; once trained, trained.

Each labeled task gets its side when it is first seen, and keeps it while the fraction stays the same (a new
fraction starts over). New tasks of a stratum (class) are taken in the order of a seeded hash of their ids
and held out while the stratum's held-out share is below the fraction; strata with fewer than MIN_STRATUM
labeled items hold none out. So every version is measured on items no version trained on, and two versions'
figures on their shared held-out items are comparable.

Pure: the caller stores the assignment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

MIN_STRATUM = 3


def _order_key(task: int, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{task}".encode(), digest_size=8).digest()


def assign_holdout(tasks: Sequence[int], strata: np.ndarray, fraction: float, seed: int,
                   known: Mapping[int, bool]) -> dict[int, bool]:
    """{task: held out?} for every task of `tasks` (with its stratum in `strata`): `known` sides kept, new
    tasks assigned so that each stratum's held-out share approaches `fraction` from below."""
    strata = np.asarray(strata)
    out = {int(t): bool(known[int(t)]) for t in tasks if int(t) in known}
    for stratum in np.unique(strata):
        members = [int(t) for t, s in zip(tasks, strata) if s == stratum]
        want = int(round(fraction * len(members))) if len(members) >= MIN_STRATUM else 0
        held = sum(1 for t in members if out.get(t))
        for task in sorted((t for t in members if t not in out), key=lambda t: _order_key(t, seed)):
            out[task] = held < want
            held += out[task]
    return out


def split_indices(tasks: Sequence[int], sides: Mapping[int, bool]) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions in `tasks` under `sides`."""
    held = np.asarray([bool(sides[int(t)]) for t in tasks], dtype=bool)
    return np.flatnonzero(~held), np.flatnonzero(held)
