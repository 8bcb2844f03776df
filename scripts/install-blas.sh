#!/usr/bin/env bash
# Theano links a BLAS for its matrix products. numpy's bundled OpenBLAS cannot
# be linked (renamed symbols), so install Debian's libopenblas-dev when we can;
# without it everything still works, about 15% slower.
if ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so '; then exit 0; fi
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    echo "installing libopenblas-dev (Debian) so Theano can link a real BLAS"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev >/dev/null && exit 0
  fi
fi
echo "note: libopenblas-dev not installed; Theano will use its own C loops (about 15% slower)"
