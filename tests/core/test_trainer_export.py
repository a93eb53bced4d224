"""The trainer export's rows: the prompt in the dataset's form, the dataset's columns, verl's own."""

from __future__ import annotations

from dataclasses import replace

from fake_engine import FakeEngine

from explorer.core.files.trainer_export import records
from explorer.core.rl.outcomes import scored_group
from explorer.core.session import Session
from explorer.core.types import Query, SamplingParams


def _group(query: Query):
    engine = FakeEngine("fake:m")
    params = SamplingParams(max_tokens=3)
    session = Session(engine.info, params).extend(engine.generate([query], 2, params))
    return scored_group(session.group("q0"), lambda q, r, a: float(len(r) % 2))


def test_a_text_prompt_stays_text_and_the_columns_follow():
    g = _group(Query("2+2?", "4", (("solution", "4"), ("reward", "theirs"))))
    warnings = []
    rows = list(records([g], "trl", warnings.append))
    assert [r["prompt"] for r in rows] == ["2+2?", "2+2?"]
    assert rows[1]["completion"] == g.rollouts[1].text and rows[1]["reward"] == g.rollouts[1].reward
    assert rows[0]["solution"] == "4" and rows[0]["reward"] != "theirs"  # the export's own column wins
    assert warnings == ["the dataset's column 'reward' is left out: the export has a column of that name"]
    assert rows[0]["token_logprobs"] == [t.logprob for t in g.rollouts[0].tokens]
    assert "ref_logprobs" not in rows[0]


def test_verl_keeps_the_datasets_own_fields():
    g = _group(Query("2+3?", "5", (("data_source", "gsm8k"), ("ability", "math"),
                                   ("reward_model", {"style": "rule", "ground_truth": ["5", "five"]}),
                                   ("extra_info", {"split": "test"})), (("user", "2+3?"),)))
    warnings = []
    (row, _) = records([g], "verl", warnings.append)
    assert (row["data_source"], row["ability"]) == ("gsm8k", "math")
    assert row["reward_model"] == {"style": "rule", "ground_truth": ["5", "five"]}
    assert row["extra_info"] == {"split": "test", "group_id": "q0", "rollout_id": "q0.r0", "index": 0}
    assert row["prompt"] == [{"role": "user", "content": "2+3?"}] and row["response"] == g.rollouts[0].text
    assert warnings == []


def test_reference_logprobs_come_with_a_reference_policy():
    g = _group(Query("x"))
    tokens = tuple(replace(t, ref_logprob=-1.5, kl=0.1) for t in g.rollouts[0].tokens)
    g = replace(g, rollouts=(replace(g.rollouts[0], tokens=tokens),) + g.rollouts[1:])
    rows = list(records([g], "trl"))
    assert rows[0]["ref_logprobs"] == [-1.5] * len(tokens)
