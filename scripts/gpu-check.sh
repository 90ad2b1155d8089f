#!/usr/bin/env bash
# Checks the CUDA path on a real GPU (DESIGN §3, §5 steps 1 and 4; issue 14): every kernel
# against its CPU reference (max error, time, GB/s), the golden fixtures on the device backend
# (f32 and bf16), then prefill/decode speed of random-weight models (the default model's shape
# and a Llama-7B shape) next to PyTorch (HF transformers) on the same GPU, as ratios.
#
#   scripts/gpu-check.sh [--quick]      build here (if cargo exists) and run (if a driver exists)
#   scripts/gpu-check.sh --stage        dev machine: build and stage everything the GPU needs
#
# A GPU machine without Rust runs what --stage left in target/gpu-check/ (git-ignored): a tar
# of the stripped binary, the fixtures and the default model (~115 MB), split into parts
# part-1, part-2, … small enough that each, with the working tree, fits the 64 MiB one call
# to the device tool carries. Back-to-back calls (the machine stays warm ~30 s between them):
#   carry ["target/gpu-check/part-1"], command "true"; … likewise up to the last part, then
#   carry ["target/gpu-check/part-N"], command "scripts/gpu-check.sh"
# (--stage prints the exact list). The parts stay on the warm machine as ignored files; this
# script reassembles them. Without them the golden step says SKIPPED and the kernel and speed
# checks still run (the binary alone fits one call: carry ["target/gpu-check/run"]).
# Under 8 minutes on an H200.
# Exit status: 0 all passed, 1 a check failed, 2 no binary / no usable GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
run=$out/run
bin=$run/gpu-check
model_name=SmolLM2-135M-Instruct.Q4_1.gguf
model_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if command -v cargo >/dev/null 2>&1; then
    cargo build --release --quiet -p cmt-kernel-check --bin gpu-check
    mkdir -p "$run"
    strip -o "$bin" "${CARGO_TARGET_DIR:-target}/release/gpu-check"
    echo "gpu-check: built $bin" >&2
fi
if [[ ${1:-} == --stage ]]; then
    shared=${CMT_SHARED:-../shared}
    find "$run" -mindepth 1 ! -path "$bin" -exec rm -rf {} +
    rm -rf "$out"/part-* "$out"/model-a
    mkdir -p "$run/fixtures"
    cp "$shared/fixtures/smollm2-135m/smollm2_golden.safetensors" "$run/fixtures/"
    cp "$(cargo run --release --quiet --bin cmt -- fetch-model)" "$run/$model_name"
    # What travels with every call: the tracked and untracked-not-ignored files.
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
    part=$(((64 << 20) - tree - (3 << 20)))
    if ((part < (8 << 20))); then
        echo "gpu-check: the working tree ($tree bytes) leaves no room to carry parts" >&2
        exit 1
    fi
    tar -C "$out" -cf - run | split -b "$part" -d -a 1 - "$out/staged.tar."
    n=0
    for f in "$out"/staged.tar.*; do
        n=$((n + 1))
        mkdir -p "$out/part-$n"
        mv "$f" "$out/part-$n/"
    done
    rm -rf "$run/fixtures" "$run/$model_name"
    echo "gpu-check: staged $n parts of at most $part bytes; device calls, back to back:" >&2
    for k in $(seq 1 $n); do
        if ((k < n)); then cmd=true; else cmd=scripts/gpu-check.sh; fi
        echo "  carry [\"target/gpu-check/part-$k\"]  command \"$cmd\"" >&2
    done
    exit 0
fi
# On the GPU machine: reassemble the staged parts once they are all there.
parts=("$out"/part-*/staged.tar.*)
if [[ -e ${parts[0]} && ! -x $bin ]]; then
    cat $(printf '%s\n' "${parts[@]}" | sort -t. -k3 -n) | tar -C "$out" -xf - || {
        echo "gpu-check: the staged parts do not reassemble (a call missing?)" >&2
    }
fi
if [[ ! -x $bin ]]; then
    echo "gpu-check: no $bin; run this script once where cargo is installed" >&2
    exit 2
fi
if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; } && ! nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA driver here; run scripts/gpu-check.sh on the GPU machine" >&2
    exit 2
fi
if [[ -f $run/$model_name && $(sha256sum "$run/$model_name" | cut -d' ' -f1) != "$model_sha" ]]; then
    echo "gpu-check: $run/$model_name has the wrong sha256; the golden step will skip" >&2
    rm -f "$run/$model_name"
fi
log=$(mktemp)
status=0
"$bin" "$@" | tee "$log" || status=$?
quick=()
[[ " $* " == *" --quick "* ]] && quick=(--quick)
prompt=512 new=64 runs=3
[[ ${#quick[@]} -gt 0 ]] && prompt=128 new=16 runs=2
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 scripts/gpu_peer_torch.py --prompt $prompt --new $new --runs $runs "${quick[@]}" | tee -a "$log" || true
    python3 - "$log" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    for tag in ("SPEED", "PEER"):
        if line.startswith(tag + " "):
            r = json.loads(line[len(tag) + 1:])
            rows.setdefault((r["shape"], r["weights"]), {})[tag] = r
print("\n%-14s %-5s %12s %12s %8s %12s %12s %8s" % ("shape", "dtype", "cmt prefill", "torch", "ratio", "cmt decode", "torch", "ratio"))
for (shape, w), r in rows.items():
    c, p = r.get("SPEED"), r.get("PEER")
    if not (c and p):
        continue
    print("%-14s %-5s %12.0f %12.0f %7.2fx %12.1f %12.1f %7.2fx" % (
        shape, w, c["prefill_tok_s"], p["prefill_tok_s"], c["prefill_tok_s"] / p["prefill_tok_s"],
        c["decode_tok_s"], p["decode_tok_s"], c["decode_tok_s"] / p["decode_tok_s"]))
print("tokens/s; ratio = cmt / PyTorch (HF transformers, SDPA) on the same GPU, same shapes and lengths")
PY
else
    echo "gpu-check: no PyTorch with CUDA here: peer rows skipped" >&2
fi
rm -f "$log"
exit $status
