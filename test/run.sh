#!/usr/bin/env bash
# `npm test`: build, bring the bench up if any part of it is down, run unit + integration tests.
# Extra arguments go to mocha (e.g. `npm test -- --grep vault`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
npm run --silent build
if ! bash stack/stack.sh status >/dev/null 2>&1; then
  bash stack/stack.sh up
fi
exec npx mocha "$@"
