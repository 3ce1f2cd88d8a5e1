#!/usr/bin/env bash
# The system libraries napari needs under Xvfb (tests, screenshots, headless CI).
# Installs them with apt when it can (root, or sudo without a password); otherwise
# stops with the one command to run, instead of letting Qt abort inside the tests.
set -euo pipefail
PACKAGES="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libgl1 libegl1 libgl1-mesa-dri libglx-mesa0
libxkbcommon-x11-0 libxcb-cursor0 libxcb-image0 libxcb-render-util0 libxcb-randr0 libxcb-shape0
libxcb-xkb1 libdbus-1-3 libfontconfig1"
PACKAGES=$(echo $PACKAGES)
LIBS="libxkbcommon-x11.so.0 libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-keysyms.so.1
libxcb-image.so.0 libxcb-render-util.so.0 libEGL.so.1 libGL.so.1 libfontconfig.so.1 libdbus-1.so.3"

missing() {
  command -v Xvfb >/dev/null 2>&1 || { echo Xvfb; }
  command -v xauth >/dev/null 2>&1 || { echo xauth; }
  # the cache read once: `ldconfig -p | grep -q` fails under pipefail whenever grep
  # exits at its match before ldconfig has written the rest (SIGPIPE)
  local cache
  cache=$(ldconfig -p 2>/dev/null || true)
  for lib in $LIBS; do
    grep -qF "$lib" <<<"$cache" || echo "$lib"
  done
}

[ -z "$(missing)" ] && exit 0
if [ "$(uname -s)" != "Linux" ]; then exit 0; fi  # macOS/Windows: Qt brings what it needs
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  fi
  if [ "$SUDO" != none ]; then
    echo "installing the system packages napari needs under Xvfb: $PACKAGES" >&2
    $SUDO apt-get update -qq || true
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      --no-upgrade $PACKAGES >/dev/null
    [ -z "$(missing)" ] && exit 0
  fi
  echo "napari needs system packages that are missing ($(missing | tr '\n' ' ')); run: sudo apt-get install -y $PACKAGES" >&2
else
  echo "napari needs system libraries that are missing ($(missing | tr '\n' ' ')); install Xvfb, xauth and the X11/xcb, EGL/GL, fontconfig and dbus libraries with your package manager (Debian names: $PACKAGES)" >&2
fi
exit 1
