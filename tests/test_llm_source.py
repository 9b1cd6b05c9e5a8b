"""The llm concept source against a real loopback server, through the real openai client."""

from __future__ import annotations

import pytest
from llm_server import ChatServer

from conceptlens.concepts.sources import get_source
from conceptlens.concepts.sources.llm import LLMError, parse_list
from conceptlens.errors import ConfigError


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def source(server, tmp_path, monkeypatch, **kw):
    monkeypatch.setenv("TEST_LLM_KEY", kw.pop("key", "sk-secret-123"))
    opts = dict(model="test-model", base_url=server.url, api_key_env="TEST_LLM_KEY",
                cache_dir=tmp_path / "llm", timeout=1.0, retries=2, backoff=0.01, concurrency=4)
    return get_source("llm", **(opts | kw))


def test_generates_many_to_many_concepts_and_caches(server, tmp_path, monkeypatch):
    src = source(server, tmp_path, monkeypatch, prompts=("labo", "important"))
    result = src.generate(["cardinal", "blue jay", "chatty"])
    cs = result.concepts
    assert "cardinal feature 0" in cs.texts and "chatty feature 2" in cs.texts
    shared = cs.concepts[cs.index("shared trait")]
    assert shared.classes == ["cardinal", "blue jay", "chatty"]  # one concept, three classes
    assert {p["prompt"] for p in shared.provenance} == {"labo", "important"}
    assert server.requests == {"cardinal": 2, "blue jay": 2, "chatty": 2}
    # a rerun is served from the cache: no request reaches the server
    again = source(server, tmp_path, monkeypatch, prompts=("labo", "important")).generate(
        ["cardinal", "blue jay", "chatty"])
    assert again.concepts.texts == cs.texts and sum(server.requests.values()) == 6
    # the key went to the server but never into the cache files
    assert server.keys[0] == "Bearer sk-secret-123"
    assert not any("sk-secret-123" in p.read_text() for p in (tmp_path / "llm").rglob("*.json"))


def test_changed_settings_are_a_cache_miss(server, tmp_path, monkeypatch):
    source(server, tmp_path, monkeypatch).generate(["cardinal"])
    source(server, tmp_path, monkeypatch, temperature=0.2).generate(["cardinal"])
    source(server, tmp_path, monkeypatch, model="other").generate(["cardinal"])
    assert server.requests["cardinal"] == 3


def test_transient_500_is_retried(server, tmp_path, monkeypatch):
    result = source(server, tmp_path, monkeypatch).generate(["flaky"])
    assert server.requests["flaky"] == 2 and "flaky feature 0" in result.concepts.texts


def test_timeout_is_retried_then_reported_and_done_classes_kept(server, tmp_path, monkeypatch):
    src = source(server, tmp_path, monkeypatch, timeout=0.5, retries=1)
    with pytest.raises(LLMError, match=r"failed for 1 of 2 classes: slowpoke: APITimeoutError after 2 "
                                       r"attempts.*1 finished classes are cached"):
        src.generate(["cardinal", "slowpoke"])
    assert server.requests["slowpoke"] == 2
    partial = source(server, tmp_path, monkeypatch, timeout=0.5, retries=0).generate(
        ["cardinal", "slowpoke"], allow_partial=True)
    assert server.requests["cardinal"] == 1  # resumed from the cache
    assert "slowpoke" in partial.unresolved and partial.concepts.for_class("cardinal")


def test_malformed_reply_is_a_clear_error(server, tmp_path, monkeypatch):
    with pytest.raises(LLMError, match="garbled"):
        source(server, tmp_path, monkeypatch, retries=0).generate(["garbled"])
    assert not list((tmp_path / "llm").rglob("*.json"))  # nothing bad was cached


def test_refusal_is_reported(server, tmp_path, monkeypatch):
    result = source(server, tmp_path, monkeypatch).generate(["refuser", "cardinal"], allow_partial=True)
    assert result.unresolved == {"refuser": "The model refused: I can't help with that."}


def test_bad_key_fails_without_retrying_or_leaking(server, tmp_path, monkeypatch):
    with pytest.raises(LLMError, match=r"rejected the API key from \$TEST_LLM_KEY") as info:
        source(server, tmp_path, monkeypatch, key="bad-key").generate(["cardinal"])
    assert "bad-key" not in str(info.value)
    assert len(server.keys) == 1


def test_missing_key_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    src = get_source("llm", api_key_env="NO_SUCH_KEY_VAR", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        src.generate(["cardinal"])


@pytest.mark.parametrize("reply, expected", [
    ('["red crest", "black mask"]', ["red crest", "black mask"]),
    ('Here:\n```json\n["a", "b"]\n```', ["a", "b"]),
    ('{"features": ["x", "y"]}', ["x", "y"]),
    ("Features:\n1. red crest\n2) black mask\n- short beak", ["red crest", "black mask", "short beak"]),
    ('Sure: ["only", "this"] ok', ["only", "this"]),
])
def test_parse_list(reply, expected):
    assert parse_list(reply) == expected
