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
Finite floats round-trip exactly (json writes the shortest repr that reads back to the same float).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from dataclasses import fields
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .errors import RolloutFileError
from .types import (
    ModelInfo,
    QueryGroup,
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
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "resources" / "rollout-set.schema.json"

PathLike = Union[str, os.PathLike]

_isfinite = math.isfinite
_NEG_INF = float("-inf")


def now_iso() -> str:
    """The current time as ISO-8601 UTC with a Z, to the second (what created_at holds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- writing ---------------------------------------------------------------------------------------------------------


def _num(x: Optional[float]) -> Optional[float]:
    if x is None:
        return None
    x = float(x)  # numpy scalars are not JSON-serialisable; float() makes them plain
    return x if _isfinite(x) else None


def _token_dict(t: TokenInfo) -> dict:
    return {
        "id": int(t.id),
        "token": t.token,
        "bytes": list(t.bytes),
        "logprob": _num(t.logprob),
        "sampling_logprob": _num(t.sampling_logprob),
        "entropy": _num(t.entropy),
        "rank": int(t.rank),
        "top_logprobs": [
            {"id": int(a.id), "token": a.token, "bytes": list(a.bytes), "logprob": _num(a.logprob)} for a in t.top
        ],
    }


def _sequence_dict(seq: Union[Rollout, Score]) -> dict:
    tokens = seq.tokens
    total = math.fsum(t.logprob for t in tokens) if tokens else 0.0
    mean = total / len(tokens) if tokens else None
    if mean is None or not _isfinite(mean):
        ppl = None
    else:
        ppl = math.exp(-mean) if -mean < 709.0 else None  # exp overflows past ~709: infinite perplexity -> null
    return {
        "token_ids": [int(t.id) for t in tokens],
        "logprob": _num(total),
        "mean_logprob": _num(mean),
        "perplexity": _num(ppl),
        "tokens": [_token_dict(t) for t in tokens],
    }


def _rollout_dict(r: Rollout) -> dict:
    seq = _sequence_dict(r)
    return {
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
        "reward": _num(r.reward),
        "advantage": _num(r.advantage),
        "reward_error": r.reward_error,
    }


def _score_dict(s: Score) -> dict:
    seq = _sequence_dict(s)
    return {"response": s.response, **seq}


def _group_dict(g: QueryGroup) -> dict:
    return {
        "id": g.id,
        "query": g.query,
        "chat": bool(g.chat),
        "prompt": g.prompt,
        "prompt_token_ids": [int(i) for i in g.prompt_token_ids],
        "rollouts": [_rollout_dict(r) for r in g.rollouts],
        "scores": [_score_dict(s) for s in g.scores],
        "reference": g.reference,
        "stats": None if g.stats is None else {name: _num(value) for name, value in g.stats},
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return _num(value)
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
        "sampling": {f.name: _plain(getattr(rs.sampling, f.name)) for f in fields(SamplingParams)},
        "timings": {f.name: _num(getattr(rs.timings, f.name)) for f in fields(Timings)},
        "groups": [_group_dict(g) for g in rs.groups],
    }


def dumps(rs: RolloutSet) -> str:
    # allow_nan=False: a non-finite number that slipped past _num must fail here, not produce invalid JSON.
    return json.dumps(to_dict(rs), ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


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
    atomic_write(path, [dumps(rs)])


# -- reading ---------------------------------------------------------------------------------------------------------


def _lp(x: Optional[float]) -> float:
    return _NEG_INF if x is None else float(x)


def _token_from(d: dict) -> TokenInfo:
    entropy = d["entropy"]
    sampling = d["sampling_logprob"]
    return TokenInfo(
        id=int(d["id"]),  # JSON Schema counts 1.0 as an integer; the types want real ints
        token=d["token"],
        bytes=bytes(d["bytes"]),
        logprob=_lp(d["logprob"]),
        sampling_logprob=None if sampling is None else float(sampling),
        entropy=math.nan if entropy is None else float(entropy),
        rank=int(d["rank"]),
        top=tuple(TopLogprob(int(a["id"]), a["token"], bytes(a["bytes"]), _lp(a["logprob"])) for a in d["top_logprobs"]),
    )


def _tokens_from(d: dict, where: str) -> tuple[TokenInfo, ...]:
    tokens = tuple(_token_from(t) for t in d["tokens"])
    ids = d.get("token_ids")
    if ids is not None and [int(i) for i in ids] != [t.id for t in tokens]:
        raise RolloutFileError(f"at {where}: token_ids do not match the ids in tokens")
    return tokens


def _opt_float(x: Optional[float]) -> Optional[float]:
    return None if x is None else float(x)


def _rollout_from(d: dict, where: str) -> Rollout:
    return Rollout(
        id=d["id"],
        index=int(d["index"]),
        seed=int(d["seed"]),
        text=d["text"],
        tokens=_tokens_from(d, where),
        finish_reason=d["finish_reason"],
        parent_id=d.get("parent_id"),
        branch_position=None if d.get("branch_position") is None else int(d["branch_position"]),
        reward=_opt_float(d.get("reward")),
        advantage=_opt_float(d.get("advantage")),
        reward_error=d.get("reward_error"),
    )


def _group_from(d: dict, where: str) -> QueryGroup:
    stats = d.get("stats")
    return QueryGroup(
        id=d["id"],
        query=d["query"],
        chat=d["chat"],
        prompt=d["prompt"],
        prompt_token_ids=tuple(int(i) for i in d["prompt_token_ids"]),
        rollouts=tuple(_rollout_from(r, f"{where}.rollouts[{i}]") for i, r in enumerate(d["rollouts"])),
        scores=tuple(Score(s["response"], _tokens_from(s, f"{where}.scores[{i}]")) for i, s in enumerate(d["scores"])),
        reference=d.get("reference"),
        stats=None if stats is None else tuple((k, _opt_float(v)) for k, v in stats.items()),
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
        sampling_d = _known(SamplingParams, d["sampling"])
        sampling_d["stop"] = tuple(sampling_d.get("stop", ()))
        sampling = SamplingParams(**sampling_d)
        try:
            sampling.validate()
        except ValueError as e:
            raise RolloutFileError(f"at $.sampling: {e}") from None
        timings = Timings(**{k: 0.0 if v is None else float(v) for k, v in _known(Timings, d["timings"]).items()})
        groups = tuple(_group_from(g, f"$.groups[{i}]") for i, g in enumerate(d["groups"]))
        model = ModelInfo(**_known(ModelInfo, d["model"]))
    except (KeyError, TypeError, ValueError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise RolloutFileError(f"not a valid rollout set: {detail}") from None
    seen_groups: set[str] = set()
    seen_rollouts: set[str] = set()
    for i, g in enumerate(groups):
        if g.id in seen_groups:
            raise RolloutFileError(f"at $.groups[{i}].id: group id {g.id!r} appears twice")
        seen_groups.add(g.id)
        for j, r in enumerate(g.rollouts):
            if r.id in seen_rollouts:
                raise RolloutFileError(f"at $.groups[{i}].rollouts[{j}].id: rollout id {r.id!r} appears twice")
            seen_rollouts.add(r.id)
    return RolloutSet(model=model, sampling=sampling, groups=groups, timings=timings, created_at=d["created_at"])


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


def _is_int(x: Any) -> bool:
    return type(x) is int


def _is_num(x: Any) -> bool:
    return x is None or type(x) is float or type(x) is int


def _bytes_ok(b: Any) -> bool:
    return type(b) is list and all(type(v) is int and 0 <= v <= 255 for v in b)


def _token_ok(t: Any) -> bool:
    """True only for tokens the schema certainly accepts (stricter than the schema, never looser)."""
    if type(t) is not dict:
        return False
    try:
        if not (_is_int(t["id"]) and t["id"] >= 0 and type(t["token"]) is str and _bytes_ok(t["bytes"])
                and _is_num(t["logprob"]) and _is_num(t["sampling_logprob"]) and _is_num(t["entropy"])
                and _is_int(t["rank"]) and t["rank"] >= 1 and type(t["top_logprobs"]) is list):
            return False
        for a in t["top_logprobs"]:
            if not (type(a) is dict and _is_int(a["id"]) and a["id"] >= 0 and type(a["token"]) is str
                    and _bytes_ok(a["bytes"]) and _is_num(a["logprob"])):
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


def validate(d: Any) -> None:
    """Check d is a rollout set this version reads; raise RolloutFileError saying what is wrong and where."""
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
    from jsonschema.exceptions import best_match

    _, skeleton, token = _validators()
    error = best_match(skeleton.iter_errors(d))
    if error is not None:
        raise RolloutFileError(f"schema violation at {error.json_path}: {_short(error.message)}")
    for where, tokens in _token_lists(d):
        for k, t in enumerate(tokens):
            if not _token_ok(t):
                error = best_match(token.iter_errors(t))
                if error is not None:
                    raise RolloutFileError(f"schema violation at {where}[{k}]{error.json_path[1:]}: "
                                           f"{_short(error.message)}")


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _read_text(path: PathLike) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RolloutFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RolloutFileError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def loads(text: str, source: str = "<string>") -> RolloutSet:
    """Parse and validate rollout-set JSON text; source names it in error messages."""
    if not text.strip():
        raise RolloutFileError(f"{source} is empty, expected a rollout-set JSON object")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise RolloutFileError(f"{source}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise RolloutFileError(f"{source}: malformed JSON: nested too deeply") from None
    try:
        validate(d)
        return from_dict(d)
    except RolloutFileError as e:
        raise RolloutFileError(f"{source}: {e}") from None


def load(path: PathLike) -> RolloutSet:
    """Read and validate a rollout-set file ('-' reads stdin). Raises RolloutFileError with a one-line reason."""
    return loads(_read_text(path), "<stdin>" if str(path) == "-" else str(path))
