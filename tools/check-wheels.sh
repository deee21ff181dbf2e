#!/usr/bin/env bash
# Check that every runtime dependency of both Pi venvs resolves to a binary wheel for
# 64-bit ARM Linux under its constraints file (no source builds on the Pi):
#   - main venv:  CPython 3.11 (Raspberry Pi OS Bookworm), constraints/pi-bookworm.txt
#   - TPU venv:   CPython 3.9 (pyenv / uv interpreter),   constraints/tpu-py39.txt
# Needs access to the package index pip is configured for. Usage: tools/check-wheels.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-$(mktemp -d)}
# Bookworm has glibc 2.36: every manylinux tag from 2014 (2.17) to 2.36 installs there.
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done

MAIN_REQS=(numpy pyzmq msgspec opencv-python-headless uvloop ai-edge-litert anyio)
# exceptiongroup: anyio's dependency below Python 3.11, which pip (run by a newer Python) does not follow here
TPU_REQS=(tflite-runtime numpy pyzmq msgspec opencv-python-headless tomli uvloop anyio exceptiongroup)

check() {  # NAME PYVER CONSTRAINTS REQS...
    local name=$1 pyver=$2 cons=$3; shift 3
    local dir="$OUT/$name"
    mkdir -p "$dir"
    echo "== $name: CPython $pyver aarch64, -c $cons: $*"
    "$PY" -m pip download --disable-pip-version-check --quiet --only-binary :all: \
        "${PLATFORMS[@]}" --python-version "$pyver" --implementation cp \
        -c "$cons" -d "$dir" "$@"
    local n=0 bad=0 f
    for f in "$dir"/*; do
        n=$((n + 1))
        case "$(basename "$f")" in
            *aarch64*.whl|*-none-any.whl) echo "   $(basename "$f")" ;;
            *) echo "   NOT AN AARCH64 WHEEL: $(basename "$f")"; bad=1 ;;
        esac
    done
    [ "$n" -gt 0 ] && [ "$bad" -eq 0 ]
}

check main-py311 3.11 constraints/pi-bookworm.txt "${MAIN_REQS[@]}"
check tpu-py39 3.9 constraints/tpu-py39.txt "${TPU_REQS[@]}"
echo "OK: every runtime dependency resolves to an aarch64 (or pure-Python) wheel under both constraints files"
