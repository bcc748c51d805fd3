#!/usr/bin/env bash
# Regenerates the hash-pinned locks the Ray image installs with `pip install --require-hashes` (Dockerfile), one
# per XGBoost distribution the image is built with (stacks/ray_stack.py: xgboost-cpu for the head and the CPU
# workers, xgboost, the CUDA build, for the GPU workers):
#   images/ray/requirements-xgboost-cpu.txt    images/ray/requirements-xgboost.txt
# Input: jobs/requirements.txt (the pins of versions.py) with its `xgboost==` line replaced by the distribution,
# as the image installs it. Every transitive dependency gets pinned, with the sha256 of every file PyPI publishes
# for that version (so the lock serves linux x86_64 and aarch64 alike); tests/policy/test_supply_chain.py checks
# the locks against the pins and that every requirement carries a hash.
#
# Run after changing jobs/requirements.txt, on linux with Python 3.11 (the image's minor) and access to PyPI:
#   bash images/ray/lock.sh
# pip-tools goes into a throwaway virtualenv, never into the project's requirements. Resolution is that of this
# machine's platform; pip's own configuration is ignored so that only PyPI's files (and their hashes) are seen.
set -euo pipefail

PIP_VERSION=25.2
PIP_TOOLS_VERSION=7.6.2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3.11 -m venv "$work/venv"
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
"$work/venv/bin/pip" install --quiet "pip==$PIP_VERSION" "pip-tools==$PIP_TOOLS_VERSION"

xgboost_version=$(sed -n 's/^xgboost==//p' "$root/jobs/requirements.txt")
[ -n "$xgboost_version" ] || { echo "jobs/requirements.txt pins no xgboost==" >&2; exit 1; }

for package in xgboost-cpu xgboost; do
  input="$work/ray-image-$package.in"
  grep -v -E '^xgboost==' "$root/jobs/requirements.txt" > "$input"
  echo "$package==$xgboost_version" >> "$input"
  # --allow-unsafe: pip refuses, under --require-hashes, a dependency (setuptools, pip) the lock leaves out.
  # --strip-extras: plain pins (the extras' dependencies are listed in full anyway).
  (cd "$work" && CUSTOM_COMPILE_COMMAND="bash images/ray/lock.sh" "$work/venv/bin/pip-compile" \
    --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
    --output-file "$here/requirements-$package.txt" "$(basename "$input")")
done

# Each lock installs on both architectures as the Dockerfile installs it (hashes, wheels only), without downloading:
# pip resolves from the index's metadata; --require-hashes fails on any dependency the lock leaves out.
for arch in x86_64 aarch64; do
  platforms=(--platform "manylinux2014_$arch")
  for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done  # Debian bookworm: glibc 2.36
  for package in xgboost-cpu xgboost; do
    "$work/venv/bin/pip" install --quiet --dry-run --ignore-installed --target "$work/target-$arch" \
      --require-hashes --only-binary=:all: --implementation cp --python-version 3.11 "${platforms[@]}" \
      -r "$here/requirements-$package.txt"
  done
done
