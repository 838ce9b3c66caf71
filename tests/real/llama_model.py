"""A tiny llama-architecture GGUF whose real inference gives chosen, deterministic answers.

Written with the ``gguf`` package at test time (no weights in the repository, nothing downloaded). The
vocabulary is byte-level BPE (GPT-2 byte mapping, Qwen2 pre-tokenizer) with Qwen2.5-Coder's FIM, repository
and ChatML tokens, so llama-server tokenises, templates (``/infill``, the ChatML chat template), samples,
streams and stops for real.

With the attention output and feed-forward down projections zeroed, the residual stream at each position is
the embedding of that position's token, so the logits depend on the last token alone: the weights are a
bigram table. Each token's embedding is the one-hot vector of the token that follows it; the output matrix
maps that vector back to the follower with a large logit, and every other token is followed by
``<|endoftext|>``. The answers:

- after ``<|fim_middle|>``: ``FIM_ANSWER`` then end of text (what template FIM and ``/infill`` with the
  cursor at a line start produce);
- after the chat template's ``<|im_start|>assistant\\n``: ``CHAT_ANSWER`` (a fenced Python block) then
  ``<|im_end|>``;
- after anything else (a prompt that ends in the document's own text, as ``prompt`` + an ignored ``suffix``
  on ``/v1/completions`` does): end of text at once, an empty answer.
"""

from __future__ import annotations

from pathlib import Path

FIM_ANSWER = "    return a + b"
CHAT_CODE = "def add(a, b):\n    return a + b\n"
CHAT_ANSWER = "```python\n" + CHAT_CODE + "```"

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
           "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


def _byte_tokens() -> list[str]:
    """The 256 byte tokens of byte-level BPE, spelled with GPT-2's printable byte-to-unicode mapping."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def build(path: Path) -> Path:
    """Write the model to ``path`` (a few hundred KB) and return it."""
    import gguf
    import numpy as np

    bytes_ = _byte_tokens()
    # A few merges so the BPE path is exercised ("  " and "    " are single tokens, as in Qwen's vocabulary).
    sp = bytes_[ord(" ")]
    merged = [sp * 2, sp * 4]
    merges = [f"{sp} {sp}", f"{sp * 2} {sp * 2}"]
    # Tokens whose text is copied as it is (user-defined): the answers' pieces and the chat turn opener.
    pieces = ["assistant\n", "```python\n", CHAT_CODE, "```", FIM_ANSWER]
    tokens = bytes_ + merged + list(SPECIAL) + pieces
    types = ([gguf.TokenType.NORMAL] * (256 + len(merged)) + [gguf.TokenType.CONTROL] * len(SPECIAL)
             + [gguf.TokenType.USER_DEFINED] * len(pieces))
    tid = {t: i for i, t in enumerate(tokens)}
    n_vocab = len(tokens)
    eot = tid["<|endoftext|>"]
    follows = {tid["<|fim_middle|>"]: tid[FIM_ANSWER], tid[FIM_ANSWER]: eot,
               tid["assistant\n"]: tid["```python\n"], tid["```python\n"]: tid[CHAT_CODE],
               tid[CHAT_CODE]: tid["```"], tid["```"]: tid["<|im_end|>"]}
    nxt = np.full(n_vocab, eot, dtype=np.int64)
    for a, b in follows.items():
        nxt[a] = b

    n_embd = 64  # >= the number of distinct followers (one embedding direction each), and a multiple of heads
    n_head, n_ff = 4, 64
    followers = sorted(set(nxt.tolist()))
    assert len(followers) <= n_embd
    direction = {f: i for i, f in enumerate(followers)}
    emb = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for t in range(n_vocab):
        emb[t, direction[int(nxt[t])]] = 1.0
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    # After RMSNorm a one-hot vector becomes sqrt(n_embd) on its axis: the follower's logit is 4 * 8 = 32,
    # every other logit 0, so sampling at any usual temperature picks the follower.
    for f, i in direction.items():
        out[f, i] = 4.0
    rng = np.random.default_rng(15)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("hapa-bigram-test")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_pad_token_id(eot)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", out)
    w.add_tensor("blk.0.attn_norm.weight", ones)
    w.add_tensor("blk.0.attn_q.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.attn_k.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.attn_v.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.attn_output.weight", np.zeros((n_embd, n_embd), dtype=np.float32))  # attention adds 0
    w.add_tensor("blk.0.ffn_norm.weight", ones)
    w.add_tensor("blk.0.ffn_gate.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", np.zeros((n_embd, n_ff), dtype=np.float32))  # the FFN adds 0
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
