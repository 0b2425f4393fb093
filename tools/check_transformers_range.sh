#!/usr/bin/env bash
# Run the generation, language-parity and golden-parity tests (and the API checks of
# tests/test_first_contact.py) against the oldest and newest transformers that pyproject.toml allows,
# each in a throwaway venv under /tmp that sees the main environment's other packages
# (--system-site-packages); the main environment is not changed.
#
#   bash tools/check_transformers_range.sh                # the bounds pyproject.toml declares
#   bash tools/check_transformers_range.sh 5.20.0         # any other versions
#   PIP_CONSTRAINT=constraints.txt bash tools/...         # keep torch/numpy pinned (the file must not pin transformers)
#
# Needs ../shared for the parity tests (they skip without it). About 5-20 minutes per version on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then versions=("$@"); else versions=(5.17.0 5.25.0); fi
status=0
for v in "${versions[@]}"; do
    venv="/tmp/pam-transformers-$v"
    [ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
    # the [kernels] extra pins `kernels` to the range this release imports (a newer one installed
    # globally breaks `import transformers` of older releases)
    "$venv/bin/pip" install -q "transformers[kernels]==$v"
    echo "== transformers $("$venv/bin/python" -c 'import transformers; print(transformers.__version__)')"
    PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$venv/bin/python" -m pytest -q \
        -p no:cacheprovider tests/test_generation.py tests/test_language_parity.py tests/test_golden_cli.py \
        tests/test_first_contact.py -k "not malformed and not working and not ctrl_c" || status=1
done
exit $status
