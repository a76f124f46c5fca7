#!/usr/bin/env bash
# Sets up .venv at the repository root with jaxcnn installed (editable).
#   bash setup.sh        the library, and Fashion-MNIST for offline use (Debian's dataset-fashion-mnist)
#   bash setup.sh dev    the library and what the tests and notebooks need
# Re-running it is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "jaxcnn needs Python >= 3.10; set PYTHON=/path/to/python3.x and run again" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"

# Offline Fashion-MNIST: TFDS downloads it when it can; without network, jaxcnn reads the IDX
# files of Debian's dataset-fashion-mnist package.
fashion_mnist=/usr/share/datasets/fashion-mnist
if [ -z "${1:-}" ] && [ ! -d "$fashion_mnist" ] && command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    if $sudo true 2>/dev/null; then
        echo "Installing Debian's dataset-fashion-mnist (Fashion-MNIST without network access)..."
        $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
            { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } ||
            echo "note: could not install dataset-fashion-mnist; TFDS will try to download Fashion-MNIST" >&2
    else
        echo "note: without network access for TFDS, Fashion-MNIST needs: sudo apt-get install dataset-fashion-mnist" >&2
    fi
fi
