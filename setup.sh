#!/usr/bin/env bash
# Sets up .venv at the repository root with jaxcnn installed (editable).
#   bash setup.sh        the library, and Fashion-MNIST for offline use (Debian's dataset-fashion-mnist)
#   bash setup.sh dev    the library and what the tests and notebooks need (and Chromium, which the
#                        site's test opens pages in, when apt-get can install it)
#   bash setup.sh docs   the library and the docs extra, then builds the documentation site into site/
#   bash setup.sh export the tool environment .venv-export for ONNX export (after one of the above)
# Re-running it is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "jaxcnn needs Python >= 3.10; set PYTHON=/path/to/python3.x and run again" >&2
    exit 1
fi

# ONNX export (jaxcnn.export.onnx) converts with jax2onnx, which pins orbax-checkpoint<0.11.37 while jaxcnn
# needs >=0.12: it gets an environment of its own, with .venv's jax and flax, what jaxcnn.export imports,
# and jaxcnn's source on its path (training, which needs Orbax, never runs there).
if [ "${1:-}" = export ]; then
    if [ ! -x .venv/bin/python ]; then
        echo "run 'bash setup.sh' (or 'bash setup.sh dev') first: the tool environment takes .venv's jax" >&2
        exit 1
    fi
    pins=$(.venv/bin/python -c 'import flax, jax; print(f"jax=={jax.__version__} jaxlib=={jax.__version__} flax=={flax.__version__}")')
    [ -x .venv-export/bin/python ] || .venv/bin/python -m venv .venv-export
    # shellcheck disable=SC2086
    .venv-export/bin/python -m pip install --quiet --disable-pip-version-check $pins "jax2onnx==0.17.1" \
        "onnx>=1.17" "onnxruntime>=1.20" "grain>=0.2.18" "ml_collections>=1.0" "pillow>=10" "flatbuffers>=24"
    .venv-export/bin/python -c 'import site, sys; print(sys.argv[1], file=open(site.getsitepackages()[0] + "/jaxcnn-source.pth", "w"))' "$PWD"
    exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"

# Debian packages the setup can do without: installed when apt-get runs as root or with passwordless sudo,
# else a note. Arguments: the package, then what happens without it.
apt_install() {
    command -v apt-get >/dev/null || return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    if $sudo true 2>/dev/null; then
        echo "Installing Debian's $1..."
        $sudo apt-get install -y -qq "$1" >/dev/null 2>&1 ||
            { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq "$1" >/dev/null 2>&1; } ||
            echo "note: could not install $1; $2" >&2
    else
        echo "note: without $1 (sudo apt-get install $1), $2" >&2
    fi
}

# Offline Fashion-MNIST: TFDS downloads it when it can; without network, jaxcnn reads the IDX
# files of Debian's dataset-fashion-mnist package.
if [ -z "${1:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    apt_install dataset-fashion-mnist "TFDS will try to download Fashion-MNIST"
fi
# The site's test (tests/docs/test_site.py) opens its pages in headless Chromium; it skips without it.
if [ "${1:-}" = dev ] && ! command -v chromium >/dev/null; then
    apt_install chromium "the site's browser test is skipped"
fi
if [ "${1:-}" = docs ]; then
    .venv/bin/mkdocs build  # strict (mkdocs.yml): a warning fails the build
    echo "The site is in site/: open site/index.html"
fi
