#!/usr/bin/env bash
# Every C++ file the repository tracks is clang-format clean (.clang-format at the top). Prints
# the files that are not and exits 1; `clang-format -i FILE` fixes one.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is not installed (apt-get install clang-format)"; exit 1; }
bad=0; n=0
while IFS= read -r f; do
  n=$((n + 1))
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "not clang-format clean: $f"
    bad=$((bad + 1))
  fi
done < <(git ls-files '*.h' '*.cc')
echo "clang-format: $n files, $bad not clean"
[ "$bad" -eq 0 ]
