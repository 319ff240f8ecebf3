#!/usr/bin/env bash
# Build llama.cpp with CUDA on the device machine from the tgz carried in .gpu/ (GPU-BENCH.md).
# Usage (on the device): bench/gpu/build.sh  -> binaries in /tmp/llama.cpp/build/bin
set -euo pipefail
if [ -x /tmp/llama.cpp/build/bin/llama-fit-params ]; then exit 0; fi
mkdir -p /tmp && tar -C /tmp -xzf .gpu/llama.cpp.tgz
cd /tmp/llama.cpp
cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release >/tmp/cmake.log 2>&1
cmake --build build -j 16 --target ${LLAMA_TARGETS:-llama-fit-params llama-bench llama-completion} \
  >/tmp/build.log 2>&1 || { tail -40 /tmp/build.log; exit 1; }
