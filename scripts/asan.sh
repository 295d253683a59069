#!/usr/bin/env bash
# Runs the C hot path's tests (tests/test_fastvisit.py, tests/test_transform.py) against a
# build of src/matomo_kafka/_fastvisit.c with AddressSanitizer and UBSan, without touching
# the installed build: the package is copied to a temporary directory put first on
# PYTHONPATH. Needs gcc and a .venv made by scripts/test.sh. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r src/matomo_kafka "$work/"
rm -f "$work"/matomo_kafka/_fastvisit.*.so
suffix=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
include=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter \
    -Wno-missing-field-initializers -I"$include" \
    src/matomo_kafka/_fastvisit.c -o "$work/matomo_kafka/_fastvisit$suffix"
# Python's own allocations are not instrumented: leaks are not looked for, errors are.
sanitized() {
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONPATH="$work" "$@"
}
sanitized .venv/bin/python -c "
import matomo_kafka._fastvisit as module
assert module.__file__.startswith('$work'), module.__file__
print('asan: testing the sanitized build', module.__file__)"
sanitized .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_fastvisit.py \
    tests/test_transform.py "$@"
