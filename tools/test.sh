#!/usr/bin/env bash
# Install everything napari-cuts needs and run the whole test suite (GUI tests under Xvfb).
# Usage: bash tools/test.sh [extra pytest args]
# Works on a fresh Debian/Ubuntu machine (as root, or with sudo for the apt step).
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. System libraries: an X server for the GUI tests (pytest-xvfb starts it) and the
#    X/GL libraries Qt's xcb platform plugin loads.
APT_PACKAGES="xvfb xauth libgl1 libegl1 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0 \
libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0"
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends --no-upgrade $APT_PACKAGES >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends --no-upgrade $APT_PACKAGES >/dev/null; }
fi

# 2. Python packages. torch==2.13.0 is the CPU build (a bare 'torch' pulls a multi-GB CUDA build).
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0" -e ".[testing]"

# 3. The whole suite on PyQt5, then the GUI tests again on PyQt6 (qtpy picks the binding from QT_API).
python -m pytest -q "$@"
python -m pip install -q "PyQt6>=6.5"
QT_API=pyqt6 python -m pytest -q tests/test_plugin_widget.py tests/test_plugin_staged_layers.py "$@"
