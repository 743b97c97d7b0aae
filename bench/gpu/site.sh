#!/usr/bin/env bash
# Packs what the GPU machine lacks into .gpu/site.tar.xz (the device tool carries at most 64 MiB).
# That machine has Python 3.12 with torch, numpy, pyarrow, pandas, opencv-headless, yaml and pytest,
# and no network: the project's other training-path packages travel as cp312 wheels, unpacked here.
# Ray's Java jars, dashboard client build, RLlib, Serve and LLM are dropped (unused by training; 35 MB).
# av and mediapipe stay behind: training imports neither (samples' MP4s are written by `sample`).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.gpu; wheels=/tmp/s2d-gpu-wheels; site=/tmp/s2d-gpu-site
mkdir -p "$out" "$wheels"; rm -rf "$site"; mkdir -p "$site"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
pkgs=(ray==2.60.0 duckdb==2.0.0 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0
      typing-inspection==0.4.5 jsonschema==4.26.0 referencing==0.37.0 rpds-py==2026.9.1
      jsonschema-specifications==2025.9.1 diffusers==0.42.1 importlib-metadata==10.2.0
      yt-dlp==2026.10.26 typer==0.29.1 rich==15.0.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$wheels" "${pkgs[@]}" 2>&1 | grep -v "is ignored" || true
for w in "$wheels"/*.whl; do unzip -q -o "$w" -d "$site"; done  # unzip keeps the binaries' exec bits
rm -rf "$site"/ray/{jars,rllib,llm,serve} "$site"/ray/dashboard/client/build
find "$site" -name '*.js.map' -delete
tar -cf - -C "$site" . | xz -T0 -6 > "$out/site.tar.xz"
ls -la "$out/site.tar.xz"
