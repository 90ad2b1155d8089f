#!/usr/bin/env bash
# Checks every CUDA kernel on a real GPU against the CPU references, then times it
# (DESIGN §3, §5 step 4): prints kernel, shape, max error, time (CUDA events), GB/s.
#
#   scripts/gpu-check.sh [--quick]
#
# Where cargo exists (the x86-64 dev machine) it first builds the checker into
# target/gpu-check/gpu-check (PTX embedded, libcuda loaded at run time). Where a driver
# exists it runs it. A GPU machine without Rust runs the binary built beforehand: build
# here, bring target/gpu-check/ along (it is git-ignored), run the same command there.
# Exit status: 0 all kernels passed, 1 a kernel failed, 2 no binary / no usable GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-check
bin=$out/gpu-check

if command -v cargo >/dev/null 2>&1; then
    cargo build --release --quiet -p cmt-kernel-check --bin gpu-check
    mkdir -p "$out"
    cp "${CARGO_TARGET_DIR:-target}/release/gpu-check" "$bin"
    echo "gpu-check: built $bin" >&2
fi
if [[ ! -x $bin ]]; then
    echo "gpu-check: no $bin; run this script once where cargo is installed" >&2
    exit 2
fi
if ! { ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; } && ! nvidia-smi >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA driver here; run scripts/gpu-check.sh on the GPU machine" >&2
    exit 2
fi
exec "$bin" "$@"
