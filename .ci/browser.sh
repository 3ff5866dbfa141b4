#!/usr/bin/env bash
# The page's browser test needs Chromium and its driver from the system packages. Install them
# with apt-get when they are missing and this machine can (root, or sudo without a password);
# otherwise say so: the test then skips, except under CI=true, where it fails.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser test: no apt-get here; install chromium and chromium-driver yourself" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "browser test: installing chromium needs root; run: sudo apt-get install chromium chromium-driver" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing chromium and chromium-driver (apt-get) for the browser test" >&2
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
  || echo "browser test: apt-get could not install chromium chromium-driver" >&2
exit 0
