"""A small real OpenAI-compatible chat server for the LLM-judge tests (run as a separate process).

``python judge_server.py PORT [FAIL_FIRST]`` answers ``POST /v1/chat/completions`` deterministically from
the request text: for a G-STDC prompt, the score is 5 x the fraction of "Model segments" lines whose text
equals the reference line of the same number; for a VideoRefer-D prompt, SC = AD = round(5 x word overlap),
TD = 0, HD = 5; for a Ferret prompt, "8 <1 + round(9 x word overlap)>"; for a DLC-Bench question, "No" to
the recognition question when the class is a zebra, "Yes" otherwise, and "A" to every other question; a
Ref-L4 condensing request gets the description's first three words. The first FAIL_FIRST requests get HTTP 503 (to exercise
retries). ``GET /count`` returns how many chat requests (and PNG images) arrived (to check the judgement cache).
"""

from __future__ import annotations

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"requests": 0, "fail_first": 0, "images": 0}


def segments(block: str) -> dict[str, str]:
    return dict(re.findall(r"^Segment (\d+): (.*)$", block, flags=re.MULTILINE))


def overlap(a: str, b: str) -> float:
    """Jaccard overlap of the lower-cased word sets."""
    x, y = set(a.lower().split()), set(b.lower().split())
    return len(x & y) / len(x | y) if x | y else 0.0


def videorefer_scores(reference: str, prediction: str) -> dict[str, int]:
    s = round(5 * overlap(reference, prediction))
    return {"SC": s, "AD": s, "TD": 0, "HD": 5}


def ferret_scores(reference: str, prediction: str) -> tuple[int, int]:
    return 8, 1 + round(9 * overlap(reference, prediction))


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def judge(prompt: str) -> str:
    if "Subject Correspondence (SC)" in prompt:
        ref = between(prompt, "Reference description:", "\nPredicted description:")
        pred = between(prompt, "Predicted description:", "\n\nAnswer with one JSON")
        return json.dumps(videorefer_scores(ref, pred))
    if prompt.startswith("Condense the following description"):
        return " ".join(prompt.split("Description:", 1)[1].split()[:3])
    if "Answer the multiple-choice question using only" in prompt:
        question = prompt.split("Question:", 1)[1].strip()
        if question.startswith("Is it likely"):
            return "No" if "zebra" in question else "Yes"
        return "A"
    if "[Assistant 1]" in prompt:
        ref = between(prompt, "[Assistant 1]", "[End of Assistant 1]")
        pred = between(prompt, "[Assistant 2]", "[End of Assistant 2]")
        a, b = ferret_scores(ref, pred)
        return f"{a} {b}\nAssistant 2 shares words with the reference."
    ref_part, _, rest = prompt.partition("Model segments:")
    ref = segments(ref_part.split("Reference segments:")[-1])
    pred = segments(rest.split("Answer exactly")[0])
    same = sum(1 for k, v in pred.items() if ref.get(k) == v)
    score = 5.0 * same / max(len(ref), 1)
    return f"Continuity Score: {score:g}\nExplanation: {same} of {len(ref)} segments match."


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/count":
            self._send(200, {"requests": STATE["requests"], "images": STATE["images"]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        STATE["requests"] += 1
        if STATE["requests"] <= STATE["fail_first"]:
            self._send(503, {"error": {"message": "overloaded, try again"}})
            return
        prompt = body["messages"][-1]["content"]
        if isinstance(prompt, list):  # text + image parts (a vision request)
            STATE["images"] += sum(1 for part in prompt if part.get("type") == "image_url"
                                   and part["image_url"]["url"].startswith("data:image/png;base64,"))
            prompt = "".join(part.get("text", "") for part in prompt)
        self._send(200, {
            "id": f"chatcmpl-{STATE['requests']}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": judge(prompt)}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })


if __name__ == "__main__":
    STATE["fail_first"] = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()
