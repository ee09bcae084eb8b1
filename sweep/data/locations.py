"""Moved to `sweep.data.shardset` (ShardSet owns a shard set's locations and its manifest).

A re-export for the modules not yet switched over (sweep/run/spec.py, run/plan.py, run/labels.py
import `expand_shard_urls` and `MANIFEST` from here); delete this file once they import
`sweep.data.shardset`. It reads nothing itself."""

from sweep.data.shardset import MANIFEST, expand_shard_urls

__all__ = ["MANIFEST", "expand_shard_urls"]
