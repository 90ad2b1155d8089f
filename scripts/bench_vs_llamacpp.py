#!/usr/bin/env python3
"""cmt against llama.cpp, side by side in one run: same GGUF, same threads, same work.

For each model and each of --rounds rounds, `cmt bench --json` (one warm-up, median of
--runs) and then llama.cpp through llama-cpp-python doing what `cmt bench` does: an empty
context, the same fixed prompt ids (i·7919 + 13 mod vocab) prefilled in one batch, then
--new-tokens greedy steps of one token each, EOS ignored; one warm-up, median of --runs.
Prints one JSON line per measurement and a table of per-round ratios (cmt / llama.cpp).

    python3 scripts/bench_vs_llamacpp.py --cmt target/release/cmt MODEL.gguf [MODEL2.gguf ...]

Needs `llama-cpp-python` (built from source; see docs/perf.md for the flags used).
"""
import argparse
import json
import statistics
import subprocess
import time

import numpy as np
from llama_cpp import Llama


def llama_bench(path, threads, prompt_tokens, new_tokens, runs):
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads,
                n_ctx=prompt_tokens + new_tokens + 8, n_batch=prompt_tokens,
                n_ubatch=prompt_tokens, verbose=False)
    vocab = llm.n_vocab()
    prompt = [(i * 7919 + 13) % vocab for i in range(prompt_tokens)]
    def last_logits():
        # The last position's logits in llama.cpp's own buffer (no copy; llama-cpp-python
        # copies them into `scores` only with logits_all).
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))

    times = []
    for r in range(runs + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        nxt = int(np.argmax(last_logits()))
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([nxt])
            nxt = int(np.argmax(last_logits()))
        t2 = time.perf_counter()
        if r > 0:  # the first run is the warm-up
            times.append((t1 - t0, t2 - t1))
    del llm
    p = statistics.median(t[0] for t in times)
    d = statistics.median(t[1] for t in times)
    return {"prefill_tok_s": prompt_tokens / p, "decode_tok_s": new_tokens / d}


def cmt_bench(cmt, path, weights, threads, prompt_tokens, new_tokens, runs):
    out = subprocess.run([cmt, "bench", "--json", "--model", path, "--weights", weights,
                          "--threads", str(threads), "--prompt-tokens", str(prompt_tokens),
                          "--new-tokens", str(new_tokens), "--runs", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--cmt", default="target/release/cmt")
    ap.add_argument("--weights", default="native")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = []
    for path in a.models:
        for rnd in range(a.rounds):
            c = cmt_bench(a.cmt, path, a.weights, a.threads, a.prompt_tokens, a.new_tokens, a.runs)
            l = llama_bench(path, a.threads, a.prompt_tokens, a.new_tokens, a.runs)
            for eng, r in (("cmt", c), ("llama.cpp", l)):
                print(json.dumps({"model": path, "round": rnd, "engine": eng,
                                  "prefill_tok_s": round(r["prefill_tok_s"], 1),
                                  "decode_tok_s": round(r["decode_tok_s"], 1)}), flush=True)
            rows.append((path, rnd, c, l))
    print("\n| model | round | cmt prefill | llama.cpp prefill | ratio | cmt decode | llama.cpp decode | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for path, rnd, c, l in rows:
        print(f"| {path.split('/')[-1]} | {rnd} | {c['prefill_tok_s']:.1f} | {l['prefill_tok_s']:.1f} | "
              f"{c['prefill_tok_s'] / l['prefill_tok_s']:.2f} | {c['decode_tok_s']:.1f} | "
              f"{l['decode_tok_s']:.1f} | {c['decode_tok_s'] / l['decode_tok_s']:.2f} |")


if __name__ == "__main__":
    main()
