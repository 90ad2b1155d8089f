#!/usr/bin/env python3
"""PyTorch peer of gpu-check's speed rows: HF transformers' Llama with random weights, the same
shapes as `model_check::shape` (SmolLM2-135M, Llama-2-7B), the same prompt and decode lengths,
greedy, one sequence, KV cache, SDPA attention. Prints one `PEER {json}` line per row:

    python3 scripts/gpu_peer_torch.py --prompt 512 --new 64 --runs 3 [--quick]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                         vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True,
                         max_position_embeddings=8192),
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                     vocab_size=32000, rope_theta=10000.0, tie_word_embeddings=False,
                     max_position_embeddings=4096),
}
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def measure(shape, weights, prompt, new, runs):
    cfg = LlamaConfig(**SHAPES[shape], rms_norm_eps=1e-5)
    torch.set_default_dtype(DTYPES[weights])
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    ids = (torch.arange(prompt, device="cuda") * 7919 % cfg.vocab_size)[None]

    def once():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        for _ in range(new):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        return t1 - t0, time.perf_counter() - t1

    with torch.inference_mode():
        once()
        times = [once() for _ in range(runs)]
    pre = statistics.median(t[0] for t in times)
    dec = statistics.median(t[1] for t in times)
    del model
    torch.cuda.empty_cache()
    return {"shape": shape, "weights": weights, "prefill_tok_s": prompt / pre,
            "decode_tok_s": new / dec, "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 7B shape")
    a = ap.parse_args()
    rows = [("smollm2-135m", "f32"), ("smollm2-135m", "bf16")]
    if not a.quick:
        rows.append(("llama-7b", "bf16"))
    for shape, weights in rows:
        print("PEER " + json.dumps(measure(shape, weights, a.prompt, a.new, a.runs)), flush=True)


if __name__ == "__main__":
    main()
