"""The llm concept source against a real loopback server, through the real openai client."""

from __future__ import annotations

import pytest

from conceptlens.concepts.sources import get_source
from conceptlens.concepts.sources.llm import LLMError, parse_list
from conceptlens.errors import ConfigError
from conceptlens.testing.llm_server import ChatServer, LoopbackServer


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
    with pytest.raises(LLMError, match=r"failed for 1 of 2 classes: slowpoke: Timed out after 2 "
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
    ('A [note] then ["x", "y"]', ['A [note] then ["x", "y"]']),  # outermost [...] not JSON: lines
    ("42", []), ('{"a": {"b": 1}}', []), ('[["a"], ["b"]]', []), ("[" * 50_000 + "]" * 50_000, []),
])
def test_parse_list(reply, expected):
    assert parse_list(reply) == expected


# -- misbehaving endpoints ---------------------------------------------------------------

class ScriptedServer(LoopbackServer):
    """A loopback chat-completions server whose reply to class `cls` is `script[cls]`:
    (status, body bytes, send Content-Length?) or the message content as a string."""

    def __init__(self, script: dict):
        import contextlib
        import json
        import re
        from collections import Counter
        from http.server import BaseHTTPRequestHandler

        self.requests: Counter[str] = Counter()
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.paths.append(self.path)
                cls = re.search(r"the ([\w -]+?) looks like", payload["messages"][-1]["content"]).group(1)
                outer.requests[cls] += 1
                reply = script.get(cls, json.dumps([f"{cls} feature {i}" for i in range(3)]))
                if isinstance(reply, str):
                    reply = (200, json.dumps({"choices": [{"index": 0, "message": {
                        "role": "assistant", "content": reply}, "finish_reason": "stop"}]}).encode(), True)
                code, body, declare = reply
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if declare:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()  # HTTP/1.0: without a length the body ends when we close
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
                    self.wfile.write(body)

        self._serve(Handler)


def _chat_body(content) -> bytes:
    import json

    message = {"role": "assistant", "content": content}
    return json.dumps({"choices": [{"index": 0, "message": message}]}).encode()


_HUGE = _chat_body(__import__("json").dumps([f"huge concept number {i}" for i in range(120_000)]))
_DOWN = (500, b'{"error": {"message": "overloaded"}}', True)


def test_ctrl_c_stops_a_retry_loop_at_once(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, sys\n"
              "from conceptlens.concepts.sources import get_source\n"
              "os.environ['TEST_LLM_KEY'] = 'k'\n"
              "src = get_source('llm', model='m', base_url=sys.argv[1], api_key_env='TEST_LLM_KEY',\n"
              "                 cache_dir=sys.argv[2], retries=100, backoff=0.3, timeout=5.0)\n"
              "src.generate(['down', 'also down'])\n")
    with ScriptedServer({"down": _DOWN, "also down": _DOWN}) as server:
        # a job started in the background (CI runners, `cmd &`) inherits SIGINT as ignored, and
        # Python then installs no KeyboardInterrupt handler: give the child a terminal's default
        proc = subprocess.Popen([sys.executable, "-c", script, server.url, str(tmp_path / "llm")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60  # the child's imports take a while on a busy machine
            while server.requests["down"] < 2 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.requests["down"] >= 2, "the child never reached its retry loop"
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert b"KeyboardInterrupt" in err and proc.returncode != 0
        assert elapsed < 2.0, f"took {elapsed:.1f} s to stop after Ctrl-C"
        asked = sum(server.requests.values())
        time.sleep(1.0)
        assert sum(server.requests.values()) == asked  # no request after the interrupt


@pytest.mark.parametrize("declare", [True, False])
def test_a_huge_reply_is_refused(tmp_path, monkeypatch, declare):
    assert len(_HUGE) > 3_000_000  # 120,000 concepts
    with ScriptedServer({"huge": (200, _HUGE, declare)}) as server:
        src = source(server, tmp_path, monkeypatch, retries=0, timeout=10.0)
        result = src.generate(["huge", "cardinal"], allow_partial=True)
    assert "larger than max_reply_bytes=262,144 bytes" in result.unresolved["huge"]
    assert result.concepts.for_class("cardinal") and not result.concepts.for_class("huge")
    assert len(list((tmp_path / "llm").rglob("*.json"))) == 1  # only cardinal's reply was cached


def test_too_many_concepts_for_a_class_are_capped_with_a_warning(tmp_path, monkeypatch, caplog):
    import json

    many = json.dumps([f"distinct trait {i}" for i in range(500)])
    with ScriptedServer({"many": many}) as server:
        src = source(server, tmp_path, monkeypatch, n=10)  # 10 asked: at most 20 kept
        with caplog.at_level("WARNING", logger="conceptlens"):
            result = src.generate(["many"])
    assert len(result.concepts.for_class("many")) == 20
    assert "many: the LLM gave 500 concepts, more than max_concepts_per_class=20" in caplog.text


@pytest.mark.parametrize("body", [
    b"42", b"[1, 2, 3]", b'"text"', b"null", b'{"choices": {"a": {"b": {}}}}', b'{"choices": []}',
    b'{"choices": [[["x"]]]}', b'{"choices": [{"message": [1]}]}',
    _chat_body([["a"], ["b"]]), _chat_body({"a": {"b": 1}}), _chat_body(7),
    _chat_body("42"), _chat_body('{"a": {"b": {"c": 1}}}'), _chat_body('[["a", "b"], ["c"]]'),
    _chat_body("[" * 100_000 + "]" * 100_000),
])
def test_json_garbage_is_a_malformed_reply_for_that_class(tmp_path, monkeypatch, body):
    with ScriptedServer({"junk": (200, body, True)}) as server:
        src = source(server, tmp_path, monkeypatch, retries=0)
        result = src.generate(["junk", "cardinal"], allow_partial=True)
    assert result.unresolved["junk"].startswith("Malformed reply"), result.unresolved["junk"]
    assert result.concepts.for_class("cardinal") and not result.concepts.for_class("junk")
    assert len(list((tmp_path / "llm").rglob("*.json"))) == 1  # the junk was not cached


def test_credentials_in_the_base_url_are_never_written(tmp_path, monkeypatch, caplog):
    from conceptlens.concepts.sources.llm import redact_url

    with ScriptedServer({"down": _DOWN}) as server:
        url = f"http://alice:pa55-w0rd@127.0.0.1:{server.port}/v1?api-key=qs-s3cret&api-version=2024"
        src = source(server, tmp_path, monkeypatch, base_url=url, retries=0)
        with caplog.at_level("DEBUG"):
            result = src.generate(["cardinal", "down"], allow_partial=True)
        assert server.requests["cardinal"] == 1  # the endpoint was reached through that URL
    assert set(server.paths) == {"/v1/chat/completions?api-key=qs-s3cret&api-version=2024"}
    result.concepts.save(tmp_path / "concepts.json")
    endpoint = f"http://127.0.0.1:{server.port}/v1?api-key=REDACTED&api-version=2024"
    prov = result.concepts.concepts[result.concepts.index("cardinal feature 0")].provenance
    assert prov[0]["endpoint"] == endpoint
    written = [p.read_text() for p in tmp_path.rglob("*.json")] + [str(result.unresolved), caplog.text]
    assert len(written) == 4 and "api-key=REDACTED" in written[0] + written[1]
    for text in written:
        assert "pa55-w0rd" not in text and "qs-s3cret" not in text and "alice" not in text
    assert redact_url("https://u:p@[::1]:8443/x?token=t&api-version=1#frag") == \
        "https://[::1]:8443/x?token=REDACTED&api-version=1"
    assert redact_url(None) is None


def test_the_api_key_is_scrubbed_from_every_message_log_and_cache_file(tmp_path, monkeypatch, caplog,
                                                                      capfd):
    import json

    key = "sk-live-a8f3e1c9d2b7"

    def error(code, message):
        return code, json.dumps({"error": {"message": message}}).encode(), True

    # endpoints that echo the Authorization header back, in error texts and in replies; the one
    # with padding puts the key across the 200 characters an error message is cut to
    script = {"echo": error(400, f"Invalid header Authorization: Bearer {key}"),
              "padded": error(400, "p" * 176 + f" {key} is not a valid key"),
              "down": error(503, f"upstream refused key={key}"),
              "html": (200, f"<html>bad key {key}</html>".encode(), True),
              "parrot": json.dumps([f"your key is {key}", "Bearer abc.def-ghi", "red crest"])}
    with ScriptedServer(script) as server:
        src = source(server, tmp_path, monkeypatch, key=key, retries=0)
        with caplog.at_level("DEBUG"):
            result = src.generate(list(script), allow_partial=True)
            with pytest.raises(LLMError) as info:
                source(server, tmp_path, monkeypatch, key=key, retries=0).generate(["echo", "padded"])
    assert set(result.unresolved) == {"echo", "padded", "down", "html"}
    assert "Authorization: Bearer REDACTED" in result.unresolved["echo"]
    assert "REDACTED" in result.unresolved["down"] and "REDACTED" in result.unresolved["html"]
    assert result.concepts.for_class("parrot")
    out, err = capfd.readouterr()
    shown = [str(info.value), *result.unresolved.values(), *result.concepts.texts, caplog.text, out, err,
             *(p.read_text() for p in (tmp_path / "llm").rglob("*.json"))]
    assert len(shown) > 8
    for text in shown:
        assert key[:5] not in text and "abc.def-ghi" not in text, text


class DripServer(LoopbackServer):
    """Answers every request with a valid reply, one byte every `interval` seconds (in its
    headers too with `headers=True`): each read is quick, the whole reply never is."""

    def __init__(self, interval: float = 0.3, headers: bool = False):
        import contextlib
        import time
        from http.server import BaseHTTPRequestHandler

        self.requests = 0
        outer = self
        body = _chat_body('["red crest", "black mask"]')

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode()
                dripped = head + body if headers else body
                if not headers:
                    self.wfile.write(head)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    for i in range(len(dripped)):
                        self.wfile.write(dripped[i:i + 1])
                        self.wfile.flush()
                        time.sleep(interval)

        self._serve(Handler)


@pytest.mark.parametrize("headers", [False, True])
def test_a_dripping_reply_times_out_as_a_whole(tmp_path, monkeypatch, headers):
    import time

    with DripServer(headers=headers) as server:
        # each byte comes within 0.3 s, well inside the 1 s timeout: only a whole-request deadline ends it
        src = source(server, tmp_path, monkeypatch, timeout=1.0, retries=0)
        start = time.monotonic()
        result = src.generate(["cardinal"], allow_partial=True)
        elapsed = time.monotonic() - start
        assert elapsed < 15, f"took {elapsed:.0f} s"  # the reply alone would take over a minute
        assert result.unresolved["cardinal"].startswith("Timed out after 1 attempt: each request must be "
                                                        "answered in full within timeout=1 s")
        # retries share one deadline too, and each is asked again
        src = source(server, tmp_path, monkeypatch, timeout=1.0, retries=1, backoff=0.01)
        start = time.monotonic()
        result = src.generate(["cardinal"], allow_partial=True)
        assert time.monotonic() - start < 15
        assert result.unresolved["cardinal"].startswith("Timed out after 2 attempts")
        assert server.requests == 3
    assert not list((tmp_path / "llm").rglob("*.json"))  # nothing half-read was cached


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), "5", True])
def test_timeout_must_be_a_positive_number_of_seconds(tmp_path, timeout):
    with pytest.raises(ConfigError, match="timeout must be a positive number of seconds"):
        get_source("llm", base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path, timeout=timeout)


# -- KnoBo: binary questions per class, and the class x question yes/no/unknown prior ---------

class KnoboServer(LoopbackServer):
    """Answers the `knobo` generation prompt (class after 'recognize') and the prior prompt
    (class after 'about', numbered questions) from `script`: class -> reply content, or a
    function of the listed questions. Defaults: three questions, one naming the class; prior
    answers by keyword (wings -> yes, red -> no, else unknown)."""

    def __init__(self, script: dict | None = None):
        import json
        import re
        from collections import Counter
        from http.server import BaseHTTPRequestHandler

        script = script or {}
        self.requests: Counter[str] = Counter()
        self.prompts: list[str] = []
        outer = self

        def default_answers(questions):
            return json.dumps(["yes" if "wings" in q else "no" if "red" in q else "unknown"
                               for q in questions])

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = payload["messages"][-1]["content"]
                outer.prompts.append(prompt)
                generation = "binary questions*" in prompt
                cls = re.search(r'recognize "([^"]+)"' if generation else r'about "([^"]+)"', prompt).group(1)
                kind = "gen" if generation else "prior"
                outer.requests[f"{kind}:{cls}"] += 1
                questions = re.findall(r"^\d+\. (.+)$", prompt, re.M) if not generation else []
                reply = script.get(f"{kind}:{cls}")
                if callable(reply):
                    reply = reply(questions, outer.requests[f"{kind}:{cls}"])
                if reply is None:
                    reply = default_answers(questions) if not generation else json.dumps(
                        ["Does it have wings?", "Is it red?", f"Is it a {cls}?"])
                body = json.dumps({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": reply}, "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler)


def test_knobo_prompt_family_gives_binary_questions(tmp_path, monkeypatch, caplog):
    script = {"gen:heron": "Is it tall? | Does it have a long neck? | Is it a heron?",  # the authors' format
              "gen:owl": "Sure! Questions:\n1. Does it have big eyes?\n2. Is it nocturnal?\nHope it helps.",
              "gen:prose": '["red", "has wings"]'}  # no question at all: malformed
    with KnoboServer(script) as server:
        src = source(server, tmp_path, monkeypatch, prompts=("knobo",), n=3)
        with caplog.at_level("WARNING", logger="conceptlens"):
            result = src.generate(["sparrow", "heron", "owl", "prose"], allow_partial=True)
        assert "*binary questions*" in server.prompts[0]
        assert "must not contain the class name" in server.prompts[0]
    cs = result.concepts

    def texts(cls):
        return [cs.texts[i] for i in cs.for_class(cls)]

    assert texts("sparrow") == ["Does it have wings?", "Is it red?"]  # "Is it a sparrow?" dropped
    assert texts("heron") == ["Is it tall?", "Does it have a long neck?"]
    assert texts("owl") == ["Does it have big eyes?", "Is it nocturnal?"]  # prose lines dropped
    assert cs.concepts[cs.index("Does it have wings?")].classes == ["sparrow"]
    assert result.unresolved["prose"].startswith("Malformed reply to the 'knobo' prompt: no binary question")
    assert "sparrow: dropped 1 binary question(s) that name the class" in caplog.text
    assert len(list((tmp_path / "llm").rglob("*.json"))) == 3  # the malformed reply was not cached


def test_knobo_prior_answers_yes_no_unknown_per_class_and_question(tmp_path, monkeypatch):
    import numpy as np

    questions = ["Does it have wings?", "Is it red?", "Is it tall?", "Do its wings fold?", "Is it red-eyed?"]
    script = {"prior:bat": lambda qs, n: '```json\n["No", "unknown", "yes."' + ', "yes"' * (len(qs) - 3)
              + "]\n```" if len(qs) > 2 else '["no", "no"]'}
    with KnoboServer(script) as server:
        src = source(server, tmp_path, monkeypatch, questions_per_request=3)
        result = src.answer_prior(["sparrow", "bat", "sparrow"], questions)
        assert server.requests == {"prior:sparrow": 2, "prior:bat": 2}  # 5 questions, 3 per request
        assert "Choices: yes, no, unknown." in server.prompts[0] and "4. " not in server.prompts[0]
        # a rerun is served from the cache
        again = source(server, tmp_path, monkeypatch, questions_per_request=3).answer_prior(
            ["sparrow", "bat"], questions)
        assert sum(server.requests.values()) == 4
    ann = result.annotations
    assert ann.level == "class" and ann.classes == ("sparrow", "bat") and ann.concepts == tuple(questions)
    nan = np.nan
    np.testing.assert_array_equal(ann.values, [[1, 0, nan, 1, 0], [0, nan, 1, 0, 0]])
    np.testing.assert_array_equal(again.annotations.values, ann.values)
    assert not result.unresolved


@pytest.mark.parametrize("reply", [
    '["yes", "maybe", "no"]', '["yes", "no"]', '["yes", "no", "unknown", "yes"]', "I think yes to all.",
    '["yes", "no", ["unknown"]]', '[true, false, null]', "yes no unknown"])
def test_knobo_prior_malformed_reply_is_reported_not_cached_and_asked_again(tmp_path, monkeypatch, reply):
    import numpy as np

    from conceptlens.concepts.sources.llm import parse_answers

    questions = ["Does it have wings?", "Is it red?", "Is it tall?"]
    assert parse_answers(reply, 3) is None
    with KnoboServer({"prior:junk": lambda qs, n: reply if n <= 2 else None}) as server:
        src = source(server, tmp_path, monkeypatch)
        with pytest.raises(LLMError, match=r"failed for 1 of 2 classes: junk: Malformed reply to the prior "
                                           r"prompt \(questions 1-3\): expected a JSON array of 3 answers"):
            src.answer_prior(["sparrow", "junk"], questions)
        partial = src.answer_prior(["sparrow", "junk"], questions, allow_partial=True)
        assert set(partial.unresolved) == {"junk"} and np.isnan(partial.annotations.values[1]).all()
        assert server.requests["prior:sparrow"] == 1  # finished classes come from the cache
        # nothing malformed was cached: the next run asks again and gets a good reply
        fixed = src.answer_prior(["sparrow", "junk"], questions)
        assert server.requests["prior:junk"] == 3 and not fixed.unresolved
    np.testing.assert_array_equal(fixed.annotations.values[1], [1, 0, np.nan])


@pytest.mark.parametrize("reply, expected", [
    ('["yes", "no", "unknown"]', ["yes", "no", "unknown"]),
    ('Here:\n```json\n["Yes", "NO", "Unknown."]\n```', ["yes", "no", "unknown"]),
    ('{"1": "yes", "2": "no", "3": "unknown"}', ["yes", "no", "unknown"]),
    ("1. yes\n2) no\n3: unknown", ["yes", "no", "unknown"]), ("yes, no, unknown", ["yes", "no", "unknown"]),
])
def test_parse_answers(reply, expected):
    from conceptlens.concepts.sources.llm import parse_answers

    assert parse_answers(reply, 3) == expected


def test_answer_prior_needs_classes_and_questions(tmp_path):
    src = get_source("llm", base_url="http://127.0.0.1:9/v1", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="at least one class and one question"):
        src.answer_prior(["sparrow"], [])
    with pytest.raises(ConfigError, match="questions_per_request must be an integer >= 1"):
        get_source("llm", questions_per_request=0)
