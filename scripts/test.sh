#!/usr/bin/env bash
# Set up everything on a fresh Debian 12 machine (packages, npm reference tools, build) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
scripts/setup.sh "$BUILD_DIR"
cd "$BUILD_DIR"
ctest --output-on-failure -j"$(nproc)"
