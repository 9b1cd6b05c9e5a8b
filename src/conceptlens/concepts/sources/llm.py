"""`llm`: any endpoint that speaks the OpenAI chat-completions protocol.

OpenAI, vLLM, Ollama, llama.cpp's server... are all reached through the `openai` client
with a base URL. The API key is read from the environment variable the user names and is
never written anywhere. Each request's reply is cached on disk under a hash of endpoint,
model, messages and sampling settings, so a rerun costs nothing and an interrupted run
resumes with the classes it had finished. Transient failures (timeouts, connection errors,
429, 5xx) are retried with exponential backoff; a bad key fails at once; whatever still
fails is reported by class, never silently dropped.

Deadlines: `timeout` bounds each whole request, not each read (a reply that drips a byte a
second would otherwise never time out; deadline.py), and a request's retries share one deadline.

Safety: Ctrl-C stops a run at once (workers are daemon threads that check a cancel flag
between attempts, and backoff waits on that flag); a reply larger than `max_reply_bytes` is
refused while it downloads; a reply that is valid JSON of the wrong shape is a per-class
"malformed reply" error; more than `max_concepts_per_class` concepts for one class are cut to
that many with a logged warning; credentials in `base_url` (user:password@, query-string
values) are redacted from everything written (cache, provenance) or reported, and so are the API
key and any `Bearer <token>` (an endpoint's error text may echo the Authorization header): every
reply body and error message goes through `LLMSource._scrub`, every log record of the HTTP stack
and of conceptlens through `_RedactingFilter`.

KnoBo (Yang et al., NeurIPS 2024; YueYANG1996/MedRAG `concept_generation.py`,
`annotate_question.py`): the `knobo` prompt family asks for *binary questions* per class, with
the rules of the authors' prompt-only bottleneck prompt (`prompt_xray` / `prompt_skin`, not
domain-specific here): visually identifiable, concise and reusable, unique, never naming the
class. Replies are read as a JSON array (or the authors' `question-1 | question-2 | ...`);
items that are not questions (no final '?': headings, prose) are dropped, those that contain
the class name dropped with a warning, and a reply with no question at all is a malformed reply
for that class. The authors generate class by class with the growing list in the prompt
("EXISTING_CONCEPTS") and then ask GPT-4 whether each question is visual, new and groundable;
here classes are asked independently (cached, in parallel) and duplicates merge in `collect`;
those GPT-4 checks are not run. `answer_prior` asks for the class x question prior KnoBo's loss
uses (the authors ship it as `class2concept2answer.json`, yes / no / unknown per class and
question; the prompt that made it is not released, so ours follows their report-annotation
prompt with "unknown" added) and returns class-level ConceptAnnotations (1 yes, 0 no, NaN
unknown): the `class_truth` a KnoBo run reads. A reply that is not exactly one yes / no /
unknown per question is a malformed reply for that class (not cached, so a rerun asks
again; reported by class like every failure here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..._io import cache_root, write_json
from ...annotations import ConceptAnnotations
from ...errors import ConceptLensError, ConfigError
from ...validation import InstanceOf, Interval, StrList
from ..normalize import collect
from .base import SOURCES, ConceptSource, SourceResult
from .deadline import Overdue, run_by

log = logging.getLogger("conceptlens")

_JSON_INSTRUCTION = (
    " Answer with a JSON array of short strings and nothing else, e.g. [\"...\", \"...\"]."
)
# LaBo asks for short factual sentences; Label-free CBM asks three questions per class.
PROMPTS = {
    "labo": "Describe what the {cls} looks like: list {n} short, distinct, factual sentences "
            "about its visual appearance, each a few words long.",
    "important": "List the {n} most important visual features for recognizing something as "
                 "a \"{cls}\". Each item is a few words.",
    "superclass": "Give up to {n} superclasses for the word \"{cls}\", most specific first.",
    "around": "List up to {n} things most commonly seen around a \"{cls}\".",
    # KnoBo: the authors' prompt-only bottleneck prompt (MedRAG `concept_generation.py`,
    # `prompt_xray`), without the radiology domain and the list of existing questions
    "knobo": "You are an expert. You are summarizing knowledge about how to recognize \"{cls}\" "
             "from images. I want you to generate knowledge in the form of *binary questions*, "
             "e.g., \"Is the object round?\". Please follow the instructions below strictly:\n"
             "1. The knowledge will be used to guide recognition from images, so the questions "
             "must be *visually identifiable* from an image only.\n"
             "2. The binary questions should be concise and not too specific, so they can be "
             "reused for different cases.\n"
             "3. Each question is unique.\n"
             "4. The binary questions must not contain the class name, e.g., you *must not* "
             "generate \"Is it a {cls}?\" for the class \"{cls}\".\n"
             "Give {n} binary questions.",
}

# KnoBo's class x question prior (yes / no / unknown), on the pattern of the authors' report
# annotation prompt (MedRAG `annotate_question.py`, `answer_question_gpt4`)
PRIOR_PROMPT = (
    "Task: Answer each of the following questions about \"{cls}\" based on your knowledge of "
    "what a \"{cls}\" looks like in images.\n"
    "Guide: Answer each question with yes, no or unknown only: yes if it is typically true of "
    "a \"{cls}\", no if it is typically false, unknown if it varies or cannot be told.\n"
    "Questions:\n{questions}\n"
    "Choices: yes, no, unknown.\n"
    "Answer with a JSON array of {n} strings, one per question in the same order, each \"yes\", "
    "\"no\" or \"unknown\", and nothing else."
)
ANSWERS = {"yes": 1.0, "no": 0.0, "unknown": float("nan")}


class LLMError(ConceptLensError):
    """An LLM request that failed for good (after retries where retrying makes sense)."""


def parse_list(text: str) -> list[str]:
    """Concepts from a reply: a JSON array (possibly inside prose or a code fence, or under
    one key of an object), else one item per line with bullets and numbering removed."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    # the outermost [...] (what a greedy regex finds, without its quadratic backtracking)
    start, end = text.find("["), text.rfind("]")
    for i, candidate in enumerate((text, text[start:end + 1]) if 0 <= start < end else (text,)):
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        except RecursionError:  # nested too deep to be a list of concepts
            return []
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if isinstance(obj, list):
            return [str(x).strip() for x in obj
                    if isinstance(x, str | int | float) and not isinstance(x, bool) and str(x).strip()]
        if i == 0:  # the whole reply is JSON but no list of strings (a number, nested dicts...)
            return []
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", ln).strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.endswith(":")]


def parse_questions(text: str) -> list[str]:
    """Binary questions from a reply: `parse_list`'s items, split at '|' (the authors' format
    `question-1 | question-2 | ...`), keeping those that end with '?'."""
    items = [q.strip() for item in parse_list(text) for q in item.split("|")]
    return [q for q in items if q.endswith("?")]


def parse_answers(text: str, n: int) -> list[str] | None:
    """Exactly `n` answers, each 'yes', 'no' or 'unknown' (any case, quotes or a final period
    ignored), from a JSON array (or the values of a JSON object, in order), else one per line
    (numbering removed) or one comma-separated line; None for anything else."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    items: list | None = None
    for open_, close in ("[]", "{}"):
        start, end = text.find(open_), text.rfind(close)
        if 0 <= start < end:
            try:
                obj = json.loads(text[start:end + 1])
            except (json.JSONDecodeError, RecursionError):
                continue
            items = list(obj.values()) if isinstance(obj, dict) else obj
            break
    if items is None:
        lines = [re.sub(r"^\s*(?:[-*•]|\d+[.):]?)\s*", "", ln).strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        items = [x.strip() for x in lines[0].split(",")] if len(lines) == 1 else lines
    if not isinstance(items, list) or len(items) != n:
        return None
    out = []
    for x in items:
        if not isinstance(x, str):
            return None
        word = x.strip().strip("\"'`").rstrip(".").strip().casefold()
        if word not in ANSWERS:
            return None
        out.append(word)
    return out


PARSERS = {"knobo": parse_questions}  # a family's own reader; parse_list for the others


@dataclass
class PriorResult:
    """KnoBo's class x question prior: class-level annotations (1 yes, 0 no, NaN unknown; the
    rows of classes in `unresolved` are all unknown) and, per class, why it failed."""

    annotations: ConceptAnnotations
    unresolved: dict[str, str] = field(default_factory=dict)


_KEEP_QUERY = {"api-version"}  # Azure's API version is not a secret and tells endpoints apart


def redact_url(url: str | None) -> str | None:
    """`url` without user:password@, query-string values (except api-version) or fragment,
    for anything written to disk or shown."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable URL>"
    query = urlencode([(k, v if k.lower() in _KEEP_QUERY else "REDACTED")
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries: user, password and query values (not api-version)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password,
                 *(v for k, v in parse_qsl(parts.query) if k.lower() not in _KEEP_QUERY)]
    except ValueError:
        return []
    return [x for x in found if x and len(x) >= 3]  # shorter ones would redact ordinary text


_BEARER = re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def scrub(text: str, secrets) -> str:
    """`text` with each secret (longest first, so none is left half-replaced) and any
    'Bearer <token>' replaced by REDACTED."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "REDACTED")
    return _BEARER.sub(r"\1\2REDACTED", text)


class _RedactingFilter(logging.Filter):
    """Scrubs registered secrets (and Bearer tokens) from log records of the HTTP stack (httpx
    logs every request URL at INFO, query string and userinfo included) and of conceptlens."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg, self.secrets)
        if clean != msg:
            record.msg, record.args = clean, ()
        return True


_REDACT = _RedactingFilter()
for _name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "openai._base_client", "conceptlens"):
    logging.getLogger(_name).addFilter(_REDACT)


class _Cancelled(LLMError):
    """The run was interrupted; the worker stops without another request."""


@SOURCES.register("llm")
class LLMSource(ConceptSource):
    name = "llm"
    _parameter_constraints: ClassVar[dict[str, list]] = {
        "model": [InstanceOf(str, "a model name (a string)")],
        "base_url": [InstanceOf(str, "the URL of an OpenAI-compatible API"), None],
        "api_key_env": [InstanceOf(str, "the name of an environment variable")],
        "prompts": [StrList(description="a list of strings")],  # which families: checked in __init__
        "n": [Interval(int, 1)], "temperature": [Interval(float, 0, None)], "samples": [Interval(int, 1)],
        "max_tokens": [Interval(int, 1)],
        "timeout": [Interval(float, 0, None, closed="neither", description="a positive number of seconds "
                             "(the deadline of each whole request)")],
        "retries": [Interval(int, 0)], "backoff": [Interval(float, 0, None)],
        "concurrency": [Interval(int, 1)],
        "cache_dir": [InstanceOf((str, os.PathLike), "a folder path"), None],
        "max_reply_bytes": [Interval(int, 1)], "max_concepts_per_class": [Interval(int, 1), None],
        "questions_per_request": [Interval(int, 1)], "answer_temperature": [Interval(float, 0, None)],
    }

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", prompts: Sequence[str] = ("labo",),
                 n: int = 20, temperature: float = 0.7, samples: int = 1, max_tokens: int = 800,
                 timeout: float = 60.0, retries: int = 4, backoff: float = 1.0,
                 concurrency: int = 8, cache_dir: str | Path | None = None,
                 max_reply_bytes: int = 256 * 1024, max_concepts_per_class: int | None = None,
                 questions_per_request: int = 20, answer_temperature: float = 0.0):
        self.check_options(locals())
        unknown = [p for p in prompts if p not in PROMPTS]
        if unknown:
            raise ConfigError(f"Unknown prompt family {unknown}; known: {sorted(PROMPTS)}.")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.prompts, self.n, self.temperature, self.samples = tuple(prompts), n, temperature, samples
        self.max_tokens, self.timeout, self.retries, self.backoff = max_tokens, timeout, retries, backoff
        self.concurrency = concurrency
        self.max_reply_bytes = max_reply_bytes
        # KnoBo's prior: questions per request, and the temperature of yes/no/unknown answers
        self.questions_per_request, self.answer_temperature = questions_per_request, answer_temperature
        # twice what the prompts ask for: room for a talkative model, not for a runaway one
        self.max_concepts_per_class = max_concepts_per_class or 2 * n * len(self.prompts) * samples
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "llm"
        self._client = None

    # -- the client -------------------------------------------------------------------
    def client(self):
        if self._client is None:
            try:
                import openai
            except ImportError as e:
                raise ConfigError("The llm source needs the openai client: pip install openai.") from e
            key = os.environ.get(self.api_key_env)
            if not key:
                if self.base_url is None:
                    raise ConfigError(
                        f"Environment variable {self.api_key_env} is not set. Export your API key "
                        "there, or name another variable with api_key_env (--api-key-env).")
                key = "none"  # local servers (vLLM, Ollama, llama.cpp) often need no key
            # query parameters go to default_query: the client appends its paths to base_url
            # verbatim, which would put them after "?"; userinfo stays in the URL for httpx
            base, query = self.base_url, None
            _REDACT.secrets.update(self._secrets())
            if base:
                parts = urlsplit(base)
                query = dict(parse_qsl(parts.query, keep_blank_values=True)) or None
                base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
            self._client = openai.OpenAI(api_key=key, base_url=base, default_query=query,
                                         timeout=self.timeout,
                                         max_retries=0)  # we retry, so we can report per class
        return self._client

    # -- one request, cached ----------------------------------------------------------
    def _request(self, cls: str, family: str, sample: int) -> dict:
        return {
            "endpoint": redact_url(self.base_url) or "openai", "model": self.model,
            "messages": [{"role": "user", "content": PROMPTS[family].format(cls=cls, n=self.n)
                          + _JSON_INSTRUCTION}],
            "temperature": self.temperature, "max_tokens": self.max_tokens, "sample": sample,
        }

    def _cache_path(self, request: dict) -> Path:
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def complete(self, request: dict, cancel: threading.Event | None = None, usable=None) -> str:
        """The reply text, from the cache or the endpoint; only a reply that `usable(text)`
        accepts is cached, so a malformed one is asked again next run."""
        path = self._cache_path(request)
        if path.is_file():
            try:
                content = json.loads(path.read_text(encoding="utf-8"))["content"]
                if isinstance(content, str) and (usable is None or usable(content)):
                    return content
            except (OSError, ValueError, KeyError, TypeError):
                pass
            log.warning("Ignoring the unreadable LLM cache file %s; asking again.", path)
        content = self._call_with_retries(request, cancel or threading.Event())
        if usable is not None and not usable(content):
            return content
        write_json(path, {"request": request, "content": content,
                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return content

    def _secrets(self) -> list[str]:
        """What must never be shown or written: the API key and the base URL's credentials."""
        key = os.environ.get(self.api_key_env) or ""
        return [x for x in (key, *_url_secrets(self.base_url)) if len(x) >= 3]

    def _scrub(self, text: str) -> str:
        """The one place text from the endpoint or about it is cleaned before it is shown,
        logged or cached: the raw base URL becomes the redacted one, and the API key, the URL's
        credentials and any Bearer token become REDACTED."""
        if self.base_url:
            text = text.replace(self.base_url, redact_url(self.base_url))
        return scrub(text, self._secrets())

    def _call_with_retries(self, request: dict, cancel: threading.Event) -> str:
        """The reply text. `timeout` is a deadline for each whole request (connecting, waiting
        and downloading together), and the request's attempts share one deadline: all of them
        with their backoff waits end within (retries + 1) x timeout + the waits."""
        import openai

        transient = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                     openai.InternalServerError, Overdue)
        waits = [self.backoff * 2**attempt for attempt in range(self.retries)]
        overall = time.monotonic() + (self.retries + 1) * self.timeout + sum(waits)
        client = self.client()  # here, not in the request's thread: a missing key is raised at once
        for attempt in range(self.retries + 1):
            if cancel.is_set():
                raise _Cancelled("Interrupted.")
            deadline = min(time.monotonic() + self.timeout, overall)
            try:
                body = run_by(deadline, lambda d=deadline: self._send(client, request, d), cancel,
                              lambda: _Cancelled("Interrupted."))
                break
            except openai.AuthenticationError as e:
                raise LLMError(f"The endpoint rejected the API key from ${self.api_key_env} "
                               f"(HTTP {e.status_code}); check that variable.") from None
            except transient as e:
                if attempt == self.retries or time.monotonic() >= overall:
                    raise LLMError(self._gave_up(e, attempt + 1)) from None
                if cancel.wait(min(waits[attempt], max(0.0, overall - time.monotonic()))):  # Ctrl-C
                    raise _Cancelled("Interrupted.") from None
            except openai.APIError as e:  # 4xx other than auth: retrying will not help
                raise LLMError(f"{type(e).__name__}: {self._short(e)}") from None
        # scrubbed before it is parsed, quoted in an error or cached: a reply may echo the key
        text = self._scrub(body.decode("utf-8", "surrogateescape"))
        return _content(text.encode("utf-8", "surrogateescape"))

    def _send(self, client, request: dict, deadline: float) -> bytes:
        with client.chat.completions.with_streaming_response.create(
                model=request["model"], messages=request["messages"],
                temperature=request["temperature"], max_tokens=request["max_tokens"]) as raw:
            return self._read_capped(raw, deadline)

    def _gave_up(self, e: Exception, attempts: int) -> str:
        import openai

        if isinstance(e, Overdue | openai.APITimeoutError):
            return (f"Timed out after {attempts} attempt{'s' * (attempts != 1)}: each request must be "
                    f"answered in full within timeout={self.timeout:g} s (connecting, waiting and "
                    "downloading together); raise timeout if the endpoint is only slow.")
        return f"{type(e).__name__} after {attempts} attempts: {self._short(e)}"

    def _short(self, e: Exception) -> str:
        """An exception's first line, scrubbed before it is cut (a cut must not leave half a key)."""
        text = self._scrub(str(e))
        return text.splitlines()[0][:200] if text.strip() else type(e).__name__

    def _read_capped(self, raw, deadline: float = float("inf")) -> bytes:
        """The reply body, refused as soon as it is known to exceed `max_reply_bytes`, and given
        up at `deadline` (between chunks: an abandoned request's thread ends at its next byte)."""
        cap = self.max_reply_bytes
        declared = raw.headers.get("content-length", "")
        too_big = (f"The reply is larger than max_reply_bytes={cap:,} bytes ({{}}); a chat reply of "
                   f"max_tokens={self.max_tokens} is far smaller, so the endpoint is misbehaving. "
                   "Raise max_reply_bytes only if it is not.")
        if declared.isdigit() and int(declared) > cap:
            raise LLMError(too_big.format(f"{int(declared):,} bytes declared"))
        body = bytearray()
        for chunk in raw.iter_bytes():
            body += chunk
            if len(body) > cap:
                raise LLMError(too_big.format(f"more than {cap:,} bytes received"))
            if time.monotonic() > deadline:
                raise Overdue()
        return bytes(body)

    # -- the source -------------------------------------------------------------------
    def _one_class(self, cls: str, cancel: threading.Event | None = None
                   ) -> list[tuple[str, list[str], dict]]:
        entries = []
        for family in self.prompts:
            for sample in range(self.samples):
                request = self._request(cls, family, sample)
                parse = PARSERS.get(family, parse_list)
                items = parse(self.complete(request, cancel, usable=parse))
                if not items:
                    what = "binary question (ending in '?')" if family == "knobo" else "list of strings"
                    raise LLMError(f"Malformed reply to the {family!r} prompt: no {what} could be "
                                   "read from it.")
                if family == "knobo":
                    items = _without_class_name(items, cls)
                prov = {"source": "llm", "prompt": family, "model": self.model,
                        "endpoint": request["endpoint"], "class": cls}
                entries += [(text, [cls], prov) for text in items]
        if len(entries) > self.max_concepts_per_class:
            log.warning("%s: the LLM gave %d concepts, more than max_concepts_per_class=%d (n=%d per "
                        "prompt was asked for); keeping the first %d.", cls, len(entries),
                        self.max_concepts_per_class, self.n, self.max_concepts_per_class)
            entries = entries[: self.max_concepts_per_class]
        return entries

    def generate(self, classes: Sequence[str], allow_partial: bool = False) -> SourceResult:
        unique = list(dict.fromkeys(classes))
        results, failed = self._run(unique)
        entries = [e for cls in unique for e in results.get(cls, [])]
        if failed and not allow_partial:
            done = len(unique) - len(failed)
            raise LLMError(
                f"Concept generation failed for {len(failed)} of {len(unique)} classes: "
                + "; ".join(f"{c}: {why}" for c, why in list(failed.items())[:5])
                + f". The {done} finished classes are cached in {self.cache_dir}; rerun to resume,"
                " or pass allow_partial=True (--allow-partial) to keep what finished.")
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, failed, rejected)

    def _run(self, classes: list[str], job=None) -> tuple[dict, dict]:
        """Each class's entries, by daemon worker threads: an interrupt (or any error) in the
        caller sets `cancel` and returns at once, without waiting for requests in flight
        (a ThreadPoolExecutor would join its threads, through every retry, before exiting).
        `job(cls, cancel)` does one class's work (default: its concept entries)."""
        job = job or self._one_class
        jobs: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for cls in classes:
            jobs.put(cls)
        cancel = threading.Event()

        def work():
            while not cancel.is_set():
                try:
                    cls = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((cls, job(cls, cancel), None))
                except LLMError as e:
                    done.put((cls, None, self._scrub(str(e))))
                except BaseException as e:  # a bug: re-raised in the caller, not lost in a thread
                    done.put((cls, None, e))

        for i in range(min(self.concurrency, len(classes))):
            threading.Thread(target=work, name=f"conceptlens-llm-{i}", daemon=True).start()
        results, failed = {}, {}
        try:
            while len(results) + len(failed) < len(classes):
                try:
                    cls, entries, error = done.get(timeout=0.1)  # short waits: Ctrl-C is seen at once
                except queue.Empty:
                    continue
                if isinstance(error, BaseException):
                    raise error
                if error is None:
                    results[cls] = entries
                else:
                    failed[cls] = error
        finally:
            cancel.set()
        return results, failed

    # -- KnoBo's class x question prior -------------------------------------------------
    def _prior_request(self, cls: str, questions: Sequence[str]) -> dict:
        listed = "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
        prompt = PRIOR_PROMPT.format(cls=cls, questions=listed, n=len(questions))
        return {"endpoint": redact_url(self.base_url) or "openai", "model": self.model,
                "messages": [{"role": "user", "content": prompt}], "task": "knobo_prior",
                "temperature": self.answer_temperature, "max_tokens": self.max_tokens, "sample": 0}

    def _prior_class(self, cls: str, questions: list[str], cancel: threading.Event | None = None
                     ) -> list[float]:
        values: list[float] = []
        step = self.questions_per_request
        for start in range(0, len(questions), step):
            chunk = questions[start:start + step]
            n = len(chunk)
            text = self.complete(self._prior_request(cls, chunk), cancel,
                                 usable=lambda t, n=n: parse_answers(t, n) is not None)
            answers = parse_answers(text, n)
            if answers is None:
                raise LLMError(
                    f"Malformed reply to the prior prompt (questions {start + 1}-{start + len(chunk)}): "
                    f"expected a JSON array of {len(chunk)} answers, each yes, no or unknown; got "
                    f"{text.strip()[:80]!r}.")
            values += [ANSWERS[a] for a in answers]
        return values

    def answer_prior(self, classes: Sequence[str], questions: Sequence[str],
                     allow_partial: bool = False) -> PriorResult:
        """KnoBo's prior: the LLM answers each question for each class with yes / no / unknown
        (`questions_per_request` questions per request, at `answer_temperature`). Classes that
        fail are reported by class (LLMError naming them, or in `unresolved` with
        `allow_partial`, their rows unknown); finished classes are cached."""
        unique = list(dict.fromkeys(str(c) for c in classes))
        questions = [str(q) for q in questions]
        if not unique or not questions:
            raise ConfigError(f"answer_prior needs at least one class and one question; got "
                              f"{len(unique)} classes and {len(questions)} questions.")
        results, failed = self._run(unique, lambda cls, cancel: self._prior_class(cls, questions, cancel))
        if failed and not allow_partial:
            raise LLMError(
                f"Prior answers failed for {len(failed)} of {len(unique)} classes: "
                + "; ".join(f"{c}: {why}" for c, why in list(failed.items())[:5])
                + f". The finished classes are cached in {self.cache_dir}; rerun to resume, or pass "
                "allow_partial=True to keep them (the failed classes' answers are then unknown).")
        values = np.array([results.get(c, [np.nan] * len(questions)) for c in unique], np.float32)
        annotations = ConceptAnnotations("class", tuple(questions), values, classes=tuple(unique),
                                         provenance=f"llm:{self.model} (KnoBo prior)")
        return PriorResult(annotations, failed)


def _without_class_name(questions: list[str], cls: str) -> list[str]:
    """The prompt's rule 4 ("must not contain the class name"), checked: offenders dropped."""
    name = re.compile(rf"(?<!\w){re.escape(cls.strip())}(?!\w)", re.I)
    kept = [q for q in questions if not name.search(q)]
    if len(kept) < len(questions):
        log.warning("%s: dropped %d binary question(s) that name the class, e.g. %r.", cls,
                    len(questions) - len(kept), next(q for q in questions if name.search(q)))
    return kept


def _content(body: bytes) -> str:
    """The message text of a chat-completions reply body; LLMError for anything else."""
    def bad(what: str) -> LLMError:
        return LLMError(f"Malformed reply: {what}; expected an OpenAI chat-completions JSON object "
                        "with choices[0].message.content. Is this an OpenAI-compatible endpoint?")

    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        head = body[:60].decode("utf-8", "replace")
        raise bad(f"not JSON ({head!r}...)") from None
    if not isinstance(obj, dict):
        raise bad(f"a JSON {type(obj).__name__}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad(f"'choices' is {type(choices).__name__ if choices is not None else 'missing'}"
                  + (" (empty)" if choices == [] else ""))
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise bad(f"choices[0].message is {type(message).__name__}")
    refusal = message.get("refusal")
    if refusal:
        raise LLMError(f"The model refused: {str(refusal)[:200]}")
    content = message.get("content")
    if content is None or content == "":
        raise LLMError("The reply has no content.")
    if not isinstance(content, str):
        raise bad(f"choices[0].message.content is a JSON {type(content).__name__}, not text")
    return content

