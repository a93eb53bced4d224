"""How the remote engine fails: against a tiny real HTTP server on 127.0.0.1 that speaks vLLM's routes and breaks
on purpose. Each failure is one ServerError line naming the server; what arrived before it is kept."""

from __future__ import annotations

import socket

import pytest

from explorer.core.session import Session
from explorer.core.errors import ExplorerError
from explorer.core.remote.remote_engine import RemoteEngine
from explorer.core.remote.servers import ServerError, display_url
from explorer.core.types import SamplingParams
from servers import ScriptedVllm, stream_abc, token_event

PARAMS = SamplingParams(max_tokens=3, top_n=2)


@pytest.fixture
def scripted():
    servers = []

    def start(completions, key=None):
        srv = ScriptedVllm(completions, key)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def against(srv, k=2, params=PARAMS, **engine_args):
    """Connect to srv, run k rollouts of one query, hang up: (collector, the error the run ended with or None)."""
    eng = RemoteEngine(srv.url, **engine_args)
    try:
        return collect(eng, k, params)
    finally:
        eng.close()


def collect(eng, k=2, params=PARAMS):
    collector = Session(eng.info, params)
    error = None
    try:
        for ev in eng.generate(["q"], k, params, chat=False):
            collector.add(ev)
    except ExplorerError as exc:
        error = exc
    return collector, error


def test_a_working_scripted_server_streams_ids_pieces_and_seeds(scripted):
    srv = scripted(stream_abc)
    eng = RemoteEngine(srv.url)
    try:
        assert (eng.facts.kind, eng.facts.version, eng.facts.n_ctx) == ("vllm", "0.0-scripted", 2048)
        collector, error = collect(eng, k=2)
    finally:
        eng.close()
    assert error is None
    rollouts = collector.groups()[0].rollouts
    for r in rollouts:
        assert r.token_ids == (10, 11, 12) and r.text == "abc" and r.finish_reason == "length"
        assert [t.token for t in r.tokens] == ["<10>", "<11>", "<12>"]  # pieces from /detokenize, keyed by id
        assert r.tokens[0].top[1].id == 11 and r.tokens[0].rank == 1
    assert srv.count == 2  # one request per rollout


def test_unreachable_server(scripted):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerError, match="cannot reach the server"):
        RemoteEngine(f"http://127.0.0.1:{port}")


def test_wrong_key_401_and_the_key_never_in_the_message(scripted):
    srv = scripted(stream_abc, key="sekrit")
    with pytest.raises(ServerError, match=r"refused the API key \(HTTP 401") as err:
        RemoteEngine(srv.url, api_key="nope")
    assert "nope" not in str(err.value) and "sekrit" not in str(err.value)
    RemoteEngine(srv.url, api_key="sekrit").close()


def test_unknown_model_lists_what_the_server_serves(scripted):
    srv = scripted(stream_abc)
    with pytest.raises(ServerError, match=r"no model 'big'.*it serves: tiny"):
        RemoteEngine(srv.url, model="big")


def test_rate_limit_is_retried_with_backoff_then_succeeds(scripted):
    def limited(h, n):
        if n < 2:
            h.send_json(429, {"error": {"message": "slow down"}})
        else:
            stream_abc(h, n)

    srv = scripted(limited)
    collector, error = against(srv, k=1)
    assert error is None and srv.count == 3
    assert collector.groups()[0].rollouts[0].token_ids == (10, 11, 12)


def test_rate_limit_that_never_ends_is_one_line(scripted):
    srv = scripted(lambda h, n: h.send_json(429, {"error": {"message": "slow down"}}))
    collector, error = against(srv, k=1)
    assert isinstance(error, ServerError) and "HTTP 429" in str(error) and "\n" not in str(error)
    assert collector.groups()[0].rollouts[0].finish_reason == "cancelled"


def test_500_mid_stream_keeps_the_tokens_that_arrived(scripted):
    def crash(h, n):
        h.start_stream()
        h.event(token_event(10, "a"))
        h.cut()

    srv = scripted(crash)
    collector, error = against(srv, k=2)
    assert isinstance(error, ServerError) and srv.url in str(error)
    assert "truncated after 1 tokens" in str(error) or "closed the connection" in str(error)
    rollouts = collector.groups()[0].rollouts
    assert any(r.token_ids == (10,) for r in rollouts)  # the partial rollout is kept
    assert all(r.finish_reason == "cancelled" for r in rollouts)


def test_500_before_the_stream_is_not_retried(scripted):
    srv = scripted(lambda h, n: h.send_json(500, {"error": {"message": "CUDA out of memory"}}))
    _, error = against(srv, k=1)
    assert "the server failed (HTTP 500: CUDA out of memory)" in str(error) and srv.count == 1


def test_malformed_event(scripted):
    def garbage(h, n):
        h.start_stream()
        h.event(token_event(10, "a"))
        h.event("{not json")

    srv = scripted(garbage)
    collector, error = against(srv, k=1)
    assert "malformed stream" in str(error)
    assert collector.groups()[0].rollouts[0].token_ids == (10,)


def test_silence_is_a_timeout(scripted):
    def silent(h, n):
        h.start_stream()
        h.event(token_event(10, "a"))
        h.server_ref.release.wait(30)

    srv = scripted(silent)
    collector, error = against(srv, k=1, timeout_s=0.5)
    assert "(timeout)" in str(error)
    assert collector.groups()[0].rollouts[0].token_ids == (10,)


def test_a_request_above_the_logprobs_cap_says_what_the_server_said(scripted):
    def capped(h, n):
        h.send_json(400, {"error": {"message": "Requested sample logprobs of 50, which is greater than max "
                                               "allowed: 20"}})

    srv = scripted(capped)
    eng = RemoteEngine(srv.url)
    try:
        _, error = collect(eng, k=1, params=SamplingParams(max_tokens=3, top_n=50))
    finally:
        eng.close()
    assert "HTTP 400" in str(error) and "max allowed: 20" in str(error)


def test_urls_are_shown_without_credentials():
    assert display_url("https://user:pw@host.example:8443/base/?key=abc#x") == "https://host.example:8443/base"
    with pytest.raises(ExplorerError, match="not a server URL"):
        RemoteEngine("ftp://host")
