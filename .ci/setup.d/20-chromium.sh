# Sourced by .ci/run before the tests: the report render test needs a headless
# Chromium. Idempotent: returns at once when chromium is already installed;
# waits for the dpkg lock when another apt-get is running.
# (No `set -e` / `exit` here: this file is sourced into the caller's shell.)
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then
        echo "20-chromium: installing Debian chromium (for tests/test_report_render.py)"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
                chromium fonts-dejavu-core >/dev/null \
            || echo "20-chromium: apt-get failed; the report render test will fail" >&2
    else
        echo "20-chromium: chromium missing and not root; the report render test will skip" >&2
    fi
fi
