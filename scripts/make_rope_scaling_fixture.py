#!/usr/bin/env python3
"""Writes the rotary-scaling reference fixtures of cmt-runtime's `rope_scaling_hf` test.

Two tiny random LlamaForCausalLM models, each saved as an HF directory (config.json +
model.safetensors in bf16) under crates/cmt-runtime/tests/fixtures/rope_scaling/<name>/,
with HF transformers' f32 logits of one fixed token sequence in logits.safetensors
(tensors `ids` [n] i32 and `logits` [n, vocab] f32; metadata: versions, and how far the
logits would move if the scaling were ignored):

- `llama3`: Llama-3.x rotary scaling in the legacy layout real Llama 3.x checkpoints use
  (top-level `rope_scaling` with `rope_type: llama3`, top-level `rope_theta`).
- `linear`: linear scaling in the layout transformers 5 writes (`rope_parameters` holding
  `rope_type: linear`, `factor` and `rope_theta`).

The logits are computed by reloading each saved directory with `from_pretrained` in f32,
so HF reads the same config.json the runtime reads. Weights are stored in bf16 (exact in
f32) to keep the files small. The sequence (80 tokens) runs past
`original_max_position_embeddings` (64) and the scaled wavelengths, so ignoring the
scaling moves the logits by far more than the test's 1e-4 tolerance (see metadata
`max_abs_diff_if_unscaled`).

Last run with torch 2.15.0+cu132 (CPU) and transformers 5.24.0.
Usage: python scripts/make_rope_scaling_fixture.py  (needs torch, transformers, safetensors)
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "cmt-runtime",
    "tests",
    "fixtures",
    "rope_scaling",
)
SEQ = 80
VOCAB = 128

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    attention_bias=False,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (rope_theta, scaling dict, layout written to config.json)
MODELS = {
    "llama3": (
        10_000.0,
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        "rope_scaling",
    ),
    "linear": (50_000.0, {"rope_type": "linear", "factor": 4.0}, "rope_parameters"),
}


def rewrite_config(path, theta, scaling, layout):
    """Writes the rotary fields of config.json in the chosen layout (and only there)."""
    with open(path) as f:
        cfg = json.load(f)
    for k in ("rope_scaling", "rope_parameters", "rope_theta"):
        cfg.pop(k, None)
    if layout == "rope_scaling":
        cfg["rope_theta"] = theta
        cfg["rope_scaling"] = dict(scaling)
    else:
        cfg["rope_parameters"] = dict(scaling, rope_theta=theta)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


@torch.no_grad()
def logits_of(model_dir, ids, drop_scaling=False):
    config = LlamaConfig.from_pretrained(model_dir)
    if drop_scaling:
        config.rope_parameters = {
            "rope_type": "default",
            "rope_theta": config.rope_parameters["rope_theta"],
        }
    model = LlamaForCausalLM.from_pretrained(model_dir, config=config, dtype=torch.float32)
    model.eval()
    return model(input_ids=ids[None, :]).logits[0].float().contiguous()


def main():
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (SEQ,), generator=torch.Generator().manual_seed(1))
    for i, (name, (theta, scaling, layout)) in enumerate(MODELS.items()):
        out = os.path.join(ROOT, name)
        os.makedirs(out, exist_ok=True)
        config = LlamaConfig(**BASE, rope_parameters=dict(scaling, rope_theta=theta))
        torch.manual_seed(100 + i)
        model = LlamaForCausalLM(config)
        # Larger than HF's init (std 0.02) so attention is not uniform and rotary matters.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.25)
        model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(out, extra)
            if os.path.exists(p):
                os.remove(p)
        rewrite_config(os.path.join(out, "config.json"), theta, scaling, layout)
        logits = logits_of(out, ids)
        unscaled = logits_of(out, ids, drop_scaling=True)
        gap = (logits - unscaled).abs().max().item()
        meta = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "layout": layout,
            "max_abs_diff_if_unscaled": f"{gap:.6g}",
        }
        save_file(
            {"ids": ids.to(torch.int32), "logits": logits},
            os.path.join(out, "logits.safetensors"),
            metadata=meta,
        )
        print(name, meta, file=sys.stderr)
        if gap < 1e-2:
            sys.exit(f"{name}: scaling moves the logits by only {gap}; the test would be blind")


if __name__ == "__main__":
    main()
