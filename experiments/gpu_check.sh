#!/usr/bin/env bash
# The GPU check of issue 38, to run at once when a GPU machine is lent: under 10 minutes on one H100/H200,
# every figure written as text to $OUT (the folder the device tool brings back; ./gpu_check_out elsewhere).
#
#   bash experiments/gpu_check.sh --wheels    here, once: the wheels the GPU machine's image lacks, into .whl/
#   bash experiments/gpu_check.sh             there, e.g. the device tool's
#                                             run(command="bash experiments/gpu_check.sh", timeout_s=600,
#                                                 carry=[".whl"])
#   bash experiments/gpu_check.sh --dry-run   here, on the CPU: each piece at a tiny size (tested)
#
# The GPU machine reaches no package index: its python3 brings JAX with CUDA, PyTorch, Flax's needs and
# pytest; the wheels of .whl/ (this .venv's versions of what the image lacks: grain and its needs,
# ml_collections, and flax and optax as jaxcnn is tested with them) install under /tmp/jaxcnn-site. jaxcnn
# runs from this folder (PYTHONPATH; its oneDNN extension is the CPU's). Where an index is reachable
# instead, what is missing is installed from it, JAX as "jax[cuda13]==$JAX_VERSION" (this .venv's jax).
#
# The pieces, in this order, each stopped at its share of GPU_CHECK_SECONDS (540) so that the whole ends in
# time, each one's output in $OUT/NAME.txt and its exit status and duration in $OUT/summary.txt:
#   env             the GPU, the versions, JAX's devices
#   benchmark       experiments/benchmark.py, ResNet-50 at 224, batch 256, bfloat16: jaxcnn, plain Flax, and
#                   PyTorch's AMP with channels_last eager and under torch.compile; images/s, MFU, compile
#                   times, paired ratios (and benchmark.json)
#   data_benchmark  experiments/data_benchmark.py, lenet5 on synthetic data against the bare step, without
#                   and with workers, and with --steps_per_call 8
#   resume          the suite's bit-identical-resume and same-seed tests under
#                   XLA_FLAGS=--xla_gpu_deterministic_ops=true, then without the flag (is it needed?);
#                   the dry run: the same-seed test only
#   tests           the suite's device-independent tests (no simulated CPU devices, no oneDNN, not slow)
#                   with float32 references at full precision, in the time left
# $OUT holds at most these 8 files: what the device tool brings back.
set -uo pipefail  # not -e: a piece that fails is recorded and the next one runs
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=${1:-gpu}
case "$mode" in
    gpu | --dry-run | --wheels) ;;
    *)
        echo "usage: bash experiments/gpu_check.sh [--dry-run | --wheels]" >&2
        exit 2
        ;;
esac

if [ "$mode" = --wheels ]; then
    # The image's Python is 3.12 on x86-64 (see the device tool's notes); these wheels fit it.
    pins=$(.venv/bin/python -c 'import importlib.metadata as m, sys
print(" ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' grain array_record portpicker ml_collections flax optax)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
    rm -rf .whl
    # shellcheck disable=SC2086
    exec .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
export PYTHONUNBUFFERED=1

if [ "$mode" = --dry-run ]; then
    py=${PYTHON:-.venv/bin/python}
    export JAX_PLATFORMS=cpu
    # A 2-core CPU compiles for minutes what a GPU host compiles in seconds: the limits are for the GPU.
    budget=${GPU_CHECK_SECONDS:-3600} slack=10
    model=lenet5 batch=2 bench_steps=(--steps 1 --rounds 1)
    # The compiled peer takes a minute to compile on this CPU: its own test covers it.
    peers="jaxcnn[bf16],flax[bf16],torch[bf16]"
    data_steps=(--batch_size 8 --steps 8 --rounds 2) resume_tests="identical_metrics"
    test_args=(--collect-only)
else
    py=${PYTHON:-python3}
    export JAX_PLATFORMS=cuda
    budget=${GPU_CHECK_SECONDS:-540} slack=1
    model=resnet50 batch=256 bench_steps=(--steps 10 --rounds 3)
    peers="jaxcnn[bf16],flax[bf16],torch[bf16],torch[compile,bf16]"
    data_steps=(--batch_size 128 --steps 48 --rounds 10)  # --steps: a multiple of 8
    resume_tests="resumes_bit_identically or identical_metrics"
    test_args=(-n 4 -rfE)
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/jaxcnn-site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/jaxcnn-site
    elif ! "$py" -c 'import grain, ml_collections' 2>/dev/null; then
        "$py" -m pip install -q --retries 1 --timeout 20 grain ml_collections || exit 1
    fi
    if ! "$py" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
        "$py" -m pip install -q --retries 1 --timeout 20 "jax[cuda13]==${JAX_VERSION:-0.10.2}" || exit 1
    fi
    # Several JAX processes share the GPU (test workers; the benchmark beside PyTorch's process).
    export XLA_PYTHON_CLIENT_PREALLOCATE=false
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# piece NAME SECONDS COMMAND...: COMMAND with its output appended to $OUT/NAME.txt (NAME up to a colon),
# stopped (SIGINT, so that pytest and the scripts still print what they have; a training run takes it as
# an interruption) after SECONDS (times the slack) or at the budget's end, whichever is first.
piece() {
    local name=$1 seconds=$(($2 * slack)) left=$((budget - SECONDS)) started=$SECONDS status
    shift 2
    ((seconds > left)) && seconds=$left
    if ((seconds < 10)); then
        echo "$name: not run, the budget of $budget s is spent" | tee -a "$summary"
        return
    fi
    echo "== $name (at most $seconds s): $*" | tee -a "$OUT/${name%%:*}.txt"
    timeout -s INT -k 20 "$seconds" "$@" 2>&1 | tee -a "$OUT/${name%%:*}.txt"
    status=${PIPESTATUS[0]}
    echo "$name: exit $status$( ((status == 124)) && echo " (stopped at its limit)") in $((SECONDS - started)) s" |
        tee -a "$summary"
}

pytest=("$py" -m pytest -o addopts= -p no:cacheprovider -q)
versions='import importlib.metadata as m, sys, jax
print(sys.version)
for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "torch", "numpy"):
    print(p, m.version(p))
print(jax.devices())'

piece env:gpu 20 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    || echo 'no nvidia-smi'; echo \"\$(nproc) cores\""
piece env:python 60 "$py" -c "$versions"

piece benchmark 300 "$py" experiments/benchmark.py --models "$model" --batch-size "$batch" --bfloat16 \
    --peers "$peers" "${bench_steps[@]}" --loop-steps 0 --out "$OUT/benchmark.json"

data_benchmark=("$py" experiments/data_benchmark.py --dataset synthetic "${data_steps[@]}")
piece data_benchmark:workers0 40 "${data_benchmark[@]}"
piece data_benchmark:workers2 40 "${data_benchmark[@]}" --workers 2
piece data_benchmark:steps_per_call8 40 "${data_benchmark[@]}" --steps_per_call 8

# Bit-identical resume and same-seed runs, with XLA's deterministic GPU ops, then without them (a failure
# there, not here, says that the flag is needed).
XLA_FLAGS=--xla_gpu_deterministic_ops=true piece resume:deterministic 60 \
    "${pytest[@]}" tests/training/test_loop.py -k "$resume_tests"
piece resume:default 60 "${pytest[@]}" tests/training/test_loop.py -k "$resume_tests"

# Full float32 for the tests' references (TensorFloat-32 would miss them by design). Left out: the tests
# of simulated CPU devices (parallel), of the oneDNN extension, of exports (gigabytes), of the scripts.
JAX_DEFAULT_MATMUL_PRECISION=highest piece tests 600 "${pytest[@]}" "${test_args[@]}" -m "not slow" tests \
    --ignore=tests/parallel --ignore=tests/export --ignore=tests/experiments --ignore=tests/test_onednn.py \
    --ignore=tests/test_conv_paths.py --ignore=tests/training/test_compute_impl.py

echo "done in $SECONDS s; figures in $OUT" | tee -a "$summary"
