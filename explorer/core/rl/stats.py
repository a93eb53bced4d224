"""Per-group diversity statistics over the rollouts of one query (what QueryGroup.stats holds).

Computed from the rollouts' token ids and raw log-probabilities directly, with a prefix trie of their own, so the
exporter and the CLI need no tree module. Every value is a float, or None when it is undefined for the group.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Optional, Sequence

import numpy as np

from explorer.core.numbers import common_prefix, mean_std
from explorer.core.types import QueryGroup, Rollout, TokenInfo

Stats = tuple[tuple[str, Optional[float]], ...]

STAT_DESCRIPTIONS = {
    "n_rollouts": "number of rollouts in the group (value rollouts aside: the diversity statistics leave them out)",
    "distinct_responses": "number of distinct response texts",
    "distinct_1": "distinct token ids / all tokens, over all rollouts",
    "distinct_2": "distinct token-id bigrams (within a rollout) / all bigrams",
    "mean_first_divergence": "mean over rollout pairs of the length of their common token prefix",
    "branch_mass_coverage": "mean over branch points of the raw probability mass of the next tokens the rollouts took",
    "n_value_rollouts": "number of value rollouts (Monte-Carlo continuations of a prefix + token; see value_estimates)",
    "mean_reward": "mean of the non-null rewards of the i.i.d. rollouts (branched and cancelled ones left out)",
    "reward_std": "population standard deviation of those rewards",
    "mean_kl": "mean over all tokens of KL(pi || pi_ref) at that position (nats; llama.cpp's 'Mean KLD')",
    "kl_p99": "99th percentile of the per-position KL(pi || pi_ref)",
    "same_top_share": "share of positions where pi and pi_ref have the same most probable token",
    "top_disagreement_share": "share of positions where pi and pi_ref prefer different tokens",
    # the sampler-versus-trainer gap over the tokens the sampler drew (see sampled_tokens), pi the policy that
    # sampled and pi_ref the reference (the trainer's weights, say), r = pi_ref / pi of each sampled token
    "mismatch.n_tokens": "number of sampled tokens the mismatch numbers are over",
    "mismatch.prob_diff_max": "largest |pi - pi_ref| of a sampled token (verl's rollout_probs_diff_max)",
    "mismatch.prob_diff_mean": "mean |pi - pi_ref| of the sampled tokens (verl's rollout_probs_diff_mean)",
    "mismatch.prob_diff_std": "standard deviation (N - 1) of |pi - pi_ref| (verl's rollout_probs_diff_std)",
    "mismatch.prob_pearson": "Pearson correlation of pi and pi_ref over the sampled tokens (verl's "
                             "rollout_actor_probs_pearson_corr)",
    "mismatch.tis_cap": "C of the truncated importance weights w = min(pi_ref / pi, C) (TRL's "
                        "vllm_importance_sampling_cap)",
    "mismatch.tis_clip_fraction": "share of sampled tokens whose pi_ref / pi exceeds C (their weight is cut to C)",
    "mismatch.ess": "effective sample size of the truncated weights, (sum w)^2 / sum w^2, in tokens (verl logs it "
                    "divided by the number of tokens)",
    "mismatch.kl_k1": "Schulman's k1 = -log r, mean per sampled token (unbiased for KL(pi || pi_ref), high variance)",
    "mismatch.kl_k2": "Schulman's k2 = (log r)^2 / 2, mean per sampled token (biased, low variance)",
    "mismatch.kl_k3": "Schulman's k3 = (r - 1) - log r, mean per sampled token (unbiased, low variance; verl's "
                      "low_var_kl)",
    "mismatch.kl_exact": "the exact KL(pi || pi_ref) over the whole vocabulary, mean over the same positions (null "
                         "where the policy's full rows are unknown: a server)",
}


def distinct_n(rollouts: Sequence[Rollout], n: int) -> Optional[float]:
    """Distinct n-grams of token ids / all n-grams, n-grams taken within each rollout; None when there are none."""
    seen = set()
    total = 0
    for r in rollouts:
        ids = r.token_ids
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def mean_first_divergence(rollouts: Sequence[Rollout]) -> Optional[float]:
    """Mean over all pairs of rollouts of their common token-id prefix length; None with fewer than two rollouts."""
    ids = [r.token_ids for r in rollouts]
    pairs = [common_prefix(a, b) for a, b in combinations(ids, 2)]
    return sum(pairs) / len(pairs) if pairs else None


def branch_mass_coverage(rollouts: Sequence[Rollout]) -> Optional[float]:
    """Mean, over branch points, of the summed raw probability of the distinct next tokens the rollouts took there.

    A branch point is a shared prefix after which at least two rollouts take different tokens. At a branch point
    every rollout saw the same distribution, so a token's probability there is exp(its raw logprob) in any rollout
    that took it. 1.0 would mean the rollouts between them took every token the model could have produced.
    None when no two rollouts ever diverge.
    """
    root: dict = {}
    for r in rollouts:
        node = root
        for t in r.tokens:
            entry = node.get(t.id)
            if entry is None:
                entry = node[t.id] = (t.logprob, {})
            node = entry[1]
    coverages = []
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node) >= 2:
            coverages.append(math.fsum(
                math.exp(lp) for lp, _ in node.values() if lp is not None and math.isfinite(lp)))
        stack.extend(child for _, child in node.values())
    return sum(coverages) / len(coverages) if coverages else None


def in_baseline(rollout: Rollout) -> bool:
    """Whether a rollout is one of its group's i.i.d. samples of pi(.|x), the ones GRPO's baseline (reward mean and
    std, advantages) is over: drawn from the prompt (a branch continues another rollout: another distribution; a
    value rollout continues a prefix to estimate its value) and not cut off by a stop."""
    return (rollout.parent_id is None and rollout.value_position is None
            and rollout.finish_reason not in (None, "cancelled"))


def reward_stats(rollouts: Sequence[Rollout]) -> Optional[tuple[float, float]]:
    """(mean, population std) of the non-null rewards of the i.i.d. rollouts (in_baseline), or None when none has
    one."""
    rewards = [r.reward for r in rollouts if r.reward is not None and in_baseline(r)]
    if not rewards:
        return None
    return mean_std(rewards)


# TRL's vllm_importance_sampling_cap was 2.0 (3.0 since its vllm_importance_sampling_mode came): where a trainer cuts
# the weight pi_train / pi_sampler of a token
DEFAULT_TIS_CAP = 2.0
MISMATCH = "mismatch"  # the group's stats hold the mismatch numbers as "mismatch.NAME"; a file nests them
MISMATCH_STATS = tuple(f"{MISMATCH}.{name}" for name in (
    "n_tokens", "prob_diff_max", "prob_diff_mean", "prob_diff_std", "prob_pearson", "tis_cap", "tis_clip_fraction", "ess",
    "kl_k1", "kl_k2", "kl_k3", "kl_exact"))
REFERENCE_STATS = ("mean_kl", "kl_p99", "same_top_share", "top_disagreement_share") + MISMATCH_STATS


def group_stats(group: QueryGroup, tis_cap: float = DEFAULT_TIS_CAP) -> Stats:
    """The group's statistics as (name, value) pairs in STAT_DESCRIPTIONS order; reward ones only when rewarded,
    reference ones only with reference facts (tis_cap: C of the truncated importance weights)."""
    # a value run's continuations estimate values; they are not the group's samples (their diversity is the prefixes')
    rollouts = [r for r in group.rollouts if r.value_position is None]
    n_value = len(group.rollouts) - len(rollouts)
    stats: list[tuple[str, Optional[float]]] = [
        ("n_rollouts", float(len(rollouts))),
        ("distinct_responses", float(len({r.text for r in rollouts}))),
        ("distinct_1", distinct_n(rollouts, 1)),
        ("distinct_2", distinct_n(rollouts, 2)),
        ("mean_first_divergence", mean_first_divergence(rollouts)),
        ("branch_mass_coverage", branch_mass_coverage(rollouts)),
        *((("n_value_rollouts", float(n_value)),) if n_value else ()),
    ]
    rewards = reward_stats(rollouts)
    if rewards is not None:
        stats += [("mean_reward", rewards[0]), ("reward_std", rewards[1])]
    reference = reference_stats(group.rollouts, tis_cap)
    if reference is not None:
        stats += list(reference.items())
    return tuple(stats)


def reference_stats(rollouts: Sequence[Rollout], tis_cap: float = DEFAULT_TIS_CAP
                    ) -> Optional[dict[str, Optional[float]]]:
    """KL and top-token agreement with the reference policy over every token of the rollouts (llama.cpp's KLD
    statistics), and the mismatch numbers over the sampled ones (mismatch_stats); None when the tokens carry no
    reference facts. The KL ones are None where the KL is unknown (a policy on a server)."""
    tokens = [t for r in rollouts for t in r.tokens if t.has_reference]
    if not tokens:
        return None
    known = [t.kl for t in tokens if t.kl is not None]
    mean = p99 = None
    if known:
        kl = np.array(known, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            mean = float(kl.mean())
        # an infinite KL (a sampler reference that excludes tokens) would turn interpolation into inf - inf
        p99 = float(np.percentile(kl, 99, method="linear" if np.isfinite(kl).all() else "higher"))
    compared = [t for t in tokens if t.top and t.ref_top_id is not None]
    same = sum(t.top[0].id == t.ref_top_id for t in compared) / len(compared) if compared else None
    out = {"mean_kl": mean, "kl_p99": p99, "same_top_share": same,
           "top_disagreement_share": None if same is None else 1.0 - same}
    out.update(mismatch_stats(rollouts, tis_cap) or {})
    return out


def sampled_tokens(rollout: Rollout):
    """The tokens of a rollout that its sampler drew: a branch's copied prefix belongs to the rollout it came from,
    and a forced token was chosen, not drawn (a local engine records no sampling logprob for it; a server records
    none for any token, so there only the copied prefix is left out)."""
    tokens = rollout.tokens[rollout.branch_position or 0:] if rollout.parent_id is not None else rollout.tokens
    if any(t.sampling_logprob is not None for t in tokens):
        return [t for t in tokens if t.sampling_logprob is not None]
    return list(tokens)


def mismatch_stats(rollouts: Sequence[Rollout], tis_cap: float = DEFAULT_TIS_CAP
                   ) -> Optional[dict[str, Optional[float]]]:
    """The numbers trainers log for the sampler-versus-trainer gap, over the sampled tokens the reference
    evaluated, pooled (a mean per token, as a trainer's masked mean over its batch), as "mismatch.NAME" keys; None
    without any. pi is the policy that sampled (its raw log-probability), pi_ref the reference, r = pi_ref / pi:

    - |pi - pi_ref|: max, mean, std (N - 1, as torch.std), and the Pearson correlation of pi and pi_ref (verl);
    - truncated importance weights w = min(r, C) (TRL, Yao et al. 2025): the share clipped, the effective sample
      size (sum w)^2 / sum w^2;
    - Schulman's KL estimators on the sampled tokens, k1 = -log r, k2 = (log r)^2 / 2, k3 = (r - 1) - log r, each a
      mean per token, beside the exact KL over the whole vocabulary at the same positions (None where unknown).
    k1 and k3 are unbiased only for tokens drawn from pi itself: a sampler with temperature, top-k, top-p or min-p
    draws from another distribution, and the exact KL shows by how much that moves them."""
    return token_mismatch([t for r in rollouts for t in sampled_tokens(r)], tis_cap)


def token_mismatch(tokens: Sequence[TokenInfo], tis_cap: float = DEFAULT_TIS_CAP
                   ) -> Optional[dict[str, Optional[float]]]:
    """mismatch_stats over these tokens, whatever chose them (a scored response's too); None without reference
    facts."""
    tokens = [t for t in tokens if t.has_reference]
    if not tokens:
        return None
    lp = np.array([t.logprob for t in tokens], dtype=np.float64)
    lq = np.array([t.ref_logprob for t in tokens], dtype=np.float64)
    n = len(tokens)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        p, q = np.exp(lp), np.exp(lq)
        diff = np.abs(p - q)
        log_r = lq - lp  # -inf where pi_ref gives the token 0
        r = np.exp(log_r)
        w = np.minimum(r, tis_cap)
        w_sq = float(np.sum(w * w))
        k3 = np.expm1(log_r) - log_r  # expm1: r - 1 without cancelling where r is close to 1
        pearson = float(np.corrcoef(p, q)[0, 1]) if n > 1 and p.std() > 0 and q.std() > 0 else None
        stats = {
            "n_tokens": float(n),
            "prob_diff_max": float(diff.max()),
            "prob_diff_mean": float(diff.mean()),
            "prob_diff_std": float(diff.std(ddof=1)) if n > 1 else None,
            "prob_pearson": pearson,
            "tis_cap": float(tis_cap),
            "tis_clip_fraction": float(np.count_nonzero(r > tis_cap)) / n,
            "ess": float(np.sum(w)) ** 2 / w_sq if w_sq > 0 else None,
            "kl_k1": float(np.mean(-log_r)),
            "kl_k2": float(np.mean(log_r * log_r)) / 2,
            "kl_k3": float(np.mean(k3)),
            "kl_exact": (None if any(t.kl is None for t in tokens)
                         else float(np.mean(np.array([t.kl for t in tokens], dtype=np.float64)))),
        }
    return {f"{MISMATCH}.{name}": value for name, value in stats.items()}


# Statistics a file holds as objects of their own ("mismatch": {...}, "pass_at_k": {"1": ..., "4": ...}); in the
# flat (name, value) pairs of QueryGroup.stats their names are "mismatch.ess", "pass_at_k.1", ...
NESTED_STATS = (MISMATCH, "pass_at_k")
BOOLEAN_STATS = ("zero_variance",)  # true / false in a file, 1.0 / 0.0 in QueryGroup.stats


def nested_stats(stats) -> dict:
    """A group's (name, value) stats as a file holds them: the nested ones in objects of their own, the boolean ones
    as booleans."""
    out: dict = {}
    for name, value in stats:
        head, dot, rest = name.partition(".")
        if dot and head in NESTED_STATS:
            out.setdefault(head, {})[rest] = value
        elif name in BOOLEAN_STATS and value is not None:
            out[name] = bool(value)
        else:
            out[name] = value
    return out


def flat_stats(stats: dict) -> tuple:
    """The other way (nested_stats of a file's group stats): (name, value) pairs, booleans as 1.0 / 0.0."""
    out = []
    for name, value in stats.items():
        if isinstance(value, dict):
            out += [(f"{name}.{k}", v) for k, v in value.items()]
        elif isinstance(value, bool):
            out.append((name, float(value)))
        else:
            out.append((name, value))
    return tuple(out)