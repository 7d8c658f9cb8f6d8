#!/usr/bin/env bash
# Build the wheel and sdist, check their metadata, and smoke-install the wheel into a fresh venv
# with Airflow, where `airflow providers list` must show the provider.
#
#   scripts/dist_smoke.sh [PYTHON]      # PYTHON: an interpreter with `build` and `twine` (make dist
#                                       # passes .venv/bin/python, which has the `release` extra)
# Environment: SMOKE_AIRFLOW_VERSION (default 3.3.2), SMOKE_PYTHON (base interpreter of the smoke
# venv; default: the one behind PYTHON), KEEP_SMOKE_VENV=1 to keep the temporary venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${1:-.venv/bin/python}
AIRFLOW_VERSION=${SMOKE_AIRFLOW_VERSION:-3.3.2}
CONSTRAINTS=$ROOT/constraints/airflow-$AIRFLOW_VERSION.txt
SMOKE_PYTHON=${SMOKE_PYTHON:-$("$PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')}
PACKAGE=airflow-provider-crun
MODULE=airflow_provider_crun

step_start=$SECONDS
all_start=$SECONDS
step() { # step NAME: print the previous step's duration and start timing the next one
    if [[ -n ${step_name:-} ]]; then printf '[dist] %-28s %4ds\n' "$step_name" $((SECONDS - step_start)); fi
    step_name=$1
    step_start=$SECONDS
}
fail() { echo "[dist] FAIL: $*" >&2; exit 1; }

# --- build ---------------------------------------------------------------------------------------
step "build sdist + wheel"
rm -rf dist build
# Default `python -m build`: the sdist first, then the wheel built FROM the sdist, which proves the
# sdist is complete.
build_log=$(mktemp)
"$PYTHON" -m build --outdir dist . >"$build_log" 2>&1 || { cat "$build_log"; fail "python -m build"; }
rm -f "$build_log"
shopt -s nullglob
wheels=(dist/*.whl)
sdists=(dist/*.tar.gz)
[[ ${#wheels[@]} -eq 1 && ${#sdists[@]} -eq 1 ]] || fail "expected one wheel and one sdist in dist/"
WHEEL=$ROOT/${wheels[0]}
SDIST=$ROOT/${sdists[0]}

# --- metadata ------------------------------------------------------------------------------------
step "twine check"
"$PYTHON" -m twine check --strict dist/*

step "archive contents"
"$PYTHON" - "$WHEEL" "$SDIST" <<'EOF'
import sys, tarfile, zipfile
from email.parser import Parser

wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
problems = []
expect = {"License-Expression": "Apache-2.0", "Requires-Python": ">=3.11"}
for key, value in expect.items():
    if meta.get(key) != value:
        problems.append(f"METADATA {key}: {meta.get(key)!r}, expected {value!r}")
if "LICENSE" not in (meta.get_all("License-File") or []):
    problems.append("METADATA has no License-File: LICENSE")
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    problems.append("wheel lacks .dist-info/licenses/LICENSE")
if not any(n.endswith("entry_points.txt") for n in names):
    problems.append("wheel lacks entry_points.txt")
if "airflow_provider_crun/py.typed" not in names:
    problems.append("wheel lacks py.typed")
stray = sorted({n.split("/")[0] for n in names} - {"airflow_provider_crun", meta_name.split("/")[0]})
if stray:
    problems.append(f"wheel has top-level entries besides the package: {stray}")
classifiers = meta.get_all("Classifier") or []
for wanted in ("3.11", "3.12", "3.13"):
    if f"Programming Language :: Python :: {wanted}" not in classifiers:
        problems.append(f"no Python {wanted} classifier")
sdist_names = tarfile.open(sdist).getnames()
for wanted in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO"):
    if not any(n.split("/", 1)[-1] == wanted for n in sdist_names):
        problems.append(f"sdist lacks {wanted}")
print(f"[dist] wheel: {len(names)} files; sdist: {len(sdist_names)} entries")
if problems:
    sys.exit("\n".join(problems))
EOF

# --- smoke install -------------------------------------------------------------------------------
step "smoke venv + install"
SMOKE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/crun-dist-smoke.XXXXXX")
if [[ ${KEEP_SMOKE_VENV:-0} != 1 ]]; then trap 'rm -rf "$SMOKE_DIR"' EXIT; fi
"$SMOKE_PYTHON" -m venv "$SMOKE_DIR/venv"
SMOKE_BIN=$SMOKE_DIR/venv/bin
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$SMOKE_BIN/python" -m pip install --quiet --upgrade pip
# The wheel file, not the source tree: run from the temp dir so nothing imports from the checkout.
(cd "$SMOKE_DIR" && "$SMOKE_BIN/python" -m pip install --quiet \
    "apache-airflow==$AIRFLOW_VERSION" "$WHEEL" -c "$CONSTRAINTS") || fail "pip install of the wheel"

step "airflow providers list"
# A clean Airflow: its own home, no settings inherited from the caller.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(AIRFLOW_[A-Za-z0-9_]*\)=.*/\1/p')
export AIRFLOW_HOME=$SMOKE_DIR/airflow-home
export AIRFLOW__CORE__LOAD_EXAMPLES=False
unset PYTHONPATH VIRTUAL_ENV
cd "$SMOKE_DIR"
location=$("$SMOKE_BIN/python" -c "import $MODULE; print($MODULE.__file__)")
[[ $location == "$SMOKE_DIR"/venv/* ]] || fail "$MODULE imported from $location, not from the smoke venv"
"$SMOKE_BIN/airflow" providers list --output plain >"$SMOKE_DIR/providers.txt" 2>"$SMOKE_DIR/providers.err" ||
    { cat "$SMOKE_DIR/providers.err"; fail "airflow providers list"; }
grep -E "^$PACKAGE[[:space:]]" "$SMOKE_DIR/providers.txt" || {
    cat "$SMOKE_DIR/providers.txt" "$SMOKE_DIR/providers.err"
    fail "$PACKAGE is not in \`airflow providers list\`"
}
if grep -iE "error|traceback" "$SMOKE_DIR/providers.err"; then fail "airflow providers list logged errors"; fi
"$SMOKE_BIN/python" -m pip check
step ""
printf '[dist] OK: %s, %s; smoke-installed with apache-airflow==%s in %ds total\n' \
    "$(basename "$WHEEL")" "$(basename "$SDIST")" "$AIRFLOW_VERSION" $((SECONDS - all_start))
