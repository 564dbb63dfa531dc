"""Near-duplicate tasks: MinHash over word shingles, candidate pairs from LSH (datasketch).

Pure over its input: the same texts give the same pairs. The estimate is MinHash's Jaccard
similarity of word 3-shingles of the lowercased text, so reordered boilerplate and small edits
still match, while different tasks on one skill (shared vocabulary, different content) do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SHINGLE = 3
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class DuplicatePair:
    kept: str
    removed: str
    similarity: float


def _minhash(text: str) -> MinHash:
    words = _WORD.findall(text.lower())
    shingles = {" ".join(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}
    mh = MinHash(num_perm=NUM_PERM, seed=1)
    for s in shingles:
        mh.update(s.encode())
    return mh


def near_duplicates(items: list[tuple[str, str]], threshold: float = 0.8) -> list[DuplicatePair]:
    """Pairs among ``(key, text)`` items whose estimated Jaccard similarity is ≥ ``threshold``.

    Items earlier in the list win: for each pair the later one is listed as removed (once), so
    removing every ``removed`` key leaves no pair above the threshold among the kept items
    that LSH can see."""
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    hashes: dict[str, MinHash] = {}
    removed: set[str] = set()
    pairs = []
    for key, text in items:
        mh = _minhash(text)
        best = None
        for other in lsh.query(mh):
            similarity = mh.jaccard(hashes[other])
            if similarity >= threshold and (best is None or similarity > best[1]):
                best = (other, similarity)
        if best:
            pairs.append(DuplicatePair(kept=best[0], removed=key, similarity=round(best[1], 4)))
            removed.add(key)
            continue
        lsh.insert(key, mh)
        hashes[key] = mh
    return pairs
