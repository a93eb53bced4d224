"""The Session: a run's state in one Qt-free owner, fed by the scripted fake engine's events."""

from __future__ import annotations

import json

from fake_engine import FakeEngine

from explorer.core.files import export
from explorer.core.rl.rewards import load_reward
from explorer.core.session import LOCAL_RUN, Session
from explorer.core.types import SamplingParams

GENERATE = SamplingParams(temperature=1.0, max_tokens=12, seed=5)
BRANCH = SamplingParams(temperature=0.3, top_k=7, max_tokens=6, seed=900)


def generate_then_branch(k: int = 3, branch_k: int = 2) -> Session:
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    session.accept(1)
    session.feed(1, engine.generate(["Which is the largest ocean?"], k, GENERATE))
    session.accept(2)
    group = session.group("q0")
    session.feed(2, engine.branch(group, "q0.r1", 2, None, branch_k, BRANCH))
    return session


def test_branch_rollouts_carry_the_sampling_that_drew_them_through_a_file():
    session = generate_then_branch()
    saved = session.rollout_set()
    assert saved.sampling == GENERATE  # the set's parameters stay the generate's, a branch does not overwrite them
    own = {r.id: r.sampling for r in saved.groups[0].rollouts}
    assert own == {"q0.r0": None, "q0.r1": None, "q0.r2": None, "q0.r3": BRANCH, "q0.r4": BRANCH}
    assert [r.seed for r in saved.groups[0].rollouts][3:] == [BRANCH.seed + 3, BRANCH.seed + 4]
    text = export.dumps(saved)
    loaded = export.loads(text)
    assert loaded.groups == saved.groups
    written = {r["id"]: r.get("sampling") for r in json.loads(text)["groups"][0]["rollouts"]}
    assert written["q0.r3"]["temperature"] == BRANCH.temperature and written["q0.r3"]["top_k"] == BRANCH.top_k
    assert written["q0.r0"] is None  # drawn with the set's parameters: not repeated per rollout


def test_each_run_keeps_its_own_progress_and_timings():
    session = generate_then_branch(k=3, branch_k=2)
    generate, branch = session.runs
    assert (generate.is_branch, branch.is_branch) == (False, True)
    assert generate.total_tokens == 3 * GENERATE.max_tokens and branch.total_tokens == 2 * BRANCH.max_tokens
    streamed = {rid: len(session.rollout(rid).tokens) for rid in ("q0.r3", "q0.r4")}
    prefix = 2
    assert branch.tokens_done == sum(n - prefix for n in streamed.values())  # the branch's own tokens only
    assert generate.tokens_done == sum(len(session.rollout(f"q0.r{i}").tokens) for i in range(3))
    assert session.tokens_done == branch.tokens_done and session.total_tokens == branch.total_tokens
    assert branch.rollout_ids == ["q0.r3", "q0.r4"] and branch.sampling == BRANCH
    assert session.timings == generate.timings  # the set's timings are the generate's, not the branch's


def test_events_of_a_run_not_accepted_are_dropped():
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    assert not session.feed(7, engine.generate(["q"], 2, GENERATE)) and session.group_ids == []
    session.accept(8)
    changes = session.feed(8, engine.generate(["q"], 2, GENERATE))
    assert changes.new_groups == ("q0",) and changes.finished_groups == ("q0",)
    assert len(session.trees["q0"].paths()) == 2  # the group's tree was fed the same events


def test_text_deltas_are_one_per_token():
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    events = list(engine.generate(["q"], 2, GENERATE))
    session.extend(e for e in events if not hasattr(e, "rollout"))  # streamed only: no finished rollout swapped in
    finished = {e.rollout.id: e.rollout for e in events if hasattr(e, "rollout")}
    for live in session.live_rollouts("q0"):
        assert len(live.deltas) == len(live.tokens) > 0
        assert "".join(live.deltas) == live.text
        assert tuple(live.tokens) == finished[live.id].tokens[: len(live.tokens)]


def test_reward_is_applied_when_a_group_finishes_and_again_when_changed():
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    length = load_reward("length")
    session.choose_reward(length, divide_by_std=False)
    changes = session.feed(LOCAL_RUN, engine.generate(["q"], 3, GENERATE))
    assert changes.rewarded_groups == ("q0",)
    rewards = [r.reward for r in session.group("q0").rollouts]
    assert rewards == [-len(r.text.strip()) / 100 for r in session.group("q0").rollouts]
    assert session.set_reward(None) == ["q0"]
    assert all(r.reward is None for r in session.group("q0").rollouts) and session.group("q0").stats is not None


def test_can_branch_names_why_not():
    session = generate_then_branch()
    other = FakeEngine("fake:other").info
    assert session.can_branch("q0", session.model) is None
    assert "another model" in session.can_branch("q0", other)
    assert session.can_branch("q0", None) and session.can_branch("q9", session.model)


def test_from_set_keeps_the_source_scores_and_trees():
    saved = generate_then_branch().rollout_set()
    opened = Session.from_set(saved, "set.json")
    assert opened.source == "set.json" and opened.groups() == saved.groups and set(opened.trees) == {"q0"}
    assert opened.timings == saved.timings and not opened.running


# -- a reference policy's facts ---------------------------------------------------------------------------------------
def _evaluated(group, kl: float):
    """The group as a reference evaluation returns it: every token with ref facts (log-ratio = kl, for the test)."""
    from dataclasses import replace

    def facts(seq):
        return replace(seq, tokens=tuple(replace(t, ref_logprob=t.logprob - kl, kl=kl, ref_top_id=t.top[0].id, ref_top=t.top)
                                         for t in seq.tokens))

    return replace(group, rollouts=tuple(facts(r) for r in group.rollouts),
                   scores=tuple(facts(s) for s in group.scores))


def _reference(name: str):
    from explorer.core.types import ReferenceInfo

    return ReferenceInfo("temperature", f"fake at {name}", "fp", temperature=float(name))


def test_annotating_takes_the_tokens_only_and_refreshes_the_reference_stats():
    session = generate_then_branch(k=3, branch_k=1)
    session.set_reward(load_reward("length"), True)
    before = session.group("q0")
    pending = session.unreferenced("q0")
    assert [r.id for r in pending.rollouts] == [r.id for r in before.rollouts]
    evaluated = _evaluated(pending, 0.25)
    session.set_reward(load_reward("contains"), True)  # rewards change while the reference evaluates
    rewarded = {r.id: r.reward for r in session.group("q0").rollouts}
    assert session.annotate(evaluated, _reference("0.5")) == [r.id for r in before.rollouts]
    after = session.group("q0")
    assert {r.id: r.reward for r in after.rollouts} == rewarded  # the rewards given meanwhile stay
    assert all(r.mean_kl == 0.25 and abs(r.log_ratio - 0.25 * len(r.tokens)) < 1e-9 for r in after.rollouts)
    assert dict(after.stats)["mean_kl"] == 0.25 and dict(after.stats)["same_top_share"] == 1.0
    assert session.unreferenced("q0") is None
    assert session.rollout_set().reference_policy == _reference("0.5")


def test_another_reference_clears_the_old_facts_and_clear_reference_removes_them():
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    session.feed(LOCAL_RUN, engine.generate(["Which is the largest ocean?", "Two plus two?"], 2, GENERATE))
    session.set_reward(None)
    session.annotate(_evaluated(session.unreferenced("q0"), 0.1), _reference("0.5"))
    session.annotate(_evaluated(session.unreferenced("q1"), 0.1), _reference("0.5"))
    # the user picks another reference: the first group evaluated under it clears the other group's old facts
    session.annotate(_evaluated(session.group("q0"), 0.3), _reference("2"))
    assert all(r.mean_kl == 0.3 for r in session.group("q0").rollouts)
    assert all(r.mean_kl is None for r in session.group("q1").rollouts)
    assert [r.id for r in session.unreferenced("q1").rollouts] == ["q1.r0", "q1.r1"]
    assert "mean_kl" not in dict(session.group("q1").stats)
    session.clear_reference_policy()
    assert session.reference_policy is None
    assert all(t.kl is None and t.ref_top == () for g in session.groups() for r in g.rollouts for t in r.tokens)
    assert "mean_kl" not in dict(session.group("q0").stats)


def test_scores_typed_again_while_the_reference_evaluates_are_left_alone():
    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    session.feed(LOCAL_RUN, engine.generate(["Which is the largest ocean?"], 1, GENERATE))
    session.set_scores("q0", engine.score("Which is the largest ocean?", ["Atlantic"]))
    pending = session.unreferenced("q0")
    session.set_scores("q0", engine.score("Which is the largest ocean?", ["Pacific Ocean, by far"]))
    session.annotate(_evaluated(pending, 0.2), _reference("0.5"))
    assert all(t.kl is None for s in session.scores("q0") for t in s.tokens)
    assert session.unreferenced("q0").scores == session.scores("q0")  # still to evaluate
    session.annotate(_evaluated(session.unreferenced("q0"), 0.2), _reference("0.5"))
    assert all(s.mean_kl == 0.2 for s in session.scores("q0")) and session.unreferenced("q0") is None


def test_the_version_changes_with_every_change_the_session_holds():
    from explorer.core.types import ReferenceInfo, Score

    engine = FakeEngine("fake:model")
    session = Session(engine.info)
    seen = [session.version]

    def changed() -> bool:
        seen.append(session.version)
        return seen[-1] != seen[-2]

    session.accept(1)
    session.feed(1, engine.generate(["Which is the largest ocean?"], 2, GENERATE))
    assert changed()
    session.set_scores("q0", (Score("Pacific", ()),))
    assert changed()
    session.set_reward(load_reward("length"))
    assert changed()
    assert session.set_reference_answer("Which is the largest ocean?", "Pacific")
    assert changed()
    assert not session.set_reference_answer("Which is the largest ocean?", "Pacific")  # the same answer again
    assert not changed()
    session.annotate(session.group("q0"), ReferenceInfo("system", "a pirate", "f"))
    assert changed()
    session.clear_reference_policy()
    assert changed()
    session.mark_exported()  # what is held did not change, only where it is kept
    assert not changed()


def test_only_rollouts_no_file_holds_count_as_unexported():
    session = generate_then_branch(k=3, branch_k=2)
    assert len(session.unexported_rollouts()) == 5
    session.mark_exported()
    assert not session.has_unexported() and session.unexported_rollouts() == []
    engine = FakeEngine("fake:model")
    session.accept(3)
    session.feed(3, engine.branch(session.group("q0"), "q0.r0", 1, None, 2, BRANCH))
    assert session.unexported_rollouts() == ["q0.r5", "q0.r6"]  # the branch after the export, not the whole set
    opened = Session.from_set(session.rollout_set(), "set.json")
    assert not opened.has_unexported()  # its file holds it
    recovered = Session.from_set(session.rollout_set(), "recovered run", in_a_file=False)
    assert len(recovered.unexported_rollouts()) == 7  # a journal is no file: unexported until exported
