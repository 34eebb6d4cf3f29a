"""A tiny random-weight Gemma-3 model directory in transformers' format, for the torch backend.

A byte-level BPE tokenizer (trained here on a few sentences, 400 tokens) and a 3-layer Gemma-3
text model with a 16-token sliding window, so short inputs exercise the sliding layers' ring of
KV slots. Written in a second; no file is downloaded.
"""
from __future__ import annotations

from pathlib import Path

SAMPLE_TEXT = [
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.",
    "Le cœur a ses raisons que la raison ne connaît point. Ästhetik, naïve, façade, 東京, Привет мир.",
    "def main(argv):\n    return 0\n\nif __name__ == '__main__':\n    main(sys.argv)\n",
]


def write_tiny_hf_model(directory: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SAMPLE_TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    config = Gemma3TextConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=4096,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():  # larger than the default init, so the logits are far from uniform
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
