#!/usr/bin/env bash
# usage: need-debian.sh "WHAT NEEDS THEM" "PACKAGE..." COMMAND...
# Returns at once when every COMMAND is on PATH. Otherwise installs the Debian PACKAGEs with apt-get
# when run as root (waiting for the dpkg lock), else stops with one line saying what to install.
set -u
what=$1 packages=$2
shift 2
missing=0
for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
done
[ "$missing" -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ]; then
    echo "make test: $what need $packages: run 'sudo apt-get install $packages' (or 'sudo make system-deps')" >&2
    exit 1
fi
echo "system-deps: installing $packages (for $what)"
# shellcheck disable=SC2086  # the package list is meant to split
DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        $packages >/dev/null \
    || { echo "make test: apt-get could not install $packages (needed by $what)" >&2; exit 1; }
