"""Nodes that share no disk: each keeps `checkpoint.dir` on its own disk, with its ranks' part of every
checkpoint (training.checkpoint, `node_local`), and `checkpoint.mirror` gathers the parts
(training.mirror).

Whether the nodes share the folder is seen, not configured: rank 0 holds the folder's lock, and every
other node's first rank tries to take the lock of its own `checkpoint.dir`. A resume takes the newest
checkpoint that every node holds complete or can bring from the mirror, so a node replaced with an
empty disk and the nodes that kept theirs start from the same step.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from common.lock import DirectoryLock, LockError, holder_of
from common.objectstore import join
from training import checkpoint
from training.distributed import from_node_leaders, from_rank0, local_rank
from training.mirror import complete_tags, pull

__all__ = ["agreed_checkpoint", "checkpoint_dir_per_node", "node_index"]


def checkpoint_dir_per_node(lock: DirectoryLock) -> bool:
    """Whether every node has the lock's folder on a disk of its own, once rank 0 holds the lock: each
    other node's first rank tries to take it too, and finds rank 0's lock (the folder is shared) or
    takes its own (it is not). An exclusive create and a lock reach the file server itself, where a
    file's mere presence may be seen late by another node (NFS caches a name that was not there). Some
    nodes sharing the folder and some not, or another job holding a node's, is a ValueError on every
    rank."""
    held_by = from_rank0(lambda: holder_of(lock.folder))

    def take_or_find_rank0s() -> bool | None:
        if dist.get_rank() == 0:
            return None
        try:
            lock.acquire()
            return False
        except LockError:
            if holder_of(lock.folder) == held_by:
                return True
            raise

    sees = [shared for shared in from_node_leaders(take_or_find_rank0s) if shared is not None]
    if all(sees):
        return False
    if any(sees):
        lock.release()
        raise ValueError(
            f"checkpoint.dir {lock.folder} is shared by some nodes and not by others: put it on a disk "
            "every node shares, or on each node's own disk"
        )
    return True


def node_index() -> int | None:
    """This node's number (0 for rank 0's), on the node's first rank; None on the other ranks."""
    leaders = from_node_leaders(dist.get_rank)
    return leaders.index(dist.get_rank()) if local_rank() == 0 else None


def agreed_checkpoint(root: Path, mirror: str | None) -> Path | None:
    """The checkpoint every rank resumes from, in its node's `root`: the newest step that each node holds
    complete in its own `root` or finds complete at `mirror`, brought from there to the nodes that lack
    it. None for a new run (no node holds one, the mirror has none); a CheckpointError when the nodes
    have no step in common."""
    remote = from_rank0(lambda: complete_tags(mirror)) if mirror is not None else []
    held = from_node_leaders(lambda: checkpoint.complete_tags(root))
    common = set.intersection(*(set(tags) | set(remote) for tags in held))
    if not common:
        if not remote and not any(held):
            return None
        nodes = "; ".join(f"node {n} holds {', '.join(tags) or 'none'}" for n, tags in enumerate(held))
        where = (
            f"{mirror} has {', '.join(remote) or 'none'}" if mirror is not None else "no checkpoint.mirror"
        )
        raise checkpoint.CheckpointError(
            f"{root}: no checkpoint that every node can resume from ({nodes}; {where}); move the folders "
            "away (or set checkpoint.dir elsewhere) to start a new run"
        )
    tag = max(common)

    def bring() -> None:
        if checkpoint.why_incomplete(root / tag) is None:
            return
        if pull(mirror, tag, root) is None:  # type: ignore[arg-type]  # only the mirror had it
            raise checkpoint.CheckpointError(f"{join(mirror, tag)} changed while it was read; start again")

    from_node_leaders(bring)
    return root / tag
