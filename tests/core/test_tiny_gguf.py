"""The tiny GGUF factory writes what it promises, and llama.cpp really loads and runs the result."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest
from gguf import GGUFReader, TokenType
from tiny_gguf import (BOS_ID, CHATML_TEMPLATE, FIRST_BYTE_ID, IM_END_ID, IM_START_ID, N_FIXED, count_params,
                       write_tiny_gguf)


def _field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.fixture(scope="module")
def tiny_llm(tiny_gguf):
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=256, verbose=False)
    yield llm
    llm.close()


def test_layout_read_back_by_the_gguf_package(tiny_gguf):
    reader = GGUFReader(tiny_gguf)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "general.name") == "tiny-test"
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert _field(reader, "tokenizer.chat_template") == CHATML_TEMPLATE
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 300
    assert tokens[IM_START_ID] == "<|im_start|>" and tokens[IM_END_ID] == "<|im_end|>"
    assert types[IM_START_ID] == types[IM_END_ID] == TokenType.CONTROL
    assert tokens[FIRST_BYTE_ID:N_FIXED] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[FIRST_BYTE_ID:N_FIXED]) == {TokenType.BYTE}
    assert "\u2581Atlantic" in tokens and "\u2581Ocean" in tokens
    assert _field(reader, "tokenizer.ggml.eos_token_id") == IM_END_ID
    assert sum(int(t.n_elements) for t in reader.tensors) == count_params()


def test_seed_decides_the_weights(tmp_path):
    first = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    again = write_tiny_gguf(tmp_path / "b.gguf", seed=1)
    other = write_tiny_gguf(tmp_path / "c.gguf", seed=2)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_f16_option_halves_the_matrices(tmp_path):
    reader = GGUFReader(write_tiny_gguf(tmp_path / "h.gguf", dtype="f16", tie_embeddings=False))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["output.weight"] == kinds["blk.0.attn_q.weight"] == "F16"
    assert kinds["output_norm.weight"] == "F32"


def test_rejects_a_vocabulary_without_room_for_the_byte_tokens(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        write_tiny_gguf(tmp_path / "x.gguf", n_vocab=100)


def test_llama_cpp_loads_it_with_the_written_facts(tiny_llm):
    assert tiny_llm.n_vocab() == 300
    assert tiny_llm.token_bos() == BOS_ID
    assert tiny_llm.token_eos() == IM_END_ID
    assert tiny_llm.metadata["tokenizer.chat_template"] == CHATML_TEMPLATE


@pytest.mark.parametrize("text", ["the Atlantic Ocean", "Hello, world!", "h\u00e9llo \u2713 \u65e5\u672c \U0001F30A"])
def test_tokenize_detokenize_round_trip(tiny_llm, text):
    ids = tiny_llm.tokenize(text.encode(), add_bos=False)
    # SentencePiece adds a leading space to the text it tokenizes; detokenizing keeps it.
    assert tiny_llm.detokenize(ids).decode() == " " + text


def test_words_in_the_vocabulary_are_single_tokens(tiny_llm):
    ids = tiny_llm.tokenize(b"the Atlantic Ocean", add_bos=False)
    assert [tiny_llm.detokenize([i]).decode() for i in ids] == [" the", " Atlantic", " Ocean"]


def test_multibyte_characters_fall_back_to_byte_tokens(tiny_llm):
    ids = tiny_llm.tokenize("\u65e5".encode(), add_bos=False, special=False)
    byte_ids = [i for i in ids if FIRST_BYTE_ID <= i < N_FIXED]
    assert bytes(i - FIRST_BYTE_ID for i in byte_ids) == "\u65e5".encode()
    assert len(byte_ids) == 3  # one CJK character, three byte tokens: the engine's UTF-8 tests rely on this


def test_chatml_tokens_are_control_tokens(tiny_llm):
    ids = tiny_llm.tokenize(b"<|im_start|>user", add_bos=False, special=True)
    assert ids[0] == IM_START_ID
    assert tiny_llm.tokenize(b"<|im_start|>", add_bos=False, special=False) != [IM_START_ID]


def test_generates_tokens(tiny_llm):
    out = tiny_llm.create_completion("The Atlantic", max_tokens=8, temperature=0.0)
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] >= 1
    assert choice["finish_reason"] in ("length", "stop")


def test_large_vocabulary_loads(tmp_path):
    # The benchmark's synthetic 262k-token model, with a tiny width so the test stays fast.
    path = write_tiny_gguf(tmp_path / "wide.gguf", n_vocab=262144, n_embd=8, n_head=1, n_layer=1, dtype="f16")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False)
    try:
        assert llm.n_vocab() == 262144
        ids = llm.tokenize("the Ocean \u00e9".encode(), add_bos=False)
        assert llm.detokenize(ids).decode() == " the Ocean \u00e9"
        llm.eval([BOS_ID])
        logits = np.asarray(llm.scores[0])
        assert logits.shape == (262144,)
        assert np.isfinite(logits).all() and logits.std() > 0
    finally:
        llm.close()
