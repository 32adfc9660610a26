#!/usr/bin/env bash
# Set up everything from nothing (idempotent; a second run takes seconds and changes nothing):
#   .venv/ (inside the repo, git-ignored) with torch + torchvision, Detectron2, this plugin
#   (editable) with the test tools and the ONNX export extra.
# Detectron2: an install importable by python3 is reused (the venv then sees the system
# site-packages); otherwise the PyPI fallback pb1-detectron2==0.6 is built without its
# C++ extension (scripts/install_detectron2.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c "import detectron2, torch, torchvision" >/dev/null 2>&1; then
    echo "setup: reusing the Detectron2 importable by $PY"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
. "$VENV/bin/activate"

have() { python -c "import $1" >/dev/null 2>&1; }
have torch && have torchvision || pip install -q torch torchvision
have detectron2 || python scripts/install_detectron2.py

stamp="$VENV/.motion_rcnn_d2-installed"
want="$(sha256sum setup.py | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! have motion_rcnn_d2; then
  pip install -q --no-build-isolation -e ".[test,export]"
  echo "$want" > "$stamp"
fi
python -c "import motion_rcnn_d2, detectron2, torch; print('setup: torch', torch.__version__, '| detectron2', detectron2.__version__, '| C++ ops:', motion_rcnn_d2.compat.HAS_D2_EXTENSION)"
