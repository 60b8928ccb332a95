#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, builds, checks
# the layering and clang-format, runs the doctest unit tests (also under a seccomp filter that
# denies io_uring) and the integration tests (real binary, real gRPC peers, both reactor
# backends), then the unit and integration tests against an ASan/UBSan build, the integration
# suite against a TSan build (shards, the control thread and snapshot swaps run on several
# threads), the libFuzzer targets for a bounded number of runs, and last the chaos suite (faults
# inside network namespaces, tests/chaos), with nothing building beside it. The packaging suite
# (tests/packaging: the container image under podman, the .deb in a fresh Debian root, the
# systemd unit, the ECS templates) runs after the release integration tests, while the ASan tree
# builds.
# Usage: bash tests/run.sh   (RINGLB_SKIP_ASAN=1 / RINGLB_SKIP_TSAN=1 / RINGLB_SKIP_FUZZ=1 /
# RINGLB_SKIP_CHAOS=1 / RINGLB_SKIP_PACKAGING=1 leave a pass out)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# The benchmark smoke test needs the peers (haproxy, nginx) too; tests/packaging, podman & co.
RINGLB_SETUP_BENCH=1 RINGLB_SETUP_PACKAGING=1 bash packaging/setup-debian.sh || { echo "setup failed"; exit 1; }

build() {  # dir, extra meson args...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null || { echo "meson setup $dir failed"; return 1; }
  fi
  ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

build build || exit 1

# The sanitizer trees build in the background (nice 19, so they only take idle CPU) while the
# release tests run: most of an integration test is waiting on sockets. -O1 -g1: what ASan and
# TSan recommend, and much faster to compile than -O2 -g. Their tests wait for them below.
san_args=(-Doptimization=1 -Ddebug=false -Dcpp_args=-g1 -Dc_args=-g1 -Dbench=false)
bg_build() {  # dir, log, extra meson args...
  local dir=$1 log=$2; shift 2
  ( nice -n 19 bash -c "$(declare -f build); build \"\$@\"" _ "$dir" "$@" >"$log" 2>&1 ) &
}
asan_pid=""; tsan_pid=""
asan_log=$(mktemp); tsan_log=$(mktemp)
if [ "${RINGLB_SKIP_ASAN:-0}" != 1 ]; then
  bg_build build-asan "$asan_log" -Db_sanitize=address,undefined "${san_args[@]}" -Dtests=true
  asan_pid=$!
fi
wait_build() {  # pid, log, name: the background build's status; its output if it failed
  local st=0
  wait "$1" || st=$?
  if [ "$st" -ne 0 ]; then echo "!! $3 build failed:"; tail -n 60 "$2"; fi
  return "$st"
}

passed=0; failed=0; skipped=0; gaps=0
count() {  # name, status, passed, failed
  echo "== $1: $3 passed, $4 failed (exit $2) [${SECONDS}s since the start]"
  passed=$((passed + $3)); failed=$((failed + $4))
  # A runner that exits non-zero without counting a failure (a crash, a collection error) fails.
  if [ "$2" -ne 0 ] && [ "$4" -eq 0 ]; then failed=$((failed + 1)); fi
}

echo "== source checks"
/usr/bin/python3 tests/check_layers.py; st=$?
count "layers (includes point down)" "$st" $((st == 0)) $((st != 0))
bash tests/check_format.sh; st=$?
count "clang-format" "$st" $((st == 0)) $((st != 0))

unit_run() {  # name, command...: a doctest run; io_uring cases it could not run are counted
  local name=$1; shift
  local out st line up uf us
  out=$("$@" --no-intro=true 2>&1); st=$?
  echo "$out" | grep -E 'test cases:|assertions:|Status:|skipped \(' | tail -n 4
  line=$(echo "$out" | grep 'test cases:' | tail -n 1)
  up=$(echo "$line" | sed -E 's/.*\| *([0-9]+) passed.*/\1/'); uf=$(echo "$line" | sed -E 's/.*\| *([0-9]+) failed.*/\1/')
  us=$(echo "$out" | sed -nE 's/^reactor tests: ([0-9]+) io_uring cases skipped.*/\1/p' | tail -n 1)
  [ "$st" -ne 0 ] && echo "$out" | tail -n 40
  count "$name" "$st" "${up:-0}" "${uf:-0}"
  skipped=$((skipped + ${us:-0}))
  UNIT_SKIPPED=${us:-0}
}

echo "== unit tests (doctest)"
unit_run "unit" ./build/tests/unit_tests
if [ "${UNIT_SKIPPED}" -gt 0 ]; then
  echo "!! io_uring is denied on this machine: ${UNIT_SKIPPED} reactor cases were skipped (see above)"
fi

echo "== reactor unit tests under a seccomp filter that denies io_uring (as Docker >= 25 does)"
# They must pass on epoll and report the io_uring cases as skipped, with the reason, not fail.
seccomp_out=$(/usr/bin/python3 tests/support/deny_io_uring.py ./build/tests/unit_tests \
  --no-intro=true -tc='reactor*' 2>&1); st=$?
echo "$seccomp_out" | tail -n 3
if [ "$st" -eq 0 ] && echo "$seccomp_out" | grep -qE '^reactor tests: [1-9][0-9]* io_uring cases skipped \(io_uring denied'; then
  count "unit-seccomp (io_uring cases reported skipped)" 0 1 0
else
  count "unit-seccomp (io_uring cases reported skipped)" 1 0 1
fi

pytest_run() {  # name, then pytest arguments (default folder tests/integration; RINGLB_PYTEST_DIR
  local name=$1; shift  # names another); env assignments are inherited
  local log; log=$(mktemp)
  local tail_n=25
  [ -n "${RINGLB_PYTEST_TAIL:-}" ] && tail_n=$RINGLB_PYTEST_TAIL
  # -rsx: every skip and known gap (xfail) is listed with its reason; both are counted in the
  # closing line.
  /usr/bin/python3 -m pytest "${RINGLB_PYTEST_DIR:-tests/integration}" -q -rsx -p no:cacheprovider "$@" 2>&1 | tee "$log" | tail -n "$tail_n"
  local st=${PIPESTATUS[0]}
  local summary; summary=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$log" | tail -n 1)
  local p f
  p=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
  f=$(echo "$summary" | grep -oE '[0-9]+ (failed|errors?)' | awk '{s += $1} END {print s + 0}')
  local sk; sk=$(echo "$summary" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+')
  local xf; xf=$(echo "$summary" | grep -oE '[0-9]+ xfailed' | grep -oE '[0-9]+')
  rm -f "$log"
  count "$name" "$st" "${p:-0}" "${f:-0}"
  skipped=$((skipped + ${sk:-0}))
  gaps=$((gaps + ${xf:-0}))
}

echo "== integration tests (release build, io_uring and epoll)"
RINGLB_BIN="$root/build/ringlb" pytest_run "integration"

if [ "${RINGLB_SKIP_PACKAGING:-0}" != 1 ]; then
  # Builds the image from this tree (packaging/Dockerfile) and a .deb from build/ringlb; the
  # Debian root they start from is built once by mmdebstrap and kept under build/packaging.
  echo "== packaging (container image under podman, .deb, systemd unit, ECS templates)"
  RINGLB_PYTEST_DIR=tests/packaging RINGLB_PYTEST_TAIL=40 RINGLB_BIN="$root/build/ringlb" \
    pytest_run "packaging"
fi


if [ "${RINGLB_SKIP_ASAN:-0}" != 1 ]; then
  echo "== integration tests against an ASan/UBSan build"
  wait_build "$asan_pid" "$asan_log" "ASan/UBSan" || exit 1
  if [ "${RINGLB_SKIP_TSAN:-0}" != 1 ]; then  # builds while the ASan tests run
    bg_build build-tsan "$tsan_log" -Db_sanitize=thread "${san_args[@]}" -Dtests=false
    tsan_pid=$!
  fi
  echo "== unit tests against the ASan/UBSan build"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    unit_run "unit-asan" ./build-asan/tests/unit_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    RINGLB_BIN="$root/build-asan/ringlb" pytest_run "integration-asan" \
    --ignore=tests/integration/test_bench_smoke.py  # measures the harness, not memory safety
fi

if [ "${RINGLB_SKIP_TSAN:-0}" != 1 ]; then
  echo "== integration tests against a TSan build"
  if [ -n "$tsan_pid" ]; then
    wait_build "$tsan_pid" "$tsan_log" "TSan" || exit 1
  else
    build build-tsan -Db_sanitize=thread "${san_args[@]}" -Dtests=false || exit 1
  fi
  # halt_on_error: a race ends ringlb with a non-zero status, which fails the test that saw it.
  # The files where threads meet (shards, the control thread, snapshots and messages, signals,
  # reports, the log writer); the single-shard data-path files run under ASan above.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    RINGLB_BIN="$root/build-tsan/ringlb" pytest_run "integration-tsan" \
    --ignore=tests/integration/test_bench_smoke.py --ignore=tests/integration/test_config.py \
    --ignore=tests/integration/test_errors.py --ignore=tests/integration/test_plain_http.py \
    --ignore=tests/integration/test_hol.py --ignore=tests/integration/test_replay.py \
    --ignore=tests/integration/test_deadlines.py --ignore=tests/integration/test_seccomp.py \
    --ignore=tests/integration/test_retry.py --ignore=tests/integration/test_validation.py \
    --ignore=tests/integration/test_keepalive.py --ignore=tests/integration/test_conformance.py
fi

if [ "${RINGLB_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz targets (libFuzzer, ASan/UBSan; bounded runs)"
  fout=$(bash tests/fuzz/run.sh 2>&1); fst=$?
  echo "$fout" | tail -n 8
  count "fuzz" "$fst" "$(echo "$fout" | grep -c ': ok,')" "$(echo "$fout" | grep -c ': FAILED')"
fi

if [ "${RINGLB_SKIP_CHAOS:-0}" != 1 ]; then
  # Last, with no build running beside it: faults (SIGKILL, SIGSTOP, blackholes, rolling
  # restarts, DNS replacement, ringlb's own restart) at 150 calls/s, each scenario in its own
  # network namespace; ~6 minutes. The closing "chaos figures" section has one line of figures
  # per scenario.
  echo "== chaos suite (release build, io_uring and epoll; tests/chaos)"
  RINGLB_PYTEST_DIR=tests/chaos RINGLB_PYTEST_TAIL=70 RINGLB_BIN="$root/build/ringlb" \
    pytest_run "chaos"
fi

if [ "${RINGLB_SKIP_ATTACK:-0}" != 1 ]; then
  # Also last, with nothing building beside it: it holds a well-behaved client's p99 under
  # 50 ms and ringlb's RSS under its bound while each attack (rapid reset, HPACK bomb, floods,
  # slow readers, idle and slowloris connections, oversized headers) runs; ~4 minutes. The
  # closing "attack figures" section has one line per attack.
  echo "== attack suite (release build, one worker, io_uring and epoll; tests/attack)"
  RINGLB_PYTEST_DIR=tests/attack RINGLB_PYTEST_TAIL=40 RINGLB_BIN="$root/build/ringlb" \
    pytest_run "attack"
fi

echo
extra=""
[ "$skipped" -gt 0 ] && extra="$extra, $skipped skipped"
[ "$gaps" -gt 0 ] && extra="$extra, $gaps known gaps (xfail, listed above)"
echo "ringlb tests: $passed passed, $failed failed$extra"
[ "$failed" -eq 0 ]
