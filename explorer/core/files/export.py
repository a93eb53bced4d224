"""RolloutSet <-> JSON (schema v1, resources/rollout-set.schema.json), with atomic writes and careful loading.

Numbers: JSON has no infinities or NaN, so every non-finite number is written as null. Reading back, a null means
"not a finite number" and becomes the value that field can sensibly hold:
  - a token's `logprob` and a top alternative's `logprob`: float('-inf') (probability zero, the only way a raw
    log-probability is non-finite);
  - `sampling_logprob`: None (scored and forced tokens have none);
  - `entropy`: float('nan') (unknown);
  - timings: 0.0 (unknown);
  - reward / advantage: None.
Per rollout and per score, `token_ids`, `logprob`, `mean_logprob` and `perplexity` are derived from `tokens` and
written for readers' convenience; on reading, `tokens` is authoritative (a `token_ids` that disagrees is an error).
Likewise a group's `value_estimates` are derived from its value rollouts (`value_position`) and their rewards; on
reading, the rollouts are authoritative, and an estimate only tags the rollouts it lists that carry no
`value_position` (a file another program wrote), once their tokens are known to start with its prefix + token.
Finite floats round-trip exactly (json writes the shortest repr that reads back to the same float).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from dataclasses import fields, replace
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator, Optional, Union

from explorer.core.errors import RolloutFileError, SamplingParamsError
from explorer.core.numbers import json_number
from explorer.core.rl.stats import BOOLEAN_STATS, NESTED_STATS, flat_stats, nested_stats
from explorer.core.rl.values import value_estimates
from explorer.core.files.set_text import FileReader, SlidingText, open_regular, string_reader
from explorer.core.types import (
    FINISH_REASONS,
    ModelInfo,
    QueryGroup,
    ReferenceInfo,
    Rollout,
    RolloutSet,
    SamplingParams,
    Score,
    Timings,
    TokenInfo,
    TopLogprob,
)

FORMAT = "rollout-explorer/rollout-set"
VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "resources" / "rollout-set.schema.json"

PathLike = Union[str, os.PathLike]

_isfinite = math.isfinite
_NEG_INF = float("-inf")


def now_iso() -> str:
    """The current time as ISO-8601 UTC with a Z, to the second (what created_at holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- writing ---------------------------------------------------------------------------------------------------------


def _top_list(top) -> list[dict]:
    return [{"id": int(a.id), "token": a.token, "bytes": list(a.bytes), "logprob": json_number(a.logprob)} for a in top]


def _token_dict(t: TokenInfo) -> dict:
    d = {
        "id": int(t.id),
        "token": t.token,
        "bytes": list(t.bytes),
        "logprob": json_number(t.logprob),
        "sampling_logprob": json_number(t.sampling_logprob),
        "entropy": json_number(t.entropy),
        "rank": int(t.rank),
        "top_logprobs": _top_list(t.top),
    }
    if t.id_flag is not None:  # only tokens from a server without ids can carry one
        d["id_flag"] = t.id_flag
    if t.has_reference:  # only with a reference policy; an infinite KL is null like any non-finite number, an
        d["ref_logprob"] = json_number(t.ref_logprob)  # unknown one (a policy on a server) is left out
        if t.kl is not None:
            d["kl"] = json_number(t.kl)
        d["ref_top_id"] = t.ref_top_id
        d["ref_top_logprobs"] = _top_list(t.ref_top)
    return d


def _reference_fields(d: dict, seq: Union[Rollout, Score]) -> dict:
    if any(t.has_reference for t in seq.tokens):
        d.update(ref_logprob=json_number(seq.ref_logprob), log_ratio=json_number(seq.log_ratio))
        if all(t.kl is not None for t in seq.tokens):
            d["mean_kl"] = json_number(seq.mean_kl)
    return d


def _sequence_dict(seq: Union[Rollout, Score]) -> dict:
    tokens = seq.tokens
    return {
        "token_ids": [int(t.id) for t in tokens],
        "logprob": json_number(seq.logprob),
        "mean_logprob": json_number(seq.mean_logprob),
        "perplexity": json_number(seq.perplexity),  # an overflowing (infinite) perplexity is null
        "tokens": [_token_dict(t) for t in tokens],
    }


def _sampling_dict(sampling: SamplingParams) -> dict:
    return {f.name: _plain(getattr(sampling, f.name)) for f in fields(SamplingParams)}


def _rollout_dict(r: Rollout) -> dict:
    seq = _sequence_dict(r)
    own = {} if r.sampling is None else {"sampling": _sampling_dict(r.sampling)}  # additive: a branch's own
    d = {
        "id": r.id,
        "index": int(r.index),
        "seed": int(r.seed),
        "text": r.text,
        "token_ids": seq["token_ids"],
        # A rollout still streaming when the set was taken was cut off: in a file it reads as cancelled.
        "finish_reason": r.finish_reason if r.finish_reason is not None else "cancelled",
        "logprob": seq["logprob"],
        "mean_logprob": seq["mean_logprob"],
        "perplexity": seq["perplexity"],
        "parent_id": r.parent_id,
        "branch_position": r.branch_position,
        "tokens": seq["tokens"],
        "reward": json_number(r.reward),
        "advantage": json_number(r.advantage),
        "reward_error": r.reward_error,
        **own,
        # additive: a value rollout, the Monte-Carlo continuation of its first value_position tokens + the next one
        **({} if r.value_position is None else {"value_position": int(r.value_position)}),
    }
    return _reference_fields(d, r)


def _score_dict(s: Score) -> dict:
    seq = _sequence_dict(s)
    return _reference_fields({"response": s.response, **seq}, s)


def _group_dict(g: QueryGroup) -> dict:
    return {
        "id": g.id,
        "query": g.query,
        "chat": bool(g.chat),
        "prompt": g.prompt,
        "prompt_token_ids": [int(i) for i in g.prompt_token_ids],
        "rollouts": [_rollout_dict(r) for r in g.rollouts],
        "scores": [_score_dict(s) for s in g.scores],
        "reference": g.reference_answer,
        "stats": None if g.stats is None else nested_stats((name, json_number(value)) for name, value in g.stats),
        **_estimates_field(g),
        # additive, only for a dataset's prompts: its conversation and its row's other columns
        **({"messages": [{"role": role, "content": content} for role, content in g.messages]} if g.messages else {}),
        **({"columns": dict(g.columns)} if g.columns else {}),
    }


def _estimates_field(g: QueryGroup) -> dict:
    """additive: a group with value rollouts gets its estimates Q(prefix, token)"""
    estimates = value_estimates(g)
    if not estimates:
        return {}
    return {"value_estimates": [{
        "prefix_token_ids": [int(i) for i in e.prefix_token_ids], "token_id": int(e.token_id), "n": int(e.n),
        "mean_reward": json_number(e.mean_reward), "ci_low": json_number(e.ci_low), "ci_high": json_number(e.ci_high),
        "interval": e.interval, "rollout_ids": list(e.rollout_ids)} for e in estimates]}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def to_dict(rs: RolloutSet) -> dict:
    """The JSON-ready dict of schema v1; created_at is set to now when the set has none."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": rs.created_at or now_iso(),
        "model": {f.name: _plain(getattr(rs.model, f.name)) for f in fields(ModelInfo)},
        "sampling": _sampling_dict(rs.sampling),
        "timings": {f.name: json_number(getattr(rs.timings, f.name)) for f in fields(Timings)},
        **({} if rs.reference_policy is None else {"reference_policy": {
            f.name: _plain(getattr(rs.reference_policy, f.name)) for f in fields(ReferenceInfo)}}),
        "groups": [_group_dict(g) for g in rs.groups],
    }


def _json(value: Any) -> str:
    # allow_nan=False: a non-finite number that slipped past json_number must fail here (json_number maps them to null), not produce invalid JSON.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _chunks(rs: RolloutSet) -> Iterator[str]:
    """The JSON text of rs a group at a time: a large set is never one dict tree and one string in memory."""
    head = _json(to_dict(replace(rs, groups=())))
    assert head.endswith('"groups":[]}')  # groups is the last key of to_dict
    yield head[:-2]
    for i, g in enumerate(rs.groups):
        yield ("," if i else "") + _json(_group_dict(g))
    yield "]}\n"


def dumps(rs: RolloutSet) -> str:
    return "".join(_chunks(rs))


def atomic_write(path: PathLike, chunks: Iterable[str]) -> None:
    """Write text to path so that readers see the old file or the whole new one, never a part.

    The text goes to a temporary file in the same directory (os.replace is atomic only within one file system),
    is flushed to disk, then renamed over path. '-' writes to stdout instead.
    """
    if str(path) == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # os.open with mode 0o666 lets the umask decide the permissions, as a plain open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise RolloutFileError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise RolloutFileError(f"cannot write {target}: {e.strerror or e}") from None
        raise


def save(rs: RolloutSet, path: PathLike) -> None:
    """Write rs as schema-v1 JSON, atomically; path '-' means stdout."""
    atomic_write(path, _chunks(rs))


# -- reading ---------------------------------------------------------------------------------------------------------


def _lp(x: Optional[float]) -> float:
    return _NEG_INF if x is None else float(x)


def _piece(pieces: dict, token_id: int, text: str, raw: list) -> tuple[str, bytes]:
    """One shared (text, bytes) per distinct token: a set repeats the same few thousand tokens (and their top
    alternatives) millions of times, and a str and a bytes object each per occurrence were half its memory."""
    key = (token_id, text)
    shared = pieces.get(key)
    data = bytes(raw)
    if shared is not None and shared[1] == data:
        return shared
    pieces[key] = (text, data)
    return text, data


def _token_from(d: dict, pieces: dict) -> TokenInfo:
    entropy = d["entropy"]
    sampling = d["sampling_logprob"]
    token_id = int(d["id"])  # JSON Schema counts 1.0 as an integer; the types want real ints
    text, data = _piece(pieces, token_id, d["token"], d["bytes"])
    return TokenInfo(
        id=token_id,
        token=text,
        bytes=data,
        logprob=_lp(d["logprob"]),
        sampling_logprob=None if sampling is None else float(sampling),
        entropy=math.nan if entropy is None else float(entropy),
        rank=int(d["rank"]),
        top=_top_from(d["top_logprobs"], pieces),
        id_flag=d.get("id_flag"),
        # null: -inf for the logprob, +inf for the KL (JSON has no infinities); no "kl": unknown (a server's policy)
        **({} if "ref_logprob" not in d and "kl" not in d else {
            "ref_logprob": _lp(d.get("ref_logprob")),
            "kl": None if "kl" not in d else math.inf if d["kl"] is None else float(d["kl"]),
            "ref_top_id": None if d.get("ref_top_id") is None else int(d["ref_top_id"]),
            "ref_top": _top_from(d.get("ref_top_logprobs") or (), pieces)}),
    )


def _top_from(alternatives, pieces: dict) -> tuple[TopLogprob, ...]:
    top = []
    for a in alternatives:
        alt_id = int(a["id"])
        alt_text, alt_data = _piece(pieces, alt_id, a["token"], a["bytes"])
        top.append(TopLogprob(alt_id, alt_text, alt_data, _lp(a["logprob"])))
    return tuple(top)


def _tokens_from(d: dict, where: str, pieces: dict) -> tuple[TokenInfo, ...]:
    tokens = tuple(_token_from(t, pieces) for t in d["tokens"])
    ids = d.get("token_ids")
    if ids is not None and [int(i) for i in ids] != [t.id for t in tokens]:
        raise RolloutFileError(f"at {where}: token_ids do not match the ids in tokens")
    return tokens


def _opt_float(x: Optional[float]) -> Optional[float]:
    return None if x is None else float(x)


def _sampling_from(d: dict, where: str) -> SamplingParams:
    fields_d = _known(SamplingParams, d)
    fields_d["stop"] = tuple(fields_d.get("stop", ()))
    sampling = SamplingParams(**fields_d)
    try:
        sampling.validate()
    except SamplingParamsError as e:
        raise RolloutFileError(f"at {where}: {e}") from None
    return sampling


def _rollout_from(d: dict, where: str, pieces: dict) -> Rollout:
    rollout = _rollout_of(d, where, pieces)
    if rollout.value_position is not None and rollout.value_position >= len(rollout.tokens):
        raise ValueError(f"value_position {rollout.value_position} is past the rollout's {len(rollout.tokens)} tokens")
    return rollout


def _rollout_of(d: dict, where: str, pieces: dict) -> Rollout:
    return Rollout(
        id=d["id"],
        index=int(d["index"]),
        seed=int(d["seed"]),
        text=d["text"],
        tokens=_tokens_from(d, where, pieces),
        finish_reason=d["finish_reason"],
        parent_id=d.get("parent_id"),
        branch_position=None if d.get("branch_position") is None else int(d["branch_position"]),
        reward=_opt_float(d.get("reward")),
        advantage=_opt_float(d.get("advantage")),
        reward_error=d.get("reward_error"),
        sampling=None if d.get("sampling") is None else _sampling_from(d["sampling"], f"{where}.sampling"),
        value_position=None if d.get("value_position") is None else int(d["value_position"]),
    )


def _tagged(rollouts: list, estimates: Optional[list], where: str) -> list:
    """The rollouts, those an estimate of the file lists without their own value_position tagged with it."""
    if not estimates:
        return rollouts
    index = {r.id: i for i, r in enumerate(rollouts)}
    out = list(rollouts)
    for i, e in enumerate(estimates):
        key = tuple(e["prefix_token_ids"]) + (e["token_id"],)
        for j, rid in enumerate(e["rollout_ids"]):
            at = f"{where}.value_estimates[{i}].rollout_ids[{j}]"
            if rid not in index:
                raise RolloutFileError(f"at {at}: no rollout {rid!r} in this group")
            r = out[index[rid]]
            if r.token_ids[: len(key)] != key:
                raise RolloutFileError(f"at {at}: rollout {rid}'s tokens do not start with the estimate's prefix + "
                                       "token")
            if r.value_position is None:
                out[index[rid]] = replace(r, value_position=len(key) - 1)
    return out


def _group_from(d: dict, where: str, pieces: dict, rollouts: Optional[list] = None,
                scores: Optional[list] = None) -> QueryGroup:
    """rollouts and scores, when given, are already converted (the file walk does them one by one)."""
    stats = d.get("stats")
    if rollouts is None:
        rollouts = [_rollout_from(r, f"{where}.rollouts[{i}]", pieces) for i, r in enumerate(d["rollouts"])]
    if scores is None:
        scores = [Score(s["response"], _tokens_from(s, f"{where}.scores[{i}]", pieces))
                  for i, s in enumerate(d["scores"])]
    return QueryGroup(
        id=d["id"],
        query=d["query"],
        chat=d["chat"],
        prompt=d["prompt"],
        prompt_token_ids=tuple(int(i) for i in d["prompt_token_ids"]),
        rollouts=tuple(_tagged(rollouts, d.get("value_estimates"), where)),
        scores=tuple(scores),
        reference_answer=d.get("reference"),
        stats=None if stats is None else tuple((k, _opt_float(v)) for k, v in flat_stats(stats)),
        columns=tuple((d.get("columns") or {}).items()),
        messages=tuple((m["role"], m["content"]) for m in d.get("messages") or ()),
    )


def _known(cls, d: dict) -> dict:
    """The fields of dataclass cls present in d: extra fields of newer writers are ignored."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def from_dict(d: dict) -> RolloutSet:
    """Build a RolloutSet from a dict already checked against the schema (load() does that).

    Also checks what the schema cannot say: group and rollout ids are unique, token_ids agree with tokens and the
    sampling values pass SamplingParams.validate(). Raises RolloutFileError.
    """
    try:
        sampling = _sampling_from(d["sampling"], "$.sampling")
        timings = Timings(**{k: 0.0 if v is None else float(v) for k, v in _known(Timings, d["timings"]).items()})
        pieces: dict = {}
        groups = tuple(_group_from(g, f"$.groups[{i}]", pieces) for i, g in enumerate(d["groups"]))
        model = ModelInfo(**_known(ModelInfo, d["model"]))
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise RolloutFileError(f"not a valid rollout set: {detail}") from None
    ids = _IdCheck()
    for i, g in enumerate(groups):
        ids.group(g, f"$.groups[{i}]")
    reference = d.get("reference_policy")
    try:
        reference = None if reference is None else ReferenceInfo(**_known(ReferenceInfo, reference))
    except TypeError as e:
        raise RolloutFileError(f"at $.reference_policy: {e}") from None
    return RolloutSet(model=model, sampling=sampling, groups=groups, timings=timings, created_at=d["created_at"],
                      reference_policy=reference)


def _load_schema() -> dict:
    try:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RolloutFileError(f"the rollout-set schema {SCHEMA_PATH} is missing or broken: {e}") from None


@lru_cache(maxsize=1)
def _validators():
    """(whole-file validator, skeleton validator, single-token validator).

    jsonschema needs ~4 s for a 32 x 256 x top-5 set, nearly all of it in the tokens. So the skeleton validator
    checks everything except the inside of tokens, _token_ok() screens each token with plain Python, and only a
    token that fails the screen goes through the schema's own token definition, which words the error.
    """
    import jsonschema

    full = _load_schema()
    cls = jsonschema.validators.validator_for(full)
    skeleton = json.loads(json.dumps(full))
    skeleton["$defs"]["token"] = {"type": "object"}
    token = {"$schema": full.get("$schema"), "$defs": full["$defs"], "$ref": "#/$defs/token"}
    return cls(full), cls(skeleton), cls(token)


def schema() -> dict:
    """The JSON Schema of rollout sets (resources/rollout-set.schema.json)."""
    return _validators()[0].schema


_MAX_ID = 2**31 - 1  # llama.cpp token ids and ranks are int32 (the schema's bounds)
_MAX_FLOAT = sys.float_info.max


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_id(x: Any) -> bool:
    return type(x) is int and 0 <= x <= _MAX_ID


def _is_logprob(x: Any) -> bool:
    return x is None or ((type(x) is float or type(x) is int) and -_MAX_FLOAT <= x <= 0)


def _is_entropy(x: Any) -> bool:
    return x is None or ((type(x) is float or type(x) is int) and 0 <= x <= _MAX_FLOAT)


def _bytes_ok(b: Any) -> bool:
    return type(b) is list and all(type(v) is int and 0 <= v <= 255 for v in b)


def _token_ok(t: Any) -> bool:
    """True only for tokens the schema certainly accepts (stricter than the schema, never looser)."""
    if type(t) is not dict:
        return False
    try:
        if not (_is_id(t["id"]) and type(t["token"]) is str and _bytes_ok(t["bytes"])
                and _is_logprob(t["logprob"]) and _is_logprob(t["sampling_logprob"]) and _is_entropy(t["entropy"])
                and _is_id(t["rank"]) and t["rank"] >= 1 and type(t["top_logprobs"]) is list
                and _is_logprob(t.get("ref_logprob")) and _is_entropy(t.get("kl"))
                and (t.get("ref_top_id") is None or _is_id(t["ref_top_id"]))):
            return False
        ref_top = t.get("ref_top_logprobs", [])
        if type(ref_top) is not list:
            return False
        for a in t["top_logprobs"] + ref_top:
            if not (type(a) is dict and _is_id(a["id"]) and type(a["token"]) is str
                    and _bytes_ok(a["bytes"]) and _is_logprob(a["logprob"])):
                return False
    except KeyError:
        return False
    return True


def _token_lists(d: dict):
    for i, g in enumerate(d["groups"]):
        for kind in ("rollouts", "scores"):
            for j, seq in enumerate(g[kind]):
                yield f"$.groups[{i}].{kind}[{j}].tokens", seq["tokens"]


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_format(d: Any) -> None:
    """d (a JSON object's members so far) says it is a rollout set of a version this one reads."""
    if not isinstance(d, dict):
        raise RolloutFileError(f"not a rollout set: the top level is a JSON {_json_type(d)}, expected an object")
    if "format" not in d:
        raise RolloutFileError('not a Rollout Explorer rollout set: it has no "format" field')
    if d["format"] != FORMAT:
        raise RolloutFileError(f"not a Rollout Explorer rollout set: its format is {_short(repr(d['format']), 80)}, "
                               f"expected {FORMAT!r}")
    version = d.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise RolloutFileError(f"made by a newer Rollout Explorer (rollout-set version {version}); "
                               f"this one reads version {VERSION}: please update")
    if version != VERSION or isinstance(version, bool):
        raise RolloutFileError(f"unsupported rollout-set version {_short(repr(version), 40)} "
                               f"(this Rollout Explorer reads version {VERSION})")


def validate(d: Any) -> None:
    """Check d is a rollout set this version reads; raise RolloutFileError saying what is wrong and where."""
    _check_format(d)
    from jsonschema.exceptions import best_match

    skeleton = _validators()[1]
    error = best_match(skeleton.iter_errors(d))
    if error is not None:
        raise RolloutFileError(f"schema violation at {error.json_path}: {_short(error.message)}")
    for where, tokens in _token_lists(d):
        _check_tokens(tokens, where)


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


@lru_cache(maxsize=1)
def _part_validators() -> dict:
    """Skeleton validators (tokens screened apart, see _validators) of one rollout, one score, one group."""
    skeleton = _validators()[1].schema
    cls = type(_validators()[1])
    return {name: cls({"$schema": skeleton.get("$schema"), "$defs": skeleton["$defs"], "$ref": f"#/$defs/{name}"})
            for name in ("rollout", "score", "group", "sampling")}


_ID_LISTS = ("token_ids", "prompt_token_ids")


def _ids_ok(ids: Any) -> bool:
    return type(ids) is list and all(type(i) is int and 0 <= i <= _MAX_ID for i in ids)


_MAX_SEED = 2**64 - 1
_FINISH = frozenset(FINISH_REASONS)
_SEQUENCE_NUMBERS = ("logprob", "mean_logprob", "perplexity")
_REFERENCE_NUMBERS = ("ref_logprob", "log_ratio", "mean_kl")
_ROLLOUT_REQUIRED = frozenset(("id", "index", "seed", "text", "token_ids", "finish_reason", "logprob", "mean_logprob",
                               "perplexity", "parent_id", "branch_position", "tokens"))
_SCORE_REQUIRED = frozenset(("response", "token_ids", "logprob", "mean_logprob", "perplexity", "tokens"))
_GROUP_REQUIRED = frozenset(("id", "query", "chat", "prompt", "prompt_token_ids", "rollouts", "scores"))


def _num_ok(x: Any) -> bool:
    return x is None or ((type(x) is float or type(x) is int) and -_MAX_FLOAT <= x <= _MAX_FLOAT)


def _text_or_none(x: Any) -> bool:
    return x is None or type(x) is str


def _rollout_ok(d: dict) -> bool:
    """True only for rollouts (tokens aside) the schema certainly accepts, like _token_ok: jsonschema's $ref walk
    costs ~1 ms a rollout, so it only words the errors of those that fail this."""
    position = d.get("branch_position")
    return (_ROLLOUT_REQUIRED <= d.keys() and type(d["id"]) is str and d["id"] != "" and _is_id(d["index"])
            and type(d["seed"]) is int and 0 <= d["seed"] <= _MAX_SEED and type(d["text"]) is str
            and type(d["finish_reason"]) is str and d["finish_reason"] in _FINISH
            and _text_or_none(d["parent_id"]) and (position is None or _is_id(position))
            and all(_num_ok(d.get(k)) for k in (*_SEQUENCE_NUMBERS, *_REFERENCE_NUMBERS, "reward", "advantage"))
            and _text_or_none(d.get("reward_error")) and d.get("sampling") is None  # a branch's own: the schema
            and (d.get("value_position") is None or _is_id(d["value_position"])))


def _score_ok(d: dict) -> bool:
    return (_SCORE_REQUIRED <= d.keys() and type(d["response"]) is str
            and all(_num_ok(d[k]) for k in _SEQUENCE_NUMBERS) and all(_num_ok(d.get(k)) for k in _REFERENCE_NUMBERS))


def _group_ok(d: dict) -> bool:
    stats = d.get("stats")
    return (_GROUP_REQUIRED <= d.keys() and type(d["id"]) is str and d["id"] != "" and type(d["query"]) is str
            and type(d["chat"]) is bool and type(d["prompt"]) is str and type(d["rollouts"]) is list
            and type(d["scores"]) is list and _text_or_none(d.get("reference"))
            and d.get("value_estimates") is None  # (few: the schema checks them)
            and (stats is None or (type(stats) is dict and all(_stat_ok(k, v) for k, v in stats.items())))
            and d.get("messages") is None and d.get("columns") is None)  # those the schema checks


def _stat_ok(name: str, value: Any) -> bool:
    if name in BOOLEAN_STATS:
        return value is None or type(value) is bool
    if type(value) is dict:
        return name in NESTED_STATS and all(_num_ok(v) for v in value.values())
    return _num_ok(value)


_SCREENS = {"rollout": _rollout_ok, "score": _score_ok, "group": _group_ok, "sampling": lambda d: False}


def token_to_json(t: TokenInfo) -> dict:
    """One token as the file holds it (the journal writes tokens one batch at a time)."""
    return _token_dict(t)


def rollout_to_json(r: Rollout) -> dict:
    return _rollout_dict(r)


def group_to_json(g: QueryGroup) -> dict:
    """One group as the file holds it (a dataset run writes its groups one at a time)."""
    return _group_dict(g)


def json_text(value: Any) -> str:
    """Compact JSON text as the files are written (no NaN or infinity: json_number made them null)."""
    return _json(value)


def group_from_text(text: str, where: str, pieces: dict) -> QueryGroup:
    """One group read back from its JSON text, checked like a group of a file; RolloutFileError with `where`."""
    sliding = SlidingText(string_reader(text), where)
    group = _walk_group(sliding, where, pieces)
    _rest_is_empty(sliding)
    return group


def sampling_to_json(sampling: SamplingParams) -> dict:
    return _sampling_dict(sampling)


def sampling_from_json(d: Any, where: str) -> SamplingParams:
    _check_part(d, "sampling", where)
    return _converted(lambda: _sampling_from(d, where), where)


def token_from_json(d: Any, where: str, pieces: dict) -> TokenInfo:
    """One token read back, checked like a token of a file; RolloutFileError with `where` otherwise."""
    _check_tokens([d], where)
    return _converted(lambda: _token_from(d, pieces), where)


def rollout_from_json(d: Any, where: str, pieces: dict) -> Rollout:
    _check_part(d, "rollout", where)
    return _converted(lambda: _rollout_from(d, where, pieces), where)


def _check_part(obj: Any, kind: str, where: str) -> None:
    from jsonschema.exceptions import best_match

    if type(obj) is dict and _SCREENS[kind](obj) and _ids_ok(obj.get("token_ids", obj.get("prompt_token_ids"))) \
            and type(obj.get("tokens", [])) is list:
        if kind in ("rollout", "score"):
            _check_tokens(obj["tokens"], f"{where}.tokens")
        return
    shallow = obj
    if type(obj) is dict:
        # jsonschema costs ~3 us per array item: id lists that pass a plain check, and tokens (screened below),
        # are left out of its view; a list that fails the check stays in so the schema words the error
        shallow = dict(obj)
        for key in _ID_LISTS:
            if key in shallow and _ids_ok(shallow[key]):
                shallow[key] = []
        if type(shallow.get("tokens")) is list:
            shallow["tokens"] = []
    error = best_match(_part_validators()[kind].iter_errors(shallow))
    if error is not None:
        raise RolloutFileError(f"schema violation at {where}{error.json_path[1:]}: {_short(error.message)}")
    if kind in ("rollout", "score"):
        _check_tokens(obj["tokens"], f"{where}.tokens")


def _check_tokens(tokens: list, where: str) -> None:
    from jsonschema.exceptions import best_match

    for k, t in enumerate(tokens):
        if not _token_ok(t):
            error = best_match(_validators()[2].iter_errors(t))
            if error is not None:
                raise RolloutFileError(f"schema violation at {where}[{k}]{error.json_path[1:]}: "
                                       f"{_short(error.message)}")


class _IdCheck:
    """Group and rollout ids seen so far: each must be unique in the set."""

    def __init__(self):
        self.groups: set[str] = set()
        self.rollouts: set[str] = set()

    def group(self, g: QueryGroup, where: str) -> None:
        if g.id in self.groups:
            raise RolloutFileError(f"at {where}.id: group id {g.id!r} appears twice")
        self.groups.add(g.id)
        for j, r in enumerate(g.rollouts):
            if r.id in self.rollouts:
                raise RolloutFileError(f"at {where}.rollouts[{j}].id: rollout id {r.id!r} appears twice")
            self.rollouts.add(r.id)


def _converted(build: Callable[[], Any], where: str) -> Any:
    """build() on parts the schema already accepted; a value the schema let through that the types refuse is the
    file's fault and is said with its place."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise RolloutFileError(f"at {where}: not a valid rollout set: {detail}") from None


def _walk_group(text: SlidingText, where: str, pieces: dict) -> QueryGroup:
    """One group, its rollouts and scores checked and converted one at a time as they are read."""
    if text.peek() != "{":
        _check_part(text.value(), "group", where)  # not an object: the schema words it
    d: dict = {}
    parts: dict[str, list] = {"rollouts": [], "scores": []}
    for key in text.members():
        if key in parts and text.peek() == "[":
            kind = key[:-1]
            out = parts[key] = []
            for j in text.elements():
                item_where = f"{where}.{key}[{j}]"
                item = text.value()
                _check_part(item, kind, item_where)
                if kind == "rollout":
                    out.append(_converted(lambda: _rollout_from(item, item_where, pieces), item_where))
                else:
                    out.append(_converted(lambda: Score(item["response"], _tokens_from(item, item_where, pieces)),
                                          item_where))
            d[key] = []  # the group's own check below sees an (empty) array there
        else:
            d[key] = text.value()
    _check_part(d, "group", where)
    return _converted(lambda: _group_from(d, where, pieces, parts["rollouts"], parts["scores"]), where)


def _walk(text: SlidingText) -> Generator[QueryGroup, None, RolloutSet]:
    """Yields each group of the set in text as soon as it is read and checked; returns the set without groups."""
    c = text.peek()
    if not c:
        raise RolloutFileError(f"{text.source} is empty, expected a rollout-set JSON object")
    if c != "{":
        whole = text.value()
        _rest_is_empty(text)
        validate(whole)  # not an object: validate() says so
    top: dict = {}
    streamed = False
    pieces: dict = {}
    for key in text.members():
        if key == "groups" and "format" in top and "version" in top and text.peek() == "[":
            _check_format(top)  # before reading what may be hundreds of MB of something else
            ids = _IdCheck()
            for i in text.elements():
                group = _walk_group(text, f"$.groups[{i}]", pieces)
                ids.group(group, f"$.groups[{i}]")
                yield group
            top[key] = []
            streamed = True
        else:
            # a writer that puts "groups" before "format" gets the plain path: whole dicts, then validate
            top[key] = text.value()
    _rest_is_empty(text)
    validate(top)
    rs = from_dict(top)
    if not streamed:
        yield from rs.groups
    return replace(rs, groups=())


def _rest_is_empty(text: SlidingText) -> None:
    if text.peek():
        raise text.malformed("Extra data", text.pos)


def loads(text: str, source: str = "<string>") -> RolloutSet:
    """Parse and validate rollout-set JSON text; source names it in error messages."""
    try:
        return _collect(_walk(SlidingText(string_reader(text.removeprefix("\ufeff")), source)))
    except RolloutFileError as e:
        message = str(e)
        raise RolloutFileError(message if message.startswith(source) else f"{source}: {message}") from None


def _read_file(path: PathLike, progress, cancel) -> Generator[QueryGroup, None, RolloutSet]:
    if str(path) == "-":
        return (yield from _walk(SlidingText(sys.stdin.read, "<stdin>", cancel)))
    handle, size = open_regular(path)
    with handle:
        text = SlidingText(FileReader(handle, str(path), size, progress), str(path), cancel)
        try:
            return (yield from _walk(text))
        except RolloutFileError as e:
            message = str(e)
            raise RolloutFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
        except OSError as e:
            raise RolloutFileError(f"cannot read {path}: {e.strerror or e}") from None


def _collect(walk: Generator[QueryGroup, None, RolloutSet]) -> RolloutSet:
    groups = []
    while True:
        try:
            groups.append(next(walk))
        except StopIteration as done:
            return replace(done.value, groups=tuple(groups))


def load(path: PathLike, progress: Optional[Callable[[int, int], None]] = None, cancel=None) -> RolloutSet:
    """Read and validate a rollout-set file ('-' reads stdin). Raises RolloutFileError with a one-line reason.

    The file is read in chunks and each rollout is checked and converted as it is read: peak memory is the set's
    own objects plus one rollout's parse (see BENCHMARKS.md). progress(bytes_read, file_size) is called after
    every chunk; cancel (a threading.Event) stops the read at the next chunk with LoadCancelled. Safe to call on a
    worker thread: nothing here touches shared state.
    """
    return _collect(_read_file(path, progress, cancel))


def walk_set(path: PathLike, progress: Optional[Callable[[int, int], None]] = None,
             cancel=None) -> Generator[QueryGroup, None, RolloutSet]:
    """iter_groups that also returns the set without its groups (its model, sampling, timings) once the whole file
    is read and checked: `rs = yield from walk_set(path)`."""
    return (yield from _read_file(path, progress, cancel))


def iter_groups(path: PathLike, progress: Optional[Callable[[int, int], None]] = None,
                cancel=None) -> Iterator[QueryGroup]:
    """The groups of a rollout-set file, each yielded once read (memory: one group); the whole file is checked.

    A RolloutFileError for a later part of the file may follow groups already yielded: a consumer that writes as
    it goes must write atomically (atomic_write does), so a bad file leaves nothing behind.
    """
    yield from _read_file(path, progress, cancel)
