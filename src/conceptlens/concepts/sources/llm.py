"""`llm`: any endpoint that speaks the OpenAI chat-completions protocol.

OpenAI, vLLM, Ollama, llama.cpp's server... are all reached through the `openai` client
with a base URL. The API key is read from the environment variable the user names and is
never written anywhere. Each request's reply is cached on disk under a hash of endpoint,
model, messages and sampling settings, so a rerun costs nothing and an interrupted run
resumes with the classes it had finished. Transient failures (timeouts, connection errors,
429, 5xx) are retried with exponential backoff; a bad key fails at once; whatever still
fails is reported by class, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from ..._io import cache_root, write_json
from ...errors import ConceptLensError, ConfigError
from ..normalize import collect
from .base import SOURCES, ConceptSource, SourceResult

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
}


class LLMError(ConceptLensError):
    """An LLM request that failed for good (after retries where retrying makes sense)."""


def parse_list(text: str) -> list[str]:
    """Concepts from a reply: a JSON array (possibly inside prose or a code fence, or under
    one key of an object), else one item per line with bullets and numbering removed."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    for candidate in (text, *re.findall(r"\[.*\]", text, re.S)):
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if isinstance(obj, list):
            return [str(x).strip() for x in obj if isinstance(x, str | int | float) and str(x).strip()]
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", ln).strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.endswith(":")]


@SOURCES.register("llm")
class LLMSource(ConceptSource):
    name = "llm"

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", prompts: Sequence[str] = ("labo",),
                 n: int = 20, temperature: float = 0.7, samples: int = 1, max_tokens: int = 800,
                 timeout: float = 60.0, retries: int = 4, backoff: float = 1.0,
                 concurrency: int = 8, cache_dir: str | Path | None = None):
        unknown = [p for p in prompts if p not in PROMPTS]
        if unknown:
            raise ConfigError(f"Unknown prompt family {unknown}; known: {sorted(PROMPTS)}.")
        if concurrency < 1 or retries < 0 or samples < 1:
            raise ConfigError("concurrency and samples must be >= 1 and retries >= 0.")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.prompts, self.n, self.temperature, self.samples = tuple(prompts), n, temperature, samples
        self.max_tokens, self.timeout, self.retries, self.backoff = max_tokens, timeout, retries, backoff
        self.concurrency = concurrency
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
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                         max_retries=0)  # we retry, so we can report per class
        return self._client

    # -- one request, cached ----------------------------------------------------------
    def _request(self, cls: str, family: str, sample: int) -> dict:
        return {
            "endpoint": self.base_url or "openai", "model": self.model,
            "messages": [{"role": "user", "content": PROMPTS[family].format(cls=cls, n=self.n)
                          + _JSON_INSTRUCTION}],
            "temperature": self.temperature, "max_tokens": self.max_tokens, "sample": sample,
        }

    def _cache_path(self, request: dict) -> Path:
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def complete(self, request: dict) -> str:
        path = self._cache_path(request)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["content"]
        content = self._call_with_retries(request)
        write_json(path, {"request": request, "content": content,
                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return content

    def _call_with_retries(self, request: dict) -> str:
        import openai

        transient = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                     openai.InternalServerError)
        for attempt in range(self.retries + 1):
            try:
                reply = self.client().chat.completions.create(
                    model=request["model"], messages=request["messages"],
                    temperature=request["temperature"], max_tokens=request["max_tokens"])
                break
            except openai.AuthenticationError as e:
                raise LLMError(f"The endpoint rejected the API key from ${self.api_key_env} "
                               f"(HTTP {e.status_code}); check that variable.") from None
            except transient as e:
                if attempt == self.retries:
                    raise LLMError(f"{type(e).__name__} after {self.retries + 1} attempts: "
                                   f"{_short(e)}") from None
                time.sleep(self.backoff * 2**attempt)
            except openai.APIError as e:  # 4xx other than auth: retrying will not help
                raise LLMError(f"{type(e).__name__}: {_short(e)}") from None
        try:
            message = reply.choices[0].message
        except (AttributeError, IndexError, TypeError):
            raise LLMError("The reply has no choices[0].message; is this an OpenAI-compatible "
                           "chat-completions endpoint?") from None
        if getattr(message, "refusal", None):
            raise LLMError(f"The model refused: {message.refusal[:200]}")
        if not message.content:
            raise LLMError("The reply has no content.")
        return message.content

    # -- the source -------------------------------------------------------------------
    def _one_class(self, cls: str) -> list[tuple[str, list[str], dict]]:
        entries = []
        for family in self.prompts:
            for sample in range(self.samples):
                request = self._request(cls, family, sample)
                items = parse_list(self.complete(request))
                if not items:
                    raise LLMError(f"No list could be read from the reply to the {family!r} prompt.")
                prov = {"source": "llm", "prompt": family, "model": self.model,
                        "endpoint": request["endpoint"], "class": cls}
                entries += [(text, [cls], prov) for text in items]
        return entries

    def generate(self, classes: Sequence[str], allow_partial: bool = False) -> SourceResult:
        entries, failed = [], {}
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {cls: pool.submit(self._one_class, cls) for cls in classes}
            for cls, fut in futures.items():
                try:
                    entries += fut.result()
                except LLMError as e:
                    failed[cls] = str(e)
        if failed and not allow_partial:
            done = len(classes) - len(failed)
            raise LLMError(
                f"Concept generation failed for {len(failed)} of {len(classes)} classes: "
                + "; ".join(f"{c}: {why}" for c, why in list(failed.items())[:5])
                + f". The {done} finished classes are cached in {self.cache_dir}; rerun to resume,"
                " or pass allow_partial=True (--allow-partial) to keep what finished.")
        concepts, rejected = collect(entries, classes=classes)
        return SourceResult(concepts, failed, rejected)


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
