"""The token tree of one query group: a prefix tree over the token ids of its rollouts.

Rollouts are paths from the root (the prompt) through the tree; where they part, the tree branches. Each node holds
the raw model probability pi(token | prefix) of its token, so the tree shows the policy's distribution next to the
empirical one (how many of the sampled rollouts went each way). The top-N alternatives that no rollout took hang off
their parent as "ghost" children; a ghost turns real when a rollout (say a branch that forces it) later takes it.

Nodes live in growable numpy columns (a struct of arrays), not one Python object each, so a 32 x 256-token group with
its ghosts (~40k nodes) costs a few MB and every whole-tree query is a vectorised numpy expression. Adding a token is
O(1) amortised: a dict lookup for the child, a handful of scalar writes, and the ghosts of a new fork point.

Positions: a rollout's token at `position` p (0-based) is a node at depth p; the root sits at depth -1.

Reference facts (a reference policy pi_ref, issue 11) are node columns too: log pi_ref(token | prefix), KL(pi ||
pi_ref) of the distribution the token was drawn from, and both policies' preferred token there. The tree holds them
because its nodes are where the views read them (the tree view colours by them, the side plot plots them). They come
with the tokens when the reference follows a run as it samples, and from the session's rollouts when it evaluates
them after the run, or clears them (take_reference). Every rollout through a node has the same prefix, so any one of
them gives the node its facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from explorer.core.types import QueryGroup, Rollout, RolloutHeader, TokenEvent, TokenInfo

ROOT = 0

# name -> dtype of every per-node column; all grow together.
_COLUMNS = {
    "token_id": np.int64,
    "parent": np.int32,
    "depth": np.int32,
    "logprob": np.float64,  # raw log pi(token | prefix)
    "cum_logprob": np.float64,  # log pi(prefix + token | prompt): the sum of logprobs from the root through this node
    "entropy": np.float32,  # entropy (nats) of the distribution this token was drawn from
    "rank": np.int32,
    "count": np.int32,  # rollouts through this node (0 for a ghost)
    "ghost": np.bool_,
    "owner": np.int32,  # ordinal of the first-registered rollout through it; it picks the node's lane in the layout
    "slot": np.int16,  # 0 for a real node; k for the k-th ghost of its parent (spreads ghosts beside the lane)
    "n_ghosts": np.int16,  # ghosts created under this node so far
    "ghosts_done": np.bool_,  # the top-N alternatives below this node have been turned into ghosts
    "first_child": np.int32,
    "last_child": np.int32,
    "next_sibling": np.int32,
    # reference facts (take_reference); NaN / -1 where no evaluated rollout passes (streaming tokens, ghosts)
    "ref_logprob": np.float64,  # log pi_ref(token | prefix); may be -inf
    "kl": np.float64,  # KL(pi || pi_ref) of the distribution this token was drawn from, nats; may be inf
    "top_id": np.int64,  # pi's most probable token there (TokenInfo.top[0])
    "ref_top_id": np.int64,  # pi_ref's most probable token there
}
_NO_REFERENCE = {"ref_logprob": math.nan, "kl": math.nan, "top_id": -1, "ref_top_id": -1}
_STREAMED: tuple = ()  # a rollout's facts came with its tokens as they streamed (in place of the tuple taken)


@dataclass(frozen=True)
class ChildStat:
    """One child of a node: the model's probability for it against the share of rollouts that went there."""

    node: int
    token_id: int
    text: str
    prob: float  # pi(token | prefix)
    frequency: float  # count / parent count (0 for a ghost)
    count: int
    is_ghost: bool


@dataclass(frozen=True)
class BranchPrefix:
    """Arguments for engine.branch(group, rollout_id, position, forced_token, k).

    The branch keeps the first `position` tokens of rollout `rollout_id`, then forces `forced_token` when it is not
    None, then samples. For a real node at depth d: position = d + 1 (the prefix up to and including the node),
    forced_token = None. For a ghost at depth d: position = d (its parent's prefix), forced_token = the ghost's id.
    """

    rollout_id: str
    position: int
    forced_token: Optional[int]


class TokenTree:
    """Prefix tree over one group's rollouts; feed it tokens as they stream or whole rollouts, in any mix."""

    def __init__(self, group_id: str = "", prompt: str = "", capacity: int = 1024):
        self.group_id = group_id
        self.prompt = prompt
        self.version = 0  # bumped on every change, so a view can skip repaints when nothing happened
        self._n = 0
        self._cols: dict[str, np.ndarray] = {name: np.zeros(max(capacity, 16), dtype) for name, dtype in
                                             _COLUMNS.items()}
        self._texts: list[str] = []
        self._child: dict[tuple[int, int], int] = {}  # (parent, token id) -> node
        self._paths: list[list[int]] = []  # per rollout ordinal: node ids, one per token
        # the same paths as one padded matrix (row = ordinal), grown by doubling: whole-tree passes read it at once
        self._path_matrix = np.zeros((4, 64), np.int64)
        self._rollout_ids: list[str] = []
        self._ordinal: dict[str, int] = {}
        self._parents_of: dict[str, tuple[Optional[str], Optional[int]]] = {}
        # per rollout ordinal: the token tuple its reference facts were taken from (take_reference skips a rollout
        # whose tokens are still that very tuple: the session replaces a rollout's tokens when it annotates them), or
        # _STREAMED for facts that came with its tokens
        self._ref_source: dict[int, tuple[TokenInfo, ...]] = {}
        self._ref_tokens: dict[int, TokenInfo] = {}  # node -> an annotated token there (both top-N lists, for words)
        self._new_node(ROOT, -1, prompt, 0.0, math.nan, 0, ghost=False, owner=0, slot=0, depth=-1)

    # -- columns (read-only views of the live part) ------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def column(self, name: str) -> np.ndarray:
        view = self._cols[name][: self._n]
        view.flags.writeable = False  # a view, not a copy: callers must not edit the tree through it
        return view

    @property
    def n_nodes(self) -> int:
        return self._n

    token_ids = property(lambda self: self.column("token_id"))
    parents = property(lambda self: self.column("parent"))
    depths = property(lambda self: self.column("depth"))
    logprobs = property(lambda self: self.column("logprob"))
    cum_logprobs = property(lambda self: self.column("cum_logprob"))
    entropies = property(lambda self: self.column("entropy"))
    counts = property(lambda self: self.column("count"))
    ghost_mask = property(lambda self: self.column("ghost"))

    ref_logprobs = property(lambda self: self.column("ref_logprob"))
    kls = property(lambda self: self.column("kl"))
    top_ids = property(lambda self: self.column("top_id"))
    ref_top_ids = property(lambda self: self.column("ref_top_id"))

    @property
    def probs(self) -> np.ndarray:
        """pi(token | prefix) of every node (a fresh array; 0 where the logprob is not finite)."""
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(np.exp(self.column("logprob")), nan=0.0)

    def text(self, node: int) -> str:
        return self._texts[node]

    @property
    def rollout_ids(self) -> list[str]:
        """Rollouts in the order they joined; a rollout's index here is its lane in the layout."""
        return list(self._rollout_ids)

    def __contains__(self, rollout_id: str) -> bool:
        return rollout_id in self._ordinal

    def lane(self, rollout_id: str) -> int:
        return self._ordinal[rollout_id]

    def branch_origin(self, rollout_id: str) -> tuple[Optional[str], Optional[int]]:
        """(parent_id, branch_position) of a rollout, as far as the tree was told."""
        return self._parents_of.get(rollout_id, (None, None))

    # -- building ----------------------------------------------------------------------------------------------------
    def _grow(self, need: int) -> None:
        cap = len(self._cols["parent"])
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        for name, col in self._cols.items():
            bigger = np.zeros(new_cap, col.dtype)
            bigger[:cap] = col
            self._cols[name] = bigger

    def _new_node(self, parent: int, token_id: int, text: str, logprob: float, entropy: float, rank: int, *,
                  ghost: bool, owner: int, slot: int, depth: Optional[int] = None) -> int:
        node = self._n
        self._grow(node + 1)
        c = self._cols
        c["token_id"][node] = token_id
        c["parent"][node] = parent
        c["depth"][node] = c["depth"][parent] + 1 if depth is None else depth
        c["logprob"][node] = logprob
        c["cum_logprob"][node] = (c["cum_logprob"][parent] if node != ROOT else 0.0) + logprob
        c["entropy"][node] = entropy
        c["rank"][node] = rank
        c["count"][node] = 0
        c["ghost"][node] = ghost
        c["owner"][node] = owner
        c["slot"][node] = slot
        c["first_child"][node] = -1
        c["last_child"][node] = -1
        c["next_sibling"][node] = -1
        for name, unknown in _NO_REFERENCE.items():
            c[name][node] = unknown
        self._texts.append(text)
        self._n = node + 1
        if node != ROOT:
            self._child[(parent, token_id)] = node
            last = c["last_child"][parent]
            if last < 0:
                c["first_child"][parent] = node
            else:
                c["next_sibling"][last] = node
            c["last_child"][parent] = node
        return node

    def register(self, rollout_id: str, parent_id: Optional[str] = None,
                 branch_position: Optional[int] = None) -> int:
        """Make a rollout known (it gets the next lane); returns its ordinal. Idempotent."""
        ordinal = self._ordinal.get(rollout_id)
        if ordinal is None:
            if not isinstance(rollout_id, str) or not rollout_id:
                raise ValueError(f"a rollout id must be a non-empty string (got {rollout_id!r})")
            ordinal = len(self._rollout_ids)
            self._ordinal[rollout_id] = ordinal
            self._rollout_ids.append(rollout_id)
            self._paths.append([])
            if ordinal >= self._path_matrix.shape[0]:
                self._path_matrix = np.concatenate([self._path_matrix, np.zeros_like(self._path_matrix)], axis=0)
            self._cols["count"][ROOT] += 1
            self.version += 1
        if parent_id is not None or branch_position is not None:
            self._parents_of[rollout_id] = (parent_id, branch_position)
        return ordinal

    def add_token(self, rollout_id: str, position: int, token: TokenInfo) -> int:
        """Add the token a rollout produced at `position`; tokens of one rollout must come in order. Returns the node.

        Re-adding a token that is already there (same position, same id) is a no-op, so a branch's copied prefix or a
        finished rollout can be fed again safely.
        """
        ordinal = self.register(rollout_id)
        path = self._paths[ordinal]
        if position != len(path):
            if 0 <= position < len(path) and self._cols["token_id"][path[position]] == token.id:
                return path[position]
            raise ValueError(
                f"rollout {rollout_id}: token at position {position} does not follow its {len(path)} tokens "
                f"(tokens of a rollout must be added in order)")
        c = self._cols
        parent = path[-1] if path else ROOT
        logprob = float(token.logprob) if token.logprob is not None else math.nan
        node = self._child.get((parent, token.id))
        if node is None:
            node = self._new_node(parent, token.id, token.token, logprob, token.entropy, token.rank,
                                  ghost=False, owner=ordinal, slot=0)
        elif c["ghost"][node]:
            # A rollout took an alternative that was only a ghost so far: it becomes a real node on its lane.
            c["ghost"][node] = False
            c["owner"][node] = ordinal
            c["slot"][node] = 0
            c["rank"][node] = token.rank
            c["entropy"][node] = token.entropy
        elif ordinal < c["owner"][node]:
            c["owner"][node] = ordinal
        c["count"][node] += 1
        if token.has_reference:  # the reference follows the run
            self._take_token_facts(node, token)
            self._ref_source.setdefault(ordinal, _STREAMED)
        if token.top and not c["ghosts_done"][parent]:
            self._add_ghosts(parent, token)
        path.append(node)
        if position >= self._path_matrix.shape[1]:
            self._path_matrix = np.concatenate([self._path_matrix, np.zeros_like(self._path_matrix)], axis=1)
        self._path_matrix[ordinal, position] = node
        self.version += 1
        return node

    def _add_ghosts(self, parent: int, token: TokenInfo) -> None:
        c = self._cols
        owner = int(c["owner"][parent]) if parent != ROOT else 0
        for alt in token.top:
            if (parent, alt.id) in self._child:
                continue
            c["n_ghosts"][parent] += 1
            lp = float(alt.logprob) if alt.logprob is not None else math.nan
            self._new_node(parent, alt.id, alt.token, lp, token.entropy, 0, ghost=True, owner=owner,
                           slot=int(c["n_ghosts"][parent]))
        c["ghosts_done"][parent] = True

    def add_tokens(self, rollout_id: str, start: int, tokens: Iterable[TokenInfo]) -> None:
        for offset, token in enumerate(tokens):
            self.add_token(rollout_id, start + offset, token)

    def add_rollout(self, rollout: Rollout) -> None:
        """Add a whole rollout (or the part of it not yet added, for one that was streaming)."""
        self.register(rollout.id, rollout.parent_id, rollout.branch_position)
        path = self._paths[self._ordinal[rollout.id]]
        have = len(path)
        if have > len(rollout.tokens) or any(
                self._cols["token_id"][n] != t.id for n, t in zip(path, rollout.tokens[:have])):
            raise ValueError(f"rollout {rollout.id} does not match the {have} tokens already in the tree for it")
        self.add_tokens(rollout.id, have, rollout.tokens[have:])

    def add_header(self, header: RolloutHeader) -> None:
        """A rollout about to stream: register it and add the prefix it starts with (a branch's copied tokens)."""
        self.register(header.rollout_id, header.parent_id, header.branch_position)
        self.add_tokens(header.rollout_id, 0, header.prefix)

    def add_event(self, event: TokenEvent) -> int:
        return self.add_token(event.rollout_id, event.position, event.token)

    @classmethod
    def from_group(cls, group: QueryGroup) -> "TokenTree":
        tree = cls(group.id, group.prompt)
        for rollout in group.rollouts:
            tree.add_rollout(rollout)
        tree.take_reference(group.rollouts)  # an opened set's evaluated rollouts bring their facts
        return tree

    # -- reference facts ---------------------------------------------------------------------------------------------
    def take_reference(self, rollouts: Iterable[Rollout]) -> bool:
        """Bring the nodes' reference facts in line with these rollouts (all of the group's, as the session has them
        now): a rollout whose tokens carry facts gives the nodes on its path theirs; one whose facts are gone (the
        reference was cleared or replaced) takes them off again. Cheap to repeat: a rollout whose token tuple is the
        one taken last is skipped, so a call costs only the rollouts annotated since. True when anything changed (the
        tree's version is bumped then, so the views redraw)."""
        rollouts = list(rollouts)
        fresh, lost = [], False
        for r in rollouts:
            ordinal = self._ordinal.get(r.id)
            if ordinal is None:
                continue
            evaluated = bool(r.tokens) and r.tokens[-1].has_reference
            taken = self._ref_source.get(ordinal)
            if evaluated and taken is not r.tokens and not (taken is _STREAMED and r.finish_reason is None):
                fresh.append((ordinal, r.tokens))  # (a streaming rollout's snapshot is a new tuple every time)
            elif not evaluated and taken is not None:
                lost = True
        if lost:  # start over from what the rollouts carry now (a node may be shared with one that lost its facts)
            for name, unknown in _NO_REFERENCE.items():
                self._cols[name][: self._n] = unknown
            self._ref_source.clear()
            self._ref_tokens.clear()
            fresh = [(self._ordinal[r.id], r.tokens) for r in rollouts
                     if r.id in self._ordinal and r.tokens and r.tokens[-1].has_reference]
        for ordinal, tokens in fresh:
            self._take_facts(ordinal, tokens)
        if fresh or lost:
            self.version += 1
        return bool(fresh or lost)

    def _take_token_facts(self, node: int, t: TokenInfo) -> None:
        c = self._cols
        c["ref_logprob"][node] = math.nan if t.ref_logprob is None else t.ref_logprob
        c["kl"][node] = math.nan if t.kl is None else t.kl
        c["top_id"][node] = t.top[0].id if t.top else -1
        c["ref_top_id"][node] = -1 if t.ref_top_id is None else t.ref_top_id
        self._ref_tokens[node] = t

    def _take_facts(self, ordinal: int, tokens: tuple[TokenInfo, ...]) -> None:
        path = np.asarray(self._paths[ordinal][: len(tokens)], dtype=np.int64)
        n = len(path)
        ids = np.fromiter((t.id for t in tokens[:n]), np.int64, n)
        if not np.array_equal(self._cols["token_id"][path], ids):
            return  # not the tokens the tree holds for it (cannot happen through the session): leave its nodes be
        c, head = self._cols, tokens[:n]
        nan = math.nan
        c["ref_logprob"][path] = np.fromiter((nan if t.ref_logprob is None else t.ref_logprob for t in head),
                                             np.float64, n)
        c["kl"][path] = np.fromiter((nan if t.kl is None else t.kl for t in head), np.float64, n)
        c["top_id"][path] = np.fromiter((t.top[0].id if t.top else -1 for t in head), np.int64, n)
        c["ref_top_id"][path] = np.fromiter((-1 if t.ref_top_id is None else t.ref_top_id for t in head),
                                            np.int64, n)
        self._ref_tokens.update(zip(path.tolist(), head))
        self._ref_source[ordinal] = tokens

    @property
    def has_reference(self) -> bool:
        """Whether any node has reference facts (an evaluated rollout passes through it)."""
        return bool(self._ref_source)

    @property
    def log_ratios(self) -> np.ndarray:
        """log pi - log pi_ref of every node's token (NaN where unknown; +-inf where one policy gives it 0)."""
        with np.errstate(invalid="ignore"):
            return self.column("logprob") - self.column("ref_logprob")

    def reference_token(self, node: int) -> Optional[TokenInfo]:
        """An evaluated token at this node (its top and ref_top lists), or None."""
        return self._ref_tokens.get(node)

    def top_disagreement(self) -> np.ndarray:
        """Per node: the two policies prefer different tokens at its position (its token was drawn from a
        distribution whose most probable token differs from pi_ref's). False where unknown."""
        top, ref = self.column("top_id"), self.column("ref_top_id")
        return (top >= 0) & (ref >= 0) & (top != ref)

    def next_top_disagreement(self) -> np.ndarray:
        """Per node: the two policies prefer different next tokens after it (any taken child shows it: they were all
        drawn from the same distribution). At a fork this is where the rollouts part."""
        differs = self.top_disagreement()
        differs[ROOT] = False
        return np.bincount(self.column("parent")[differs], minlength=self._n)[: self._n] > 0

    # -- queries -----------------------------------------------------------------------------------------------------
    def paths(self) -> list[list[int]]:
        """Node ids of every rollout's tokens, in lane order (the live lists: do not modify)."""
        return self._paths

    def _path_of(self, rollout_id: str) -> list[int]:
        try:
            return self._paths[self._ordinal[rollout_id]]
        except KeyError:
            raise KeyError(f"rollout {rollout_id!r} is not in the tree of group {self.group_id!r}") from None

    def path_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(matrix, lengths): row i holds rollout i's node ids (lane order) in its first lengths[i] columns, the rest
        is padding (0, the root). A read-only view, as wide as the longest rollout."""
        lengths = np.fromiter((len(p) for p in self._paths), np.int64, len(self._paths))
        width = int(lengths.max()) if len(lengths) else 0
        view = self._path_matrix[: len(self._paths), :width]
        view.flags.writeable = False
        return view, lengths

    def path(self, rollout_id: str) -> np.ndarray:
        """Node ids of a rollout's tokens, position 0 first (the root is not included)."""
        return np.asarray(self._path_of(rollout_id), dtype=np.int64)

    def rollout_length(self, rollout_id: str) -> int:
        return len(self._path_of(rollout_id))

    def node_at(self, rollout_id: str, position: int) -> int:
        path = self._path_of(rollout_id)
        if not 0 <= position < len(path):
            raise IndexError(f"rollout {rollout_id} has {len(path)} tokens; no position {position}")
        return path[position]

    def parent(self, node: int) -> int:
        return int(self._cols["parent"][node]) if node != ROOT else -1

    def node_for(self, token_ids: Sequence[int]) -> int:
        """The node reached from the root by these token ids (taken or ghost); KeyError when there is none."""
        node = ROOT
        for tid in token_ids:
            found = self._child.get((node, int(tid)))
            if found is None:
                raise KeyError(f"no node for token ids {list(token_ids)} in the tree of group {self.group_id!r}")
            node = found
        return node

    def child_ids(self, node: int) -> list[int]:
        c = self._cols
        out, child = [], int(c["first_child"][node])
        while child >= 0:
            out.append(child)
            child = int(c["next_sibling"][child])
        return out

    def children(self, node: int) -> list[ChildStat]:
        """Children of a node, most probable first, each with its model probability and empirical frequency."""
        c = self._cols
        parent_count = int(c["count"][node])
        stats = []
        for child in self.child_ids(node):
            count = int(c["count"][child])
            lp = float(c["logprob"][child])
            stats.append(ChildStat(
                node=child, token_id=int(c["token_id"][child]), text=self._texts[child],
                prob=math.exp(lp) if math.isfinite(lp) else 0.0,
                frequency=count / parent_count if parent_count else 0.0, count=count, is_ghost=bool(c["ghost"][child])))
        stats.sort(key=lambda s: -s.prob)
        return stats

    def frequency(self, node: int) -> float:
        """Empirical frequency of a node among its parent's rollouts (count / parent count)."""
        if node == ROOT:
            return 1.0
        parent_count = int(self._cols["count"][self._cols["parent"][node]])
        return int(self._cols["count"][node]) / parent_count if parent_count else 0.0

    def real_child_counts(self) -> np.ndarray:
        """Number of taken (non-ghost) children of every node."""
        parents, ghost = self.parents[1:], self.ghost_mask[1:]
        return np.bincount(parents[~ghost], minlength=self._n)[: self._n]

    def branch_points(self) -> np.ndarray:
        """Nodes (the root included) where rollouts part: two or more taken children."""
        return np.flatnonzero(self.real_child_counts() >= 2)

    def rollouts_through(self, node: int) -> list[str]:
        """Ids of the rollouts whose path passes through `node` (all of them for the root, none for a ghost)."""
        if node == ROOT:
            return list(self._rollout_ids)
        depth = int(self._cols["depth"][node])
        return [rid for rid, path in zip(self._rollout_ids, self._paths) if len(path) > depth and path[depth] == node]

    def first_divergence_depth(self, rollout_a: str, rollout_b: str) -> Optional[int]:
        """The first position where the two rollouts' tokens differ.

        When one rollout is a prefix of the other, that is the shorter one's length; None when they are identical.
        """
        a, b = self.path(rollout_a), self.path(rollout_b)
        n = min(len(a), len(b))
        differ = np.flatnonzero(a[:n] != b[:n])
        if differ.size:
            return int(differ[0])
        return None if len(a) == len(b) else n

    def branch_prefix(self, node: int) -> BranchPrefix:
        """Where engine.branch() must start to continue from `node` (see BranchPrefix for the convention)."""
        if not 0 <= node < self._n:
            raise IndexError(f"no node {node} in a tree of {self._n} nodes")
        if not self._rollout_ids:
            raise ValueError("the tree has no rollouts to branch from")
        c = self._cols
        if node == ROOT:
            return BranchPrefix(self._rollout_ids[0], 0, None)
        depth = int(c["depth"][node])
        if c["ghost"][node]:
            parent = int(c["parent"][node])
            through = self.rollouts_through(parent)
            return BranchPrefix(through[0], depth, int(c["token_id"][node]))
        return BranchPrefix(self.rollouts_through(node)[0], depth + 1, None)

    def prefix_text(self, node: int) -> str:
        """The generated text from the prompt down to and including `node` (the prompt itself excluded)."""
        parts, c = [], self._cols
        while node != ROOT:
            parts.append(self._texts[node])
            node = int(c["parent"][node])
        return "".join(reversed(parts))

    def owners(self) -> np.ndarray:
        return self.column("owner")

    def slots(self) -> np.ndarray:
        return self.column("slot")

    def ranks(self) -> np.ndarray:
        return self.column("rank")

    def signature(self) -> tuple:
        """A canonical form independent of insertion order: for equality tests and caches."""
        c = self._cols
        items = []
        for node in range(1, self._n):
            key = []
            walk = node
            while walk != ROOT:
                key.append(int(c["token_id"][walk]))
                walk = int(c["parent"][walk])
            items.append((tuple(reversed(key)), bool(c["ghost"][node]), int(c["count"][node]),
                          round(float(c["logprob"][node]), 9), self._texts[node]))
        paths = tuple((rid, tuple(int(c["token_id"][n]) for n in p)) for rid, p in zip(self._rollout_ids, self._paths))
        return tuple(sorted(items)), paths


def feed_trees(trees: dict[str, TokenTree], event) -> None:
    """Grow the trees of a {group id: TokenTree} map from one engine event (RunStarted, TokenBatch,
    RolloutFinished). Raises ValueError when a finished rollout disagrees with what streamed."""
    from explorer.core.types import RolloutFinished, RunStarted, TokenBatch

    if isinstance(event, TokenBatch):
        for ev in event.events:
            tree = trees.get(ev.group_id)
            if tree is not None:
                tree.add_event(ev)
    elif isinstance(event, RunStarted):
        for header in event.groups:
            if header.id not in trees:
                trees[header.id] = TokenTree(header.id, header.prompt)
        for rh in event.rollouts:
            trees[rh.group_id].add_header(rh)
    elif isinstance(event, RolloutFinished):
        trees.setdefault(event.group_id, TokenTree(event.group_id)).add_rollout(event.rollout)


class TreeForest:
    """One TokenTree per group, fed straight from engine events (RunStarted, TokenBatch, RolloutFinished)."""

    def __init__(self):
        self.trees: dict[str, TokenTree] = {}

    def tree(self, group_id: str) -> Optional[TokenTree]:
        return self.trees.get(group_id)

    def add(self, event) -> None:
        feed_trees(self.trees, event)

    def add_groups(self, groups: Sequence[QueryGroup]) -> None:
        for group in groups:
            self.trees[group.id] = TokenTree.from_group(group)
