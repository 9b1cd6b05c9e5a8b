"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol, for testing
LLM concept sources (conceptlens.concepts.sources.llm) without a network or a key.

Its behaviour is chosen by the class name found in the prompt:
- 'slowpoke' sleeps longer than any test timeout; 'garbled' answers 200 with a non-JSON body;
- 'refuser' answers with a refusal; 'flaky' fails with 500 on its first request;
- 'chatty' wraps its JSON in prose and a code fence; anything else gets a JSON array.
A key 'bad-key' gets 401. Requests are counted per class.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Serve `handler` on a free loopback port while used as a context manager."""

    def _serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class ChatServer(LoopbackServer):
    def __init__(self):
        self.requests: Counter[str] = Counter()
        self.keys: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.keys.append(self.headers.get("Authorization", ""))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "not found"}}')
                if self.headers.get("Authorization") == "Bearer bad-key":
                    return self._send(401, json.dumps({"error": {"message": "Incorrect API key",
                                      "type": "invalid_request_error"}}).encode())
                prompt = payload["messages"][-1]["content"]
                m = re.search(r"the ([\w ]+?) looks like|as a \"([^\"]+)\"|word \"([^\"]+)\""
                              r"|around a \"([^\"]+)\"", prompt)
                cls = next(g for g in m.groups() if g)
                server.requests[cls] += 1
                if cls == "slowpoke":
                    time.sleep(3)
                if cls == "garbled":
                    return self._send(200, b"<html>502 bad gateway</html>", "text/html")
                if cls == "flaky" and server.requests[cls] == 1:
                    return self._send(500, b'{"error": {"message": "overloaded"}}')
                message = {"role": "assistant", "content": None, "refusal": None}
                if cls == "refuser":
                    message["refusal"] = "I can't help with that."
                else:
                    items = [f"{cls} feature {i}" for i in range(3)] + ["shared trait"]
                    content = json.dumps(items)
                    if cls == "chatty":
                        content = f"Sure! Here you go:\n```json\n{content}\n```\nHope it helps."
                    message["content"] = content
                body = {"id": "cmpl-1", "object": "chat.completion", "created": 0,
                        "model": payload["model"],
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                return self._send(200, json.dumps(body).encode())

        self._serve(Handler)
