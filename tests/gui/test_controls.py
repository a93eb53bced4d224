"""The side panel: query set editing and files, sampling parameters, model facts, GPU layers, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.core.errors import ExplorerError
from explorer.core.models.discovery import ModelEntry
from explorer.core.types import ModelInfo, Query, SamplingParams
from explorer.gui.side_panel.controls import ControlPanel, format_stop_strings, parse_stop_strings
from explorer.gui.side_panel.reference_box import ReferenceBox


@pytest.fixture
def panel(qtbot) -> ControlPanel:
    p = ControlPanel()
    qtbot.addWidget(p)
    return p


def texts(panel: ControlPanel) -> list[str]:
    return [q.text for q in panel.queries()]


@pytest.mark.parametrize("typed, stops", [
    ("", ()),
    ("###", ("###",)),
    (r"\n\n,###", ("\n\n", "###")),
    (r"a\,b,c", ("a,b", "c")),
    (r"back\\slash,\tTab", ("back\\slash", "\tTab")),
    (" User:,,", (" User:",)),
])
def test_stop_strings_parse_and_format_back(typed, stops):
    assert parse_stop_strings(typed) == stops
    assert parse_stop_strings(format_stop_strings(stops)) == stops


def test_sampling_params_follow_the_widgets_and_back(panel):
    assert panel.sampling_params() == SamplingParams()
    wanted = SamplingParams(temperature=0.3, top_k=0, top_p=0.9, min_p=0.0, repeat_penalty=1.1, max_tokens=64,
                            seed=99, top_n=3, stop=("\n", "END"))
    panel.set_sampling_params(wanted)
    assert panel.sampling_params() == wanted
    panel.k_spin.setValue(64)
    panel.k_spin.setValue(65)  # the brief's range is 1..64
    assert panel.k() == 64


def test_new_seed_changes_the_seed(panel):
    seeds = {panel.new_seed() for _ in range(5)}
    assert len(seeds) > 1 and panel.sampling_params().seed in seeds


def test_query_editor_adds_removes_and_reorders(qtbot, panel):
    editor = panel.query_editor
    assert texts(panel) == ["Which is the largest ocean?", "Can you give me some python code?"]
    editor.list.setCurrentRow(1)
    editor.move_selected(-1)
    assert texts(panel) == ["Can you give me some python code?", "Which is the largest ocean?"]
    editor.add_new()
    editor.list.closePersistentEditor(editor.list.item(2))
    editor.list.item(2).setText("A third query")
    assert texts(panel)[-1] == "A third query"
    editor.list.setCurrentRow(0)
    editor.remove_selected()
    assert texts(panel) == ["Which is the largest ocean?", "A third query"]


def test_query_files_load_and_save_in_both_formats(qtbot, panel, tmp_path):
    errors = []
    panel.error.connect(lambda title, message: errors.append(message))
    source = tmp_path / "refs.json"
    source.write_text(json.dumps(["plain", {"query": "2+2?", "reference": "4"}]))
    assert panel.query_editor.load_file(source)
    assert panel.queries() == [Query("plain"), Query("2+2?", "4")]
    out_json = tmp_path / "out.json"
    assert panel.query_editor.save_file(out_json)
    assert json.loads(out_json.read_text()) == ["plain", {"query": "2+2?", "reference": "4"}]
    panel.set_queries(["one", "two"])
    out_txt = tmp_path / "out.txt"
    assert panel.query_editor.save_file(out_txt)
    assert out_txt.read_text() == "one\ntwo\n"
    panel.set_queries(["replaced"])
    assert panel.query_editor.load_file(out_txt) and texts(panel) == ["one", "two"]
    assert not errors


def test_a_bad_query_file_reports_and_keeps_the_list(qtbot, panel, tmp_path):
    errors = []
    panel.error.connect(lambda title, message: errors.append((title, message)))
    bad = tmp_path / "bad.json"
    bad.write_text('[{"nope": 1}]')
    before = panel.queries()
    assert not panel.query_editor.load_file(bad)
    assert errors == [("Cannot load the query list", f"{bad}: item 1 has no prompt column (looked for prompt, "
                                                      "query, question, problem; its columns: 'nope'); choose one "
                                                      "with --prompt-column")]
    assert panel.queries() == before


def test_a_dataset_loads_with_its_conversations_and_columns(qtbot, panel, tmp_path):
    source = tmp_path / "trl.jsonl"
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
             "solution": "4"},
            {"prompt": "plain", "topic": "t"}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert panel.query_editor.load_file(source)
    first, second = panel.queries()
    assert first.messages == (("system", "Be brief."), ("user", "2+2?")) and first.reference_answer == "4"
    assert first.columns == (("solution", "4"),) and second.columns == (("topic", "t"),)
    panel.query_editor.list.item(0).setText("3+3?")  # an edit is the conversation's last user message
    panel.query_editor.set_reference_answer(0, "6")
    edited = panel.queries()[0]
    assert edited.text == "3+3?" and edited.messages == (("system", "Be brief."), ("user", "3+3?"))
    assert edited.reference_answer == "6"
    saved = tmp_path / "saved.json"
    assert panel.query_editor.save_file(saved)
    assert json.loads(saved.read_text())[0] == {"solution": "4", "prompt": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"}], "reference": "6"}


def test_model_facts_and_gpu_layers(panel):
    info = ModelInfo(path="/m/x.gguf", name="x", architecture="llama", n_params=134_515_008, n_vocab=49152,
                     n_ctx=4096, file_size=1, fingerprint="f", chat_template=True, n_gpu_layers=30,
                     gpu_offload=True, quantization="Q4_1", n_ctx_train=8192, n_layers=30, backend="CUDA")
    panel.show_model_info(info)
    f = panel.facts
    assert [f[k].text() for k in ("architecture", "params", "quantization", "backend", "offload")] == \
        ["llama", "135M", "Q4_1", "CUDA", "30 of 30 layers"]
    assert "4,096" in f["context"].text() and "8,192" in f["context"].text()
    assert panel.gpu_layers.isEnabled() and panel.gpu_layers.maximum() == 30
    panel.gpu_layers.setValue(12)
    assert panel.n_gpu_layers() == 12
    panel.show_model_info(ModelInfo(**{**info.__dict__, "gpu_offload": False, "backend": "CPU", "n_gpu_layers": 0}))
    assert not panel.gpu_layers.isEnabled()
    assert "no GPU offload" in panel.gpu_layers.toolTip()
    assert panel.n_gpu_layers() is None  # the engine's own default on a CPU-only build
    assert panel.context_size() is None
    panel.n_ctx.setValue(2048)
    assert panel.context_size() == 2048


def test_model_list_shows_unusable_files_disabled(qtbot, panel):
    chosen = []
    panel.model_chosen.connect(chosen.append)
    panel.set_models([ModelEntry(Path("/m/good.gguf"), "good", "models/"),
                      ModelEntry(Path("/m/emb.gguf"), "emb", "models/", error="an embedding model, not a text "
                                                                               "generator")])
    combo = panel.model_combo
    assert combo.count() == 2
    assert not combo.model().item(1).isEnabled()
    assert "embedding" in combo.itemData(1, 3)  # 3 = ToolTipRole
    combo.activated.emit(0)
    assert chosen == ["/m/good.gguf"]
    panel.select_model_path("/elsewhere/dropped.gguf")
    assert combo.count() == 3 and panel.current_model_path() == "/elsewhere/dropped.gguf"


def test_state_round_trips_and_ignores_junk(qtbot, panel):
    panel.set_queries([Query("q1", "r1"), Query("q2")])
    panel.k_spin.setValue(9)
    panel.chat_check.setChecked(False)
    panel.system_edit.setPlainText("sys")
    panel.set_sampling_params(SamplingParams(temperature=0.5, seed=7, stop=("x",)))
    state = json.loads(json.dumps(panel.state()))
    other = ControlPanel()
    qtbot.addWidget(other)
    other.restore_state(state)
    assert other.state() == panel.state()
    assert other.system_prompt() is None  # raw mode: no system prompt is sent
    other.restore_state({"sampling": {"temperature": -3}, "k": "nine", "queries": "not a list"})
    assert other.state() == panel.state()  # invalid values keep what was there


def test_each_reference_kind_keeps_its_own_value(qtbot):
    """A temperature typed is not offered to the next kind as a GGUF path: every kind has its own draft."""
    box = ReferenceBox(pick_file=lambda parent: "/models/picked.gguf")
    qtbot.addWidget(box)
    box.set_choice("temperature")
    assert box.value_edit.text() == "0.7"  # its default
    box.value_edit.setText("0.5")
    box.combo.setCurrentIndex(box.combo.findData("model"))
    assert box.value_edit.text() == ""
    with pytest.raises(ExplorerError, match="path of the reference GGUF"):
        box.spec()
    box.combo.setCurrentIndex(box.combo.findData("top_p"))
    assert box.value_edit.text() == "0.9" and box.spec() == "top_p:0.9"
    box.combo.setCurrentIndex(box.combo.findData("temperature"))
    assert box.spec() == "temperature:0.5"  # what was typed for it comes back
    # the exact copy: of the loaded model, or of a GGUF named (a server's weights, here)
    box.combo.setCurrentIndex(box.combo.findData("exact"))
    assert box.spec() == "exact" and not box.browse_button.isHidden()
    box.pick_file()
    assert box.kind() == "exact" and box.spec() == "exact:/models/picked.gguf"
    # the drafts and the cap come back with the settings
    box.cap_spin.setValue(3.0)
    again = ReferenceBox()
    qtbot.addWidget(again)
    again.restore_state(box.state())
    assert again.spec() == "exact:/models/picked.gguf" and again.tis_cap() == 3.0
    again.combo.setCurrentIndex(again.combo.findData("temperature"))
    assert again.spec() == "temperature:0.5"
