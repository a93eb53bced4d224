"""A reference policy pi_ref beside the policy pi that samples: per-token log-ratios and exact KL(pi || pi_ref).

A reference is another GGUF with the same vocabulary (`PATH`), the exact float copy of the loaded quantized GGUF
(`exact`) or of another GGUF (`exact:PATH`, see exact_copy.py), the same model under another system prompt
(`system:TEXT`), or the same model under another sampler (`temperature:T`, `top_p:P`: the sampler is itself a
transformation of the policy).

A policy on a server sends no full logits rows, only its sampled tokens' logprobs (and a top N). Against it the
reference is a local GGUF of the same weights (`PATH`, or `exact:PATH` for the float copy of one): pi_ref is
teacher-forced on the tokens the server sampled, which gives every token log pi_ref and its log-ratio (and all that
needs only them: importance weights, Schulman's k1..k3), while the KL over the whole vocabulary is unknown (None).

Both policies are evaluated by teacher forcing on the tokens the policy sampled (the rows are those sampling saw: see
llama_backend.N_UBATCH); nothing here changes what is sampled. For every token: log pi_ref(token | prefix), and the
KL over the whole vocabulary computed from the two logits rows in float64. Rows are held for at most ROW_BUDGET tokens
at a time: a long rollout is evaluated in windows, the tokens before a window joining the prefix (the KV cache keeps
them), which gives the same rows as one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from explorer.core.errors import ExplorerError
from explorer.core.engine.kv_cache import Prefix
from explorer.core.engine.sampling import top_indices
from explorer.core.models.discovery import fingerprint, model_label, resolve_model
from explorer.core.types import QueryGroup, ReferenceInfo, RolloutSet, Score, TokenInfo, TopLogprob

ROW_BUDGET = 256  # logits rows per side held at once (256 x 49k vocabulary x 4 bytes = 50 MB)
KL_BLOCK = 32  # rows turned into float64 at once


@dataclass(frozen=True)
class ReferenceSpec:
    """What the user asked for: kind is "model", "exact", "system", "temperature" or "top_p"."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> "ReferenceSpec":
        if text == "exact":
            return cls("exact")
        head, sep, rest = text.partition(":")
        if sep and head == "exact":
            if not rest.strip():
                raise ExplorerError("The reference exact:PATH needs the GGUF whose float copy is the reference")
            return cls("exact", rest.strip())
        if sep and head == "system":
            if not rest.strip():
                raise ExplorerError("The reference system:TEXT needs a system prompt after 'system:'")
            return cls("system", rest)
        if sep and head in ("temperature", "top_p"):
            try:
                number = float(rest)
            except ValueError:
                raise ExplorerError(f"The reference {head}:{rest}: {rest!r} is not a number") from None
            if head == "temperature" and not (0.0 < number <= 100.0 and math.isfinite(number)):
                raise ExplorerError(f"The reference temperature:{rest}: the temperature must be in (0, 100] (a "
                                    "temperature of 0 is a greedy policy, whose KL to any other is infinite)")
            if head == "top_p" and not 0.0 < number <= 1.0:
                raise ExplorerError(f"The reference top_p:{rest}: top-p must be in (0, 1]")
            return cls(head, repr(number))
        if not text:
            raise ExplorerError("A reference needs a GGUF path, 'exact' (or exact:PATH), system:TEXT, temperature:T or "
                                "top_p:P")
        return cls("model", text)


class TokenComparison(NamedTuple):
    # log pi(token) - log pi_ref(token), both from the teacher-forced rows; None without the policy's rows (a server)
    log_ratio: Optional[float]
    kl: Optional[float]  # KL(pi || pi_ref) here, nats, over the whole vocabulary; inf where pi_ref excludes pi's
    ref_top_id: int  # pi_ref's most probable token here
    policy_top_id: int  # -1 without the policy's rows
    ref_top: tuple[tuple[int, float], ...] = ()  # pi_ref's top-N (id, logprob) here, most probable first
    ref_logprob: Optional[float] = None  # log pi_ref(token), given where log_ratio is not


def log_softmax64(rows: np.ndarray) -> np.ndarray:
    x = rows.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def kl_rows(policy_lp: np.ndarray, ref_lp: np.ndarray) -> np.ndarray:
    """Per row, sum_v pi(v) (log pi(v) - log pi_ref(v)); both log-probability arrays (n, V) in float64."""
    p = np.exp(policy_lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0.0, p * (policy_lp - ref_lp), 0.0)  # 0 log 0 = 0; pi_ref = 0 < pi gives inf
    return np.maximum(terms.sum(axis=1), 0.0)  # rounding can leave -1e-18 where the rows are nearly equal


def sampler_logprobs(logits: np.ndarray, temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
    """log-probabilities (float64) of the policy after temperature, then top-p (the smallest set of most probable
    tokens whose mass reaches top_p keeps its renormalised mass; the rest get -inf)."""
    lp = log_softmax64(logits.astype(np.float64) / temperature)
    if top_p >= 1.0:
        return lp
    order = np.argsort(-lp, axis=1, kind="stable")
    sorted_lp = np.take_along_axis(lp, order, axis=1)
    before = np.cumsum(np.exp(sorted_lp), axis=1) - np.exp(sorted_lp)  # mass of the tokens ranked above
    keep_sorted = before < top_p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    kept = np.where(keep, lp, -np.inf)
    kept -= np.log(np.exp(kept).sum(axis=1, keepdims=True))
    return kept


def _log_probs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-probabilities, probabilities) of logits rows in float64: one exp serves both."""
    x = rows.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    e = np.exp(x)
    z = e.sum(axis=1, keepdims=True)
    x -= np.log(z)
    e /= z
    return x, e


def _top_lists(ref_block: np.ndarray, lq: np.ndarray, top_n: int) -> tuple[list, np.ndarray]:
    """pi_ref's top_n (id, logprob) per row and its top token. Its ranking is its logits' (a log-softmax, a
    temperature and a nucleus keep the order): the sampler's own top-N search on the float32 rows, ties to the lower
    id."""
    if top_n <= 0:
        return [()] * len(ref_block), ref_block.argmax(axis=1)
    ids = top_indices(ref_block, top_n)
    values = np.take_along_axis(lq, ids, axis=1)
    return [tuple(zip(r_ids.tolist(), r_vals.tolist())) for r_ids, r_vals in zip(ids, values)], ids[:, 0]


def compare_rows(policy_rows: np.ndarray, ref_rows: Optional[np.ndarray], targets: np.ndarray, top_n: int,
                 temperature: float = 1.0, top_p: float = 1.0) -> list[TokenComparison]:
    """Per row: the log-ratio of the target token, KL(pi || pi_ref) over the whole vocabulary in float64, both top
    tokens and pi_ref's top_n. ref_rows None: pi_ref is the policy's rows under the sampler (temperature, top_p).
    Both evaluation paths (teacher forcing after a run, following a run) call this, so they agree exactly."""
    facts: list[TokenComparison] = []
    transform = temperature != 1.0 or top_p < 1.0
    for a in range(0, len(targets), KL_BLOCK):
        block = policy_rows[a: a + KL_BLOCK]
        lp, p = _log_probs(block)
        if ref_rows is not None:
            ref_block = ref_rows[a: a + KL_BLOCK]
            lq = _log_probs(ref_block)[0]
        else:
            ref_block = block
            lq = sampler_logprobs(block, temperature, top_p) if transform else lp
        # KL = sum_v p (log p - log q), one fused pass per row; a row where p underflows to 0 on a token pi_ref
        # excludes (0 * -inf) is summed again the careful way
        with np.errstate(invalid="ignore"):
            kl = np.einsum("ij,ij->i", p, lp) - np.einsum("ij,ij->i", p, lq)
        bad = ~np.isfinite(kl) & ~np.isposinf(kl)
        if bad.any():
            kl[bad] = kl_rows(lp[bad], lq[bad])
        kl = np.maximum(kl, 0.0)  # rounding can leave -1e-18 where the rows are nearly equal
        tg = targets[a: a + KL_BLOCK]
        rows = np.arange(len(tg))
        with np.errstate(invalid="ignore"):
            ratio = lp[rows, tg] - lq[rows, tg]
        tops, ref_top_ids = _top_lists(ref_block, lq, top_n)
        facts.extend(TokenComparison(float(r), float(k), int(rt), int(pt), top)
                     for r, k, rt, pt, top in zip(ratio, kl, ref_top_ids, block.argmax(axis=1), tops))
    return facts


def reference_facts(ref_rows: np.ndarray, targets: np.ndarray, top_n: int) -> list[TokenComparison]:
    """Per row of pi_ref's logits alone (the policy's rows are unknown: a server's): log pi_ref of the target token,
    pi_ref's top token and its top_n; no log-ratio and no KL here (the caller has the policy's logprob of the
    token)."""
    facts: list[TokenComparison] = []
    for a in range(0, len(targets), KL_BLOCK):
        block = ref_rows[a: a + KL_BLOCK]
        lq = _log_probs(block)[0]
        tg = targets[a: a + KL_BLOCK]
        picked = lq[np.arange(len(tg)), tg]
        tops, top_ids = _top_lists(block, lq, top_n)
        facts.extend(TokenComparison(None, None, int(rt), -1, top, float(lq_t))
                     for lq_t, rt, top in zip(picked, top_ids, tops))
    return facts


# A text that touches many kinds of token (words, numbers, punctuation, whitespace, accents, other scripts, an emoji,
# code): a server's tokenizer and a local GGUF's that split it alike share the vocabulary as far as it can be told
# without the server's list of tokens
VOCABULARY_PROBE = ("The quick brown fox jumps over 13 lazy dogs; naïve café, Ünïcödé — 東京 🙂\n"
                    "\tdef f(x):\n\t\treturn x ** 2  # 3.14159, [a-z]+ 'quoted' \"double\" <html> &amp;")


def vocabulary(model) -> list[bytes]:
    """A llama model's token pieces by id (special tokens included)."""
    return [model.piece(i, special=True) for i in range(model.n_vocab)]


def vocabulary_problem(policy_vocab: Sequence[bytes], ref_vocab: Sequence[bytes], ref_name: str) -> Optional[str]:
    if len(policy_vocab) != len(ref_vocab):
        return (f"{ref_name} has a vocabulary of {len(ref_vocab)} tokens, the policy {len(policy_vocab)}: "
                "log-ratios need the same tokens")
    for i, (a, b) in enumerate(zip(policy_vocab, ref_vocab)):
        if a != b:
            return (f"{ref_name} has another vocabulary: token {i} is {b!r} there and {a!r} in the policy; "
                    "log-ratios need the same tokens")
    return None


class _Window(NamedTuple):
    list_index: int
    start: int  # first token of the list in this window
    end: int


def plan_windows(lengths: Sequence[int], budget: int) -> list[list[_Window]]:
    """Jobs of at most `budget` rows: whole short lists packed together; a longer list alone, in windows."""
    jobs: list[list[_Window]] = []
    cur: list[_Window] = []
    rows = 0
    for i, n in enumerate(lengths):
        if n == 0:
            continue
        if n > budget:
            jobs.extend([_Window(i, a, min(n, a + budget))] for a in range(0, n, budget))
            continue
        if rows + n > budget and cur:
            jobs.append(cur)
            cur, rows = [], 0
        cur.append(_Window(i, 0, n))
        rows += n
    if cur:
        jobs.append(cur)
    return jobs


class ReferencePolicy:
    """pi_ref for one policy engine. `compare` gives per-token facts; `close` frees a reference engine of its own.

    engine_factory(path) opens a reference GGUF (the Engine class); exact_path(gguf_path, fingerprint, progress)
    returns the path of the exact copy of a GGUF (exact_copy.cached_exact_copy)."""

    def __init__(self, spec: ReferenceSpec, policy, engine_factory: Callable, exact_path: Optional[Callable] = None,
                 progress: Optional[Callable[[int, int], None]] = None):
        self.spec = spec
        self.policy = policy
        self.engine = None  # a second engine, for model and exact references
        info = policy.info
        # a policy on a server: only its sampled tokens' logprobs are known (no rows, no teacher forcing of its own)
        self.remote = info.server_url is not None
        if self.remote and (spec.kind not in ("model", "exact") or (spec.kind == "exact" and not spec.value)):
            raise ExplorerError(
                f"{model_label(info.path)} runs on a server, which sends no full rows of logits: its reference is a "
                "local GGUF of the same weights, PATH or exact:PATH (the float copy of that GGUF)"
                + (", not 'exact' alone (the server's file is not here)" if spec.kind == "exact" else ""))
        if spec.kind in ("model", "exact"):
            path = self._reference_path(spec, info, exact_path, progress)
            if not self.remote and Path(path).resolve() == Path(info.path).resolve():
                ref = info  # the policy's own file: its own engine is the reference (log-ratios and KL are 0)
            else:
                self.engine = engine_factory(path)
                try:
                    problem = (self._server_vocabulary_problem(Path(path).name) if self.remote else
                               vocabulary_problem(vocabulary(policy.model), vocabulary(self.engine.model),
                                                  f"the reference {Path(path).name}"))
                    if problem:
                        raise ExplorerError(problem)
                except BaseException:
                    self.engine.close()
                    raise
                ref = self.engine.info
            if spec.kind == "exact":  # the policy as the window names it (its file's), or the GGUF named
                of = model_label(info.path) if not spec.value else Path(spec.value).name
                what = f"exact float copy of {of}" + (f" ({ref.quantization})" if not spec.value else "")
            else:  # the file: two quantizations of one model carry the same name
                what = f"{Path(path).name} ({ref.name}, {ref.quantization or 'unknown type'})"
            self.info = ReferenceInfo(spec.kind, what, ref.fingerprint, path=path,
                                      kl_kind="unavailable" if self.remote else "exact")
        elif spec.kind == "system":
            self.info = ReferenceInfo("system", f"{model_label(info.path)} with system prompt {spec.value!r}",
                                      info.fingerprint, system=spec.value)
        elif spec.kind == "temperature":
            t = float(spec.value)
            self.info = ReferenceInfo("temperature", f"{model_label(info.path)} at temperature {t:g}", info.fingerprint,
                                      temperature=t)
        elif spec.kind == "top_p":
            p = float(spec.value)
            self.info = ReferenceInfo("top_p", f"{model_label(info.path)} under top-p {p:g}", info.fingerprint, top_p=p)
        else:
            raise ExplorerError(f"unknown reference kind {spec.kind!r}")

    @staticmethod
    def _reference_path(spec: ReferenceSpec, info, exact_path, progress) -> str:
        """The GGUF pi_ref runs: the file named, or the exact copy of the file named (or of the policy's own)."""
        if spec.kind == "exact":
            if exact_path is None:
                raise ExplorerError("no place to write the exact copy of the model")
            if not spec.value:
                return str(exact_path(info.path, info.fingerprint, progress))
        named = resolve_model(spec.value) if spec.value == "default" else Path(spec.value).expanduser()
        if not named.is_file():
            raise ExplorerError(f"The reference {spec.value}: no such GGUF file")
        if spec.kind == "exact":
            return str(exact_path(str(named), fingerprint(named, named.stat().st_size), progress))
        return str(named)

    def _server_vocabulary_problem(self, name: str) -> Optional[str]:
        """Whether the server's tokenizer splits a probe text as the reference GGUF does (the server lists no
        vocabulary to compare)."""
        server = list(self.policy.format_prompt(VOCABULARY_PROBE, chat=False)[1])
        local = list(self.engine.format_prompt(VOCABULARY_PROBE, chat=False)[1])
        if server == local:
            return None
        at = next((i for i, (a, b) in enumerate(zip(server, local)) if a != b), min(len(server), len(local)))
        return (f"the reference {name} tokenizes text differently from the server's model (from token {at} of a test "
                f"text on: {server[at:at + 3]} there, {local[at:at + 3]} here): log-ratios need the same tokens")

    @property
    def follows_runs(self) -> bool:
        """Whether it can follow a run as it samples (lockstep): not a server's, whose rows never reach us; its
        rollouts are evaluated after they finish."""
        return not self.remote

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def lockstep(self, top_n: int) -> "LockstepReference":
        """A follower for one run of the policy (Engine.generate / branch follower=): evaluates this reference on
        each step's tokens as they are sampled. Close it after the run. Only where follows_runs."""
        if not self.follows_runs:
            raise RuntimeError("a reference of a server's policy cannot follow its runs")
        return LockstepReference(self, top_n)

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _ref_prefix(self, query: str, chat: bool, policy_prefix: Sequence[int]) -> list[int]:
        if self.spec.kind == "system":
            return list(self.policy.format_prompt(query, chat, self.spec.value)[1])
        return list(policy_prefix)  # another model with the same vocabulary reads the same prompt ids

    def compare(self, query: str, chat: bool, policy_prefix: Sequence[int], id_lists: Sequence[Sequence[int]],
                top_n: int = 0, progress: Optional[Callable[[int, int], None]] = None,
                cancel=None) -> Optional[list[list[TokenComparison]]]:
        """Per list, per token: pi_ref's logprob, KL(pi || pi_ref), both top tokens and pi_ref's top_n.

        progress(tokens done, tokens in all) after every batch; a set `cancel` (threading.Event) ends the work
        between batches and gives None."""
        ref_prefix = self._ref_prefix(query, chat, policy_prefix)
        out: list[list[Optional[TokenComparison]]] = [[None] * len(ids) for ids in id_lists]
        total = sum(len(ids) for ids in id_lists)
        done = 0
        for job in plan_windows([len(ids) for ids in id_lists], ROW_BUDGET):
            if cancel is not None and cancel.is_set():
                return None
            self._compare_job(job, policy_prefix, ref_prefix, id_lists, out, top_n)
            done += sum(w.end - w.start for w in job)
            if progress is not None:
                progress(done, total)
        return out  # type: ignore[return-value]

    def _compare_job(self, job: list[_Window], policy_prefix, ref_prefix, id_lists, out, top_n: int) -> None:
        # one window's list is alone in its job: the tokens before the window extend both prefixes
        first = job[0]
        extra = list(id_lists[first.list_index][: first.start]) if first.start else []
        windows = [list(id_lists[w.list_index][w.start: w.end]) for w in job]
        offsets = np.cumsum([0] + [len(w) for w in windows])
        targets = np.empty(int(offsets[-1]), dtype=np.int64)
        if self.remote:  # pi_ref's rows alone: the server's logprobs of its tokens are in the tokens already
            ref_rows = self._rows(self.engine, list(ref_prefix) + extra, windows, offsets, targets)
            facts = reference_facts(ref_rows, targets, top_n)
        else:
            policy_rows = self._rows(self.policy, list(policy_prefix) + extra, windows, offsets, targets)
            if self.spec.kind in ("temperature", "top_p"):  # the same model's rows under another sampler
                ref_rows = None
            else:
                ref_rows = self._rows(self.engine or self.policy, list(ref_prefix) + extra, windows, offsets)
            facts = compare_rows(policy_rows, ref_rows, targets, top_n, *self._sampler())
        for j, w in enumerate(job):
            out[w.list_index][w.start: w.end] = facts[offsets[j]: offsets[j + 1]]

    @staticmethod
    def _rows(engine, prefix: list[int], windows: list[list[int]], offsets: np.ndarray,
              targets: Optional[np.ndarray] = None) -> np.ndarray:
        """The engine's logits rows for every token of the windows after the prefix, in one array (and the target
        ids into `targets`)."""
        rows_out = np.empty((int(offsets[-1]), engine.info.n_vocab), dtype=np.float32)

        def keep(seqs, positions, target_ids, rows):
            at = offsets[seqs] + positions
            rows_out[at] = rows
            if targets is not None:
                targets[at] = target_ids

        engine.teacher_force(prefix, windows, keep)
        return rows_out

    def _sampler(self) -> tuple[float, float]:
        """(temperature, top-p) of a sampler reference; (1, 1) for the others."""
        t = float(self.spec.value) if self.spec.kind == "temperature" else 1.0
        p = float(self.spec.value) if self.spec.kind == "top_p" else 1.0
        return t, p

    # -- attaching to a rollout set ------------------------------------------------------------------------------
    def annotate_group(self, group: QueryGroup, progress: Optional[Callable[[int, int], None]] = None,
                       cancel=None) -> Optional[QueryGroup]:
        """The group with ref_logprob, kl, ref_top_id and ref_top on every token of its rollouts and scores (None
        when cancelled)."""
        seqs = list(group.rollouts) + list(group.scores)
        annotated = self._annotate(group.query, group.chat, group.prompt_token_ids, seqs, progress, cancel)
        if annotated is None:
            return None
        n = len(group.rollouts)
        return replace(group, rollouts=tuple(annotated[:n]), scores=tuple(annotated[n:]))

    def annotate_set(self, rs: RolloutSet) -> RolloutSet:
        return replace(rs, groups=tuple(self.annotate_group(g) for g in rs.groups), reference_policy=self.info)

    def annotate_scores(self, query: str, chat: bool, prompt_ids: Sequence[int],
                        scores: Sequence[Score]) -> tuple[Score, ...]:
        return tuple(self._annotate(query, chat, prompt_ids, scores))

    def _annotate(self, query, chat, prompt_ids, seqs, progress=None, cancel=None) -> Optional[list]:
        top_n = max((len(t.top) for s in seqs for t in s.tokens), default=0)  # the tokens' own top-N, for both
        facts = self.compare(query, chat, prompt_ids, [s.token_ids for s in seqs], top_n, progress, cancel)
        if facts is None:
            return None
        return [replace(s, tokens=self._annotated_tokens(s.tokens, f)) for s, f in zip(seqs, facts)]

    def _annotated_tokens(self, tokens: Sequence[TokenInfo], facts: Sequence[TokenComparison]) -> tuple[TokenInfo, ...]:
        # log pi_ref = the recorded log pi minus the teacher-forced log-ratio: the two log pi are the same rows'
        # (sampling and teacher forcing agree exactly), and a reference identical to the policy gives a log-ratio of
        # exactly 0
        model = (self.engine or self.policy).model  # the same vocabulary (a server's policy has no model here)
        pieces: dict[int, tuple[str, bytes]] = {}

        def alternative(i: int, lp: float) -> TopLogprob:
            piece = pieces.get(i)
            if piece is None:
                piece = pieces[i] = (model.token_text(i), model.piece(i))
            return TopLogprob(i, piece[0], piece[1], lp)

        return tuple(replace(t, ref_logprob=t.logprob - f.log_ratio if f.log_ratio is not None else f.ref_logprob,
                             kl=f.kl, ref_top_id=f.ref_top_id, ref_top=tuple(alternative(i, lp) for i, lp in f.ref_top))
                     for t, f in zip(tokens, facts))


class LockstepReference:
    """A reference policy evaluated while the policy samples, one decode step at a time.

    The policy's logits rows are at hand in the sampling loop, so the KL needs no second policy pass: per step the
    reference decodes the step's tokens once on a context of its own (StepDecoder; none for a sampler reference,
    whose rows are the policy's), and the facts go into the tokens as they stream. The rows are those teacher
    forcing gives after the run (ReferencePolicy.compare), so both paths give the same facts.
    """

    def __init__(self, reference: ReferencePolicy, top_n: int):
        self.reference = reference
        self.info = reference.info
        self._top_n = top_n
        kind = reference.spec.kind
        # the policy's own file as its reference reads the policy's rows: a context of its own would prefill what
        # the policy's KV cache reused, and llama.cpp's other kernel for it rounds differently (~1e-8 on F32)
        self._own_rows = kind in ("temperature", "top_p") or (kind in ("model", "exact") and reference.engine is None)
        self._decoder = None if self._own_rows else (reference.engine or reference.policy).step_decoder()
        self._rows: dict[int, np.ndarray] = {}  # policy sequence -> pi_ref's logits row for its next token
        self._pos: dict[int, int] = {}  # policy sequence -> position of its next token in the reference's context

    def start(self, units, max_tokens: int, cancel=None) -> bool:
        """A wave begins: units are (GroupHeader, policy prefix ids, policy sequences). False when cancelled."""
        if self._decoder is None:
            return True
        prefixes = []
        for header, prefix, seqs in units:
            prompt = list(header.prompt_token_ids)
            ref_prefix = self.reference._ref_prefix(header.query, header.chat, prompt) + list(prefix[len(prompt):])
            prefixes.append(Prefix(ref_prefix, seqs))
        cells = sum(len(p.tokens) + len(p.seqs) * max_tokens for p in prefixes)
        rows = self._decoder.start(prefixes, cells, cancel)
        if rows is None:
            return False
        self._rows, self._pos = {}, {}
        for p, row in zip(prefixes, rows):
            for seq in p.seqs:
                self._rows[seq] = row
                self._pos[seq] = len(p.tokens)
        return True

    def facts(self, seqs: Sequence[int], logits: np.ndarray, token_ids: np.ndarray) -> list[TokenComparison]:
        """This step's facts: the policy's rows (the sampler leaves them as they are) against pi_ref's rows for
        the same sequences, at the tokens just sampled."""
        ref_rows = None if self._own_rows else np.stack([self._rows[s] for s in seqs])
        t, p = self.reference._sampler()
        return compare_rows(logits, ref_rows, np.asarray(token_ids), self._top_n, t, p)

    def decode(self, tokens: Sequence[int], seqs: Sequence[int]) -> None:
        """The policy decoded these tokens (one per still-active sequence): the reference reads them too."""
        if self._decoder is None:
            return
        rows = self._decoder.decode(tokens, [self._pos[s] for s in seqs], seqs)
        for s, row in zip(seqs, rows):
            self._rows[s] = row
            self._pos[s] += 1

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
