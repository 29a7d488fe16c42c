#!/usr/bin/env bash
# System packages evalkit's sandbox, its Docker backend and the report's browser tests need
# (Debian/Ubuntu).
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v dockerd >/dev/null || need+=(docker.io)
# The report's browser tests drive Debian's Chromium (playwright never downloads a browser).
command -v chromium >/dev/null || need+=(chromium)
[ -e /usr/lib/x86_64-linux-gnu/libseccomp.so.2 ] || [ -e /lib/x86_64-linux-gnu/libseccomp.so.2 ] \
  || need+=(libseccomp2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
