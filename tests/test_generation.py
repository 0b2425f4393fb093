import json

import pytest
import torch

from perceive_anything.generation import GenerationSettings, SharedPrompt, generate, process_logits, stream

VOCAB = 64


@pytest.fixture(scope="module")
def llm():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=VOCAB, tie_word_embeddings=True, rope_theta=10000.0,
                      max_position_embeddings=512)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).eval()
    # Sharper logits than the default init, so that sampling tests are not degenerate.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)
    return model


def _embeds(llm, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, 32, generator=g)


def _reference_greedy(llm, embeds, n, penalty=None):
    """No cache: re-run the whole sequence every step."""
    tokens, logits_seen = [], []
    x = embeds
    for _ in range(n):
        with torch.no_grad():
            logits = llm(inputs_embeds=x).logits[:, -1].float()
        scores = logits.clone()
        if penalty and tokens:
            ids = torch.tensor([tokens])
            s = scores.gather(1, ids)
            scores = scores.scatter(1, ids, torch.where(s < 0, s * penalty, s / penalty))
        t = int(scores.argmax())
        tokens.append(t)
        logits_seen.append(logits)
        x = torch.cat([x, llm.get_input_embeddings()(torch.tensor([[t]]))], dim=1)
    return tokens, torch.cat(logits_seen)


def test_greedy_is_argmax_and_matches_uncached_loop(llm):
    emb = _embeds(llm, 7, 1)
    out = generate(llm, emb, settings=GenerationSettings(max_new_tokens=10), record_logits=True)
    ref_tokens, ref_logits = _reference_greedy(llm, emb, 10)
    assert out.sequences[0].tolist() == ref_tokens
    assert torch.allclose(out.step_logits[:, 0], ref_logits, atol=1e-5)
    assert torch.equal(out.step_scores.argmax(-1)[:, 0], out.sequences[0])
    assert out.lengths.tolist() == [10]


def test_repetition_penalty_semantics():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.5]])
    s = GenerationSettings(repetition_penalty=2.0)
    # nothing generated yet: the prompt is never penalised
    assert torch.equal(process_logits(logits, torch.empty(1, 0, dtype=torch.long), s), logits)
    out = process_logits(logits, torch.tensor([[0, 1, 1]]), s)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0, 0.5]]
    # greedy ignores temperature/top-k/top-p but not the penalty
    s2 = GenerationSettings(repetition_penalty=2.0, temperature=0.5, top_k=1, top_p=0.1)
    assert torch.equal(process_logits(logits, torch.tensor([[0]]), s2), torch.tensor([[1.0, -2.0, 1.0, -1.0, 0.5]]))


def test_repetition_penalty_in_decoding_matches_reference(llm):
    emb = _embeds(llm, 5, 2)
    out = generate(llm, emb, settings=GenerationSettings(max_new_tokens=12, repetition_penalty=1.3))
    ref_tokens, _ = _reference_greedy(llm, emb, 12, penalty=1.3)
    assert out.sequences[0].tolist() == ref_tokens


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty`")
def test_matches_transformers_generate(llm):
    emb = _embeds(llm, 6, 3)
    ours = generate(llm, emb, settings=GenerationSettings(max_new_tokens=8, repetition_penalty=1.05))
    with torch.no_grad():
        theirs = llm.generate(inputs_embeds=emb, attention_mask=torch.ones(1, 6, dtype=torch.long), do_sample=False,
                              max_new_tokens=8, repetition_penalty=1.05, pad_token_id=0, eos_token_id=None)
    assert ours.sequences[0].tolist() == theirs[0, -8:].tolist()


def test_eos_stops_and_is_kept(llm):
    emb = _embeds(llm, 7, 1)
    free = generate(llm, emb, settings=GenerationSettings(max_new_tokens=10)).sequences[0].tolist()
    k = 3
    eos = free[k]
    first = free.index(eos)
    out = generate(llm, emb, settings=GenerationSettings(max_new_tokens=10, eos_token_id=[eos, VOCAB - 1]))
    assert out.sequences[0].tolist() == free[: first + 1]
    assert out.lengths.tolist() == [first + 1]


def test_left_padded_batch_equals_unbatched(llm):
    a, b = _embeds(llm, 9, 4), _embeds(llm, 5, 5)
    settings = GenerationSettings(max_new_tokens=8, repetition_penalty=1.1, pad_token_id=0)
    single = [generate(llm, x, settings=settings, record_logits=True) for x in (a, b)]
    batch = torch.zeros(2, 9, 32)
    batch[0] = a[0]
    batch[1, 4:] = b[0]
    mask = torch.tensor([[1] * 9, [0] * 4 + [1] * 5])
    out = generate(llm, batch, mask, settings=settings, record_logits=True)
    for row in range(2):
        assert out.sequences[row].tolist() == single[row].sequences[0].tolist()
        assert torch.allclose(out.step_logits[:, row], single[row].step_logits[:, 0], atol=1e-5)


def _flat_rows(prefix, segments, segment_of_row, suffixes):
    """The rows of a SharedPrompt written out in full and left-padded: the one-pass reference."""
    rows = [torch.cat([prefix, segments[g], x]) for g, x in zip(segment_of_row, suffixes)]
    width = max(r.shape[0] for r in rows)
    batch = torch.zeros(len(rows), width, rows[0].shape[1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, width - r.shape[0]:] = r
        mask[i, width - r.shape[0]:] = 1
    return batch, mask


@pytest.mark.parametrize("prefix_len,prefix_once", [(0, False), (5, False), (5, True)])
def test_shared_prompt_decodes_like_the_rows_written_out(llm, prefix_len, prefix_once):
    """Each segment (behind the prefix, or on the prefix's cache prefilled once) once for its rows,
    suffixes of different lengths padded after the segment: same tokens and logits as the full rows
    left-padded in one pass, and as each row alone."""
    g = torch.Generator().manual_seed(11)
    prefix = torch.randn(prefix_len, 32, generator=g)
    segments = torch.randn(3, 6, 32, generator=g)
    segment_of_row = [0, 0, 1, 2, 2, 1]
    suffixes = [torch.randn(n, 32, generator=g) for n in (4, 1, 7, 2, 4, 3)]
    eos = int(generate(llm, torch.cat([prefix, segments[0], suffixes[0]])[None],
                       settings=GenerationSettings(max_new_tokens=3)).sequences[0, 2])
    settings = GenerationSettings(max_new_tokens=9, repetition_penalty=1.2, eos_token_id=[eos], pad_token_id=0)
    shared = generate(llm, SharedPrompt(prefix, segments, segment_of_row, suffixes, prefix_once=prefix_once),
                      settings=settings, record_logits=True)
    batch, mask = _flat_rows(prefix, segments, segment_of_row, suffixes)
    flat = generate(llm, batch, mask, settings=settings, record_logits=True)
    assert torch.equal(shared.sequences, flat.sequences) and torch.equal(shared.lengths, flat.lengths)
    assert torch.allclose(shared.step_logits, flat.step_logits, atol=1e-5)
    assert int(shared.lengths.min()) < 9  # the EOS stopped a row early while others went on
    for row in range(len(suffixes)):
        alone = generate(llm, batch[row : row + 1, int((mask[row] == 0).sum()):], settings=settings)
        assert shared.row_tokens(row) == alone.row_tokens(0)


def test_shared_prompt_checks_its_parts():
    h = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="suffix of at least one"):
        SharedPrompt(h, torch.zeros(1, 3, 8), [0], [torch.zeros(0, 8)])
    with pytest.raises(ValueError, match="index the 1 segments"):
        SharedPrompt(h, torch.zeros(1, 3, 8), [1], [torch.zeros(2, 8)])
    with pytest.raises(ValueError, match="one segment per row"):
        SharedPrompt(h, torch.zeros(1, 3, 8), [0, 0], [torch.zeros(2, 8)])
    with pytest.raises(ValueError, match="width 8"):
        SharedPrompt(h, torch.zeros(1, 3, 8), [0], [torch.zeros(2, 4)])


def test_batch_rows_finish_independently(llm):
    a, b = _embeds(llm, 6, 6), _embeds(llm, 6, 7)
    free_a = generate(llm, a, settings=GenerationSettings(max_new_tokens=6)).sequences[0].tolist()
    eos = free_a[1]
    settings = GenerationSettings(max_new_tokens=6, eos_token_id=[eos], pad_token_id=VOCAB - 1)
    out = generate(llm, torch.cat([a, b]), settings=settings)
    stop = free_a.index(eos) + 1
    assert out.lengths[0] == stop
    assert out.sequences[0, :stop].tolist() == free_a[:stop]
    assert (out.sequences[0, stop:] == VOCAB - 1).all()
    single_b = generate(llm, b, settings=settings)
    assert out.row_tokens(1) == single_b.row_tokens(0)


def test_streaming_sees_every_token(llm):
    emb = _embeds(llm, 4, 8)
    seen = []
    out = generate(llm, emb, settings=GenerationSettings(max_new_tokens=7), on_token=lambda ev: seen.append(int(ev.tokens[0])))
    assert seen == out.sequences[0].tolist()
    events = list(stream(llm, emb, settings=GenerationSettings(max_new_tokens=7)))
    assert [e.step for e in events] == list(range(7))
    assert [int(e.tokens[0]) for e in events] == seen


def test_sampling_is_seedable_and_top_k_one_is_greedy(llm):
    emb = _embeds(llm, 5, 9)
    s = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, seed=123)
    x = generate(llm, emb, settings=s).sequences
    y = generate(llm, emb, settings=s).sequences
    assert torch.equal(x, y)
    g = torch.Generator().manual_seed(123)
    z = generate(llm, emb, settings=s.replace(seed=None), generator=g).sequences
    assert torch.equal(x, z)
    greedy = generate(llm, emb, settings=GenerationSettings(max_new_tokens=10)).sequences
    topk1 = generate(llm, emb, settings=s.replace(top_k=1)).sequences
    assert torch.equal(topk1, greedy)
    tiny_p = generate(llm, emb, settings=s.replace(top_p=1e-6)).sequences
    assert torch.equal(tiny_p, greedy)


def test_top_k_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    s = GenerationSettings(do_sample=True, top_k=2)
    assert torch.isinf(process_logits(logits, torch.empty(1, 0, dtype=torch.long), s)[0, 2:]).all()
    s = GenerationSettings(do_sample=True, top_p=0.7)
    out = process_logits(logits, torch.empty(1, 0, dtype=torch.long), s)
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()
    s = GenerationSettings(do_sample=True, temperature=0.5)
    assert torch.allclose(process_logits(logits, torch.empty(1, 0, dtype=torch.long), s), logits / 0.5)


def test_settings_from_generation_config_json(tmp_path):
    p = tmp_path / "generation_config.json"
    p.write_text(json.dumps({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                             "repetition_penalty": 1.05, "eos_token_id": [2351, 2349], "pad_token_id": 2349}))
    s = GenerationSettings.from_generation_config_json(p)
    assert (s.do_sample, s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (True, 0.7, 0.8, 20, 1.05)
    assert s.eos_token_id == [2351, 2349] and s.pad_token_id == 2349
    nb = s.official_notebook()
    assert (nb.do_sample, nb.temperature, nb.top_p, nb.top_k, nb.repetition_penalty, nb.max_new_tokens) == (
        True, 0.1, None, 20, 1.05, 512)
    g = s.official_greedy(12)
    assert (g.do_sample, g.temperature, g.top_p, g.repetition_penalty, g.max_new_tokens) == (False, None, None, 1.05, 12)
    preset = GenerationSettings.notebook_preset()
    assert (preset.do_sample, preset.temperature, preset.top_p, preset.max_new_tokens) == (True, 0.1, None, 512)
    d = GenerationSettings()
    assert not d.do_sample and d.repetition_penalty is None
    with pytest.raises(ValueError):
        GenerationSettings(do_sample=True, temperature=0.0)
