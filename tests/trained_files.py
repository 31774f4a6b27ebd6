"""Damaging a shipped trained part's JSON file (the ranker's, the unit scorer's) the ways a
disk, an editor or an older version can, for the tests of their fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

DAMAGES = ["missing", "garbled", "edited weight", "other features", "no manifest", "wrong length"]


def write_damaged(shipped: Path, path: Path, damage: str, features_key: str) -> None:
    """`path` as `shipped` with `damage` done to it (nothing written for "missing");
    `features_key`: the manifest's list that names what the weights read."""
    if damage == "missing":
        return
    text = shipped.read_text(encoding="utf-8")
    if damage == "garbled":
        path.write_text(text[:500], encoding="utf-8")
        return
    data = json.loads(text)
    if damage == "edited weight":
        data["weights"]["coefficients"][0] += 1.0
    elif damage == "other features":
        data["manifest"][features_key] = data["manifest"][features_key][:-1]
    elif damage == "no manifest":
        del data["manifest"]
    elif damage == "wrong length":
        data["weights"]["coefficients"] = data["weights"]["coefficients"][:-1]
    path.write_text(json.dumps(data), encoding="utf-8")
