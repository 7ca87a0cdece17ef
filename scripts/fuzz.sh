#!/bin/sh
# Bounded fuzzing of the parsers and extractors (fuzz/: cargo-fuzz targets over libFuzzer):
# each target runs for FUZZ_SECONDS (default 60) from its corpus (fuzz/corpus/TARGET). New
# inputs go to a scratch directory, so the committed corpus stays small. A crash fails the
# run; libFuzzer leaves the input in fuzz/artifacts/TARGET/. Copy it to
# fuzz/regressions/TARGET/ with the fix: builder/tests/fuzz_replay.rs replays those (and the
# corpora) on stable Rust in every test run.
#
# Needs a nightly toolchain (cargo-fuzz instruments with -Z flags) and installs cargo-fuzz
# from crates.io if it is missing. Without a nightly toolchain it says so and stops (exit 0):
# the replay tests still run; CI sets FUZZ_REQUIRED=1 where nightly is known to be present.
set -eu
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"dockerfile expand ignore layer_tar registry_answer cli_specs"}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  if [ "${FUZZ_REQUIRED:-0}" = 1 ]; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain list), which cargo-fuzz needs" >&2
    exit 1
  fi
  echo "fuzz.sh: no nightly toolchain; not fuzzing (the corpora replay in the test suite)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
  mkdir -p "$scratch/$target"
  echo "fuzz.sh: $target for ${seconds}s"
  # -rss_limit_mb: the machine has 24 GiB, a leak or a bomb must not take it.
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" \
    -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz.sh: $target failed (a crash leaves its input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | sed "s/^/  $target /"
done
echo "fuzz.sh: no crash in $targets (${seconds}s each)"
