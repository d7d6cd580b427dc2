#!/usr/bin/env bash
# The report render tests (tests/test_report_render.py, test_workflow.py) screenshot it headless.
exec bash "$(dirname "$0")/../need-debian.sh" "the report tests" "chromium fonts-dejavu-core" chromium
