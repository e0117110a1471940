"""The project's layer-contract checker, one function per clause.

Every public layer's test calls `run_layer_contract(...)`, which runs the
clauses below in order; each clause is also a public function that a test
can call alone. A broken clause raises `LayerContractError` naming it.

1. `check_config`: `get_config()` holds every constructor argument given,
   and `from_config(get_config())` gives the same config;
2. `check_symbolic_call`: on `keras.Input`s the output shape and dtype match
   `compute_output_shape` and the expected shape and dtype;
3. `check_eager_call`: on real data the output shape and dtype match and
   float outputs are finite; then `check_config_outputs`: the revived layer
   with the same weights gives the same outputs;
4. `check_weight_counts`: the numbers of trainable and non-trainable weights
   and of seed generators (Keras core's `run_layer_test` counts);
5. `check_masking`: padded content never changes an output at a real
   position, and an explicit `padding_mask` wins over a Keras mask;
6. `check_fit`: one `model.fit` step runs, the loss is finite and (when the
   layer has trainable weights) the weights move;
7. `check_keras_save`: `.keras` save -> `keras.saving.load_model` ->
   identical outputs;
8. `check_saved_model`: `model.export()` SavedModel -> `tf.saved_model.load`
   -> identical outputs;
9. `check_mixed_precision`: under `mixed_float16` the outputs are finite,
   float outputs are float16, every float weight stays float32 (or float64),
   and a fit step runs with a finite loss.

Inputs: one array (the layer's only input), a list of arrays (passed to the
layer as one list, e.g. `SmoothMax`), or a dict of arrays (passed as keyword
arguments, the first being the layer's first `call` argument, e.g.
`{"inputs": x, "token_ids": ids}`), as Keras core's `run_layer_test` does.

It uses public Keras and TensorFlow APIs (not `keras.src.testing`), except one
private function where Keras has no public one: the masking clause attaches a
Keras mask with `keras.src.backend.common.masking.set_keras_mask`.
"""

import inspect
import os
import tempfile
import warnings

import keras
import numpy as np

from keras_space.api_export import keras_space_export

__all__ = [
    "LayerContractError",
    "check_config",
    "check_config_outputs",
    "check_eager_call",
    "check_fit",
    "check_keras_save",
    "check_masking",
    "check_mixed_precision",
    "check_saved_model",
    "check_symbolic_call",
    "check_weight_counts",
    "run_layer_contract",
]

# What the masking clause writes at padded positions, in turn: whatever they hold.
_GARBAGE = (np.nan, np.inf, -np.inf, 1e3)


@keras_space_export("keras_space.testing.LayerContractError", serializable=False)
class LayerContractError(AssertionError):
    """A layer broke one clause of the contract."""

    def __init__(self, clause, message):
        self.clause = clause
        super().__init__(f"[{clause}] {message}")


# ----------------------------------------------------------------- helpers


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _is_float(dtype):
    return "float" in str(dtype)


def _to_numpy(x):
    return keras.tree.map_structure(lambda t: keras.ops.convert_to_numpy(t), x)


def _normalize(value):
    """Make config values comparable: tuples become lists, recursively."""
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _normalize(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain(value):
    return isinstance(value, (bool, int, float, str, type(None), list, tuple, dict))


def _assert_close(actual, expected, clause, what, rtol, atol):
    actual = _as_list(actual)
    expected = _as_list(expected)
    if len(actual) != len(expected):
        raise LayerContractError(
            clause, f"{what}: {len(actual)} outputs, expected {len(expected)}"
        )
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a = np.asarray(a)
        e = np.asarray(e)
        if a.shape != e.shape:
            raise LayerContractError(
                clause, f"{what}: output {i} has shape {a.shape}, expected {e.shape}"
            )
        if not np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=False):
            diff = np.max(np.abs(a.astype("float64") - e.astype("float64")))
            raise LayerContractError(
                clause, f"{what}: output {i} differs (max abs diff {diff:.3g})"
            )


def _shape_matches(actual, expected):
    """`expected` may use None for any size."""
    actual = tuple(actual)
    expected = tuple(expected)
    if len(actual) != len(expected):
        return False
    return all(e is None or a is None or a == e for a, e in zip(actual, expected, strict=True))


def _prepare_data(input_data):
    if isinstance(input_data, dict):
        return {k: np.asarray(v) for k, v in input_data.items()}
    if isinstance(input_data, (list, tuple)):
        return [np.asarray(d) for d in input_data]
    return np.asarray(input_data)


def _symbolic_inputs(input_data, input_dtypes=None):
    """keras.Input(s) with the structure of `input_data`; dtypes default to the arrays'."""

    def make(name, data, dtype):
        data = np.asarray(data)
        return keras.Input(shape=data.shape[1:], dtype=dtype or str(data.dtype), name=name)

    if isinstance(input_data, dict):
        dtypes = input_dtypes or {}
        return {k: make(k, v, dtypes.get(k)) for k, v in input_data.items()}
    if isinstance(input_data, list):
        dtypes = input_dtypes or [None] * len(input_data)
        return [make(f"input_{i}", d, t) for i, (d, t) in enumerate(zip(input_data, dtypes, strict=True))]
    return make("input_0", input_data, input_dtypes)


def _call(layer, inputs, call_kwargs):
    """Call `layer` on inputs of any structure (a dict becomes keyword arguments)."""
    if isinstance(inputs, dict):
        return layer(**inputs, **call_kwargs)
    return layer(inputs, **call_kwargs)


def _first(inputs):
    """The layer's first input (the one a Keras mask rides on)."""
    if isinstance(inputs, dict):
        return next(iter(inputs.values()))
    if isinstance(inputs, list):
        return inputs[0]
    return inputs


def _with_first(inputs, first):
    """`inputs` with its first input replaced by `first` (same structure)."""
    if isinstance(inputs, dict):
        return {**inputs, next(iter(inputs)): first}
    if isinstance(inputs, list):
        return [first] + inputs[1:]
    return first


def _build_model(layer, input_data, input_dtypes, call_kwargs):
    inputs = _symbolic_inputs(input_data, input_dtypes)
    outputs = _call(layer, inputs, call_kwargs)
    return keras.Model(inputs, outputs), outputs


def _compute_output_shape(layer, input_data):
    if isinstance(input_data, dict):
        shapes = {f"{k}_shape": tuple(v.shape) for k, v in input_data.items()}
        first = next(iter(shapes))
        return layer.compute_output_shape(shapes.pop(first), **shapes)
    if isinstance(input_data, list):
        return layer.compute_output_shape([tuple(d.shape) for d in input_data])
    return layer.compute_output_shape(tuple(input_data.shape))


def _seed_generator_count(layer):
    """SeedGenerators owned by the layer and its sublayers (one state variable each)."""
    return sum("seed_generator" in v.path for v in layer.variables)


# ----------------------------------------------------------------- clauses


@keras_space_export("keras_space.testing.check_config", serializable=False)
def check_config(layer, init_kwargs, make_from_config):
    """Clause 1. Returns the revived layer `make_from_config(layer.get_config())`."""
    config = layer.get_config()
    for key, value in init_kwargs.items():
        if key not in config:
            raise LayerContractError(
                "config", f"get_config() lacks the constructor argument {key!r}"
            )
        if _plain(value) and _normalize(config[key]) != _normalize(value):
            raise LayerContractError(
                "config",
                f"get_config()[{key!r}] is {config[key]!r}, constructed with {value!r}",
            )
    revived = make_from_config(config)
    if _normalize(revived.get_config()) != _normalize(config):
        raise LayerContractError(
            "config", "from_config(get_config()).get_config() differs from get_config()"
        )
    return revived


def _expected_dtypes(layer, outputs, expected_output_dtype):
    if expected_output_dtype is None:
        return [layer.compute_dtype] * len(_as_list(outputs))
    return _as_list(expected_output_dtype)


def _expected_shapes(expected_output_shape):
    if expected_output_shape is None:
        return None
    if isinstance(expected_output_shape, list):
        return expected_output_shape
    return [expected_output_shape]


@keras_space_export("keras_space.testing.check_symbolic_call", serializable=False)
def check_symbolic_call(
    layer, input_data, expected_output_shape=None, expected_output_dtype=None,
    input_dtypes=None, call_kwargs=None,
):
    """Clause 2: symbolic output shapes and dtypes, and `compute_output_shape`."""
    input_data = _prepare_data(input_data)
    sym_out = _call(layer, _symbolic_inputs(input_data, input_dtypes), dict(call_kwargs or {}))
    dtypes = _expected_dtypes(layer, sym_out, expected_output_dtype)
    shapes = _expected_shapes(expected_output_shape)
    for i, out in enumerate(_as_list(sym_out)):
        if str(out.dtype) != str(dtypes[i]):
            raise LayerContractError("symbolic", f"output {i} dtype {out.dtype}, expected {dtypes[i]}")
        if shapes is not None:
            exp = (None,) + tuple(shapes[i])[1:]
            if not _shape_matches(out.shape, exp):
                raise LayerContractError("symbolic", f"output {i} shape {out.shape}, expected {exp}")
    batchless = keras.tree.map_structure(lambda d: np.empty((0,) + d.shape[1:], d.dtype), input_data)
    try:
        computed = _compute_output_shape(layer, batchless)
    except NotImplementedError as e:
        raise LayerContractError("symbolic", "compute_output_shape is not implemented") from e
    computed = computed if isinstance(computed, list) else [computed]
    for i, (c, out) in enumerate(zip(computed, _as_list(sym_out), strict=True)):
        c = (None,) + tuple(c)[1:]
        if not _shape_matches(c, out.shape):
            raise LayerContractError(
                "symbolic", f"compute_output_shape gives {c} for output {i}, call gives {out.shape}"
            )


@keras_space_export("keras_space.testing.check_eager_call", serializable=False)
def check_eager_call(
    layer, input_data, expected_output_shape=None, expected_output_dtype=None, call_kwargs=None
):
    """Clause 3: eager output shapes, dtypes and finiteness. Returns the outputs (numpy)."""
    out = _to_numpy(_call(layer, _prepare_data(input_data), dict(call_kwargs or {})))
    dtypes = _expected_dtypes(layer, out, expected_output_dtype)
    shapes = _expected_shapes(expected_output_shape)
    for i, o in enumerate(_as_list(out)):
        if str(o.dtype) != str(dtypes[i]):
            raise LayerContractError("eager", f"output {i} dtype {o.dtype}, expected {dtypes[i]}")
        if shapes is not None and not _shape_matches(o.shape, shapes[i]):
            raise LayerContractError("eager", f"output {i} shape {o.shape}, expected {shapes[i]}")
        if _is_float(o.dtype) and not np.all(np.isfinite(o)):
            raise LayerContractError("eager", f"output {i} is not finite")
    return out


@keras_space_export("keras_space.testing.check_config_outputs", serializable=False)
def check_config_outputs(layer, revived, input_data, call_kwargs=None, rtol=1e-6, atol=1e-6):
    """Clause 3b: the revived layer with `layer`'s weights computes the same function."""
    input_data = _prepare_data(input_data)
    call_kwargs = dict(call_kwargs or {})
    expected = _to_numpy(_call(layer, input_data, call_kwargs))
    _call(revived, input_data, call_kwargs)
    if len(revived.weights) != len(layer.weights):
        raise LayerContractError(
            "config", f"revived layer has {len(revived.weights)} weights, original {len(layer.weights)}"
        )
    revived.set_weights(layer.get_weights())
    _assert_close(
        _to_numpy(_call(revived, input_data, call_kwargs)), expected, "config",
        "from_config(get_config()) with the same weights", rtol, atol,
    )


@keras_space_export("keras_space.testing.check_weight_counts", serializable=False)
def check_weight_counts(
    layer, expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
    expected_num_seed_generators=None,
):
    """Clause 4 (Keras core's counts) on a built layer; None skips a count."""
    counts = {
        "trainable weights": (len(layer.trainable_weights), expected_num_trainable_weights),
        "non-trainable weights": (len(layer.non_trainable_weights), expected_num_non_trainable_weights),
        "seed generators": (_seed_generator_count(layer), expected_num_seed_generators),
    }
    for what, (got, expected) in counts.items():
        if expected is not None and got != expected:
            raise LayerContractError("counts", f"{got} {what}, expected {expected}")


def _takes_padding_mask(layer):
    return "padding_mask" in inspect.signature(layer.call).parameters


def _real_positions(output, mask):
    """The output entries at real positions: (batch, seq, ...) outputs are indexed by
    their mask; anything else (pooled outputs) is compared whole."""
    output = np.asarray(output)
    if mask is not None and output.ndim >= 2 and output.shape[:2] == mask.shape:
        return output[mask]
    return output


def _output_mask(layer, data, mask):
    """The layer's output mask for input mask `mask` (numpy bool), or the input mask."""
    out = layer.compute_mask(keras.ops.convert_to_tensor(_first(data)), keras.ops.convert_to_tensor(mask))
    out = out[0] if isinstance(out, (list, tuple)) else out
    return mask if out is None else np.asarray(keras.ops.convert_to_numpy(out), dtype=bool)


@keras_space_export("keras_space.testing.check_masking", serializable=False)
def check_masking(layer, input_data, padding_mask, call_kwargs=None, rtol=1e-5, atol=1e-5):
    """Clause 5 on a built layer, with `padding_mask` (batch, seq) bool, True = real.

    - Padded content (the first input's padded positions set to NaN, inf, -inf and 1e3 in turn) does not
      change any output at a real position (with the mask as a call argument
      when the layer takes `padding_mask`, else as a Keras mask).
    - When the layer takes `padding_mask`: the argument equals the same mask
      given as a Keras mask, and wins over a contradicting Keras mask
      (keras-hub's rule, `keras_space.utils.masking`).
    """
    input_data = _prepare_data(input_data)
    call_kwargs = dict(call_kwargs or {})
    mask = np.asarray(padding_mask, dtype=bool)

    def poisoned(data):
        first = np.array(_first(data), copy=True)
        if not np.issubdtype(first.dtype, np.floating):
            return data
        padded = first[~mask]
        padded[...] = np.resize(np.asarray(_GARBAGE, first.dtype), padded.shape[:1])[
            (slice(None),) + (None,) * (padded.ndim - 1)
        ]
        first[~mask] = padded
        return _with_first(data, first)

    def run(data, keras_mask=None, argument=None):
        kwargs = dict(call_kwargs)
        if argument is not None:
            kwargs["padding_mask"] = argument
        if keras_mask is not None:
            data = _with_first(data, _MaskCarrier()(_first(data), keras_mask))
        return _as_list(_to_numpy(_call(layer, data, kwargs)))

    takes_argument = _takes_padding_mask(layer)
    as_argument = {"argument": mask} if takes_argument else {"keras_mask": mask}
    clean = run(input_data, **as_argument)
    dirty = run(poisoned(input_data), **as_argument)
    out_mask = _output_mask(layer, input_data, mask)

    def real(outputs):  # outputs at padded positions are unspecified: compare real ones
        return [_real_positions(o, out_mask) for o in outputs]

    for i, (c, d) in enumerate(zip(real(clean), real(dirty), strict=True)):
        if _is_float(c.dtype):
            _assert_close(d, c, "masking",
                          f"output {i} at real positions after changing padded content", rtol, atol)
    if takes_argument:
        _assert_close(real(run(input_data, keras_mask=mask)), real(clean), "masking",
                      "Keras mask against the same padding_mask argument", rtol, atol)
        everything = np.ones_like(mask)
        _assert_close(real(run(input_data, keras_mask=everything, argument=mask)), real(clean),
                      "masking", "padding_mask argument must win over a Keras mask", rtol, atol)


class _MaskCarrier(keras.layers.Layer):
    """Passes its input through with `mask` attached as its Keras mask."""

    def call(self, x, mask_values):
        from keras.src.backend.common.masking import set_keras_mask

        x = keras.ops.convert_to_tensor(x)
        x = keras.ops.add(x, keras.ops.zeros_like(x))  # a fresh tensor to carry the mask
        set_keras_mask(x, keras.ops.convert_to_tensor(np.asarray(mask_values, dtype=bool)))
        return x


def _fit_once(model, input_data, outputs, clause):
    """One fit step against random targets; returns the loss."""
    outs = _as_list(outputs)
    if not all(_is_float(o.dtype) for o in outs):
        raise LayerContractError(clause, "a fit step needs float outputs; pass run_fit=False for this layer")
    rng = np.random.default_rng(0)
    preds = _as_list(model(input_data))
    targets = [rng.normal(size=tuple(p.shape)).astype("float32") for p in preds]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=["mse"] * len(outs))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have any trainable")
            history = model.fit(
                input_data, targets if len(targets) > 1 else targets[0],
                batch_size=len(targets[0]), epochs=1, verbose=0, shuffle=False,
            )
    except Exception as e:  # noqa: BLE001 - any failure breaks the clause
        raise LayerContractError(clause, f"fit failed: {type(e).__name__}: {str(e)[:300]}") from e
    loss = history.history["loss"][-1]
    if not np.isfinite(loss):
        raise LayerContractError(clause, f"loss after one fit step is {loss}")
    return loss


@keras_space_export("keras_space.testing.check_fit", serializable=False)
def check_fit(layer, input_data, input_dtypes=None, call_kwargs=None, expect_trainable_change=None):
    """Clause 6: one fit step of a model around a fresh `layer`. Returns the model."""
    input_data = _prepare_data(input_data)
    model, outputs = _build_model(layer, input_data, input_dtypes, dict(call_kwargs or {}))
    before = [np.array(w) for w in layer.trainable_weights]
    _fit_once(model, input_data, outputs, "fit")
    if expect_trainable_change is None:
        expect_trainable_change = bool(layer.trainable_weights)
    if expect_trainable_change:
        after = [np.array(w) for w in layer.trainable_weights]
        if all(np.array_equal(b, a) for b, a in zip(before, after, strict=True)):
            raise LayerContractError("fit", "no trainable weight changed after one fit step")
    return model


def _reference(model, input_data, reference):
    if reference is None:
        reference = _to_numpy(model.predict(input_data, verbose=0))
    return reference


@keras_space_export("keras_space.testing.check_keras_save", serializable=False)
def check_keras_save(model, input_data, rtol=1e-6, atol=1e-6, reference=None):
    """Clause 7: `.keras` save and `load_model` give identical outputs.

    `reference`: the model's outputs on `input_data`, when already computed.
    """
    input_data = _prepare_data(input_data)
    reference = _reference(model, input_data, reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        try:
            loaded = keras.saving.load_model(path)
        except Exception as e:  # noqa: BLE001 - any failure breaks the clause
            raise LayerContractError(
                "keras_save",
                f"load_model failed ({type(e).__name__}: {str(e)[:300]}); is the "
                "class registered with keras_space_export?",
            ) from e
        # called directly: `reference` came from the compiled `predict`, so the eager
        # path is compared with it too (and a second compilation is saved)
        _assert_close(_to_numpy(loaded(input_data, training=False)), reference,
                      "keras_save", ".keras save/load", rtol, atol)


@keras_space_export("keras_space.testing.check_saved_model", serializable=False, backends=("tensorflow",))
def check_saved_model(model, input_data, rtol=1e-6, atol=1e-6, reference=None):
    """Clause 8: `model.export()` and `tf.saved_model.load` give identical outputs.

    `reference`: the model's outputs on `input_data`, when already computed.
    """
    import tensorflow as tf

    input_data = _prepare_data(input_data)
    reference = _reference(model, input_data, reference)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = os.path.join(tmp, "exported")
        model.export(export_dir, verbose=False)
        reloaded = tf.saved_model.load(export_dir)  # keep it alive while serving
        served = reloaded.serve(input_data)
        _assert_close(_to_numpy(served), reference, "saved_model", "model.export() reload", rtol, atol)


@keras_space_export("keras_space.testing.check_mixed_precision", serializable=False)
def check_mixed_precision(
    make_layer, input_data, input_dtypes=None, call_kwargs=None, run_fit=True, output_dtypes=None
):
    """Clause 9: a fresh layer from `make_layer()` under `mixed_float16`."""
    input_data = _prepare_data(input_data)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = make_layer()
        model, outs = _build_model(layer, input_data, input_dtypes, dict(call_kwargs or {}))
        result = _as_list(_to_numpy(model(input_data)))
        if output_dtypes is None:
            output_dtypes = ["float16" if _is_float(o.dtype) else str(o.dtype) for o in _as_list(outs)]
        output_dtypes = _as_list(output_dtypes)
        for i, out in enumerate(result):
            if str(out.dtype) != str(output_dtypes[i]):
                raise LayerContractError(
                    "mixed_precision", f"output {i} dtype {out.dtype}, expected {output_dtypes[i]}"
                )
            if _is_float(out.dtype) and not np.all(np.isfinite(out)):
                raise LayerContractError("mixed_precision", f"output {i} is not finite")
        for w in layer.weights:
            if str(w.dtype) in ("float16", "bfloat16"):
                raise LayerContractError(
                    "mixed_precision",
                    f"weight {w.path} is {w.dtype}; float weights must stay float32 (or float64)",
                )
        if run_fit:
            _fit_once(model, input_data, outs, "mixed_precision")
    finally:
        keras.config.set_dtype_policy(previous)


# ----------------------------------------------------------------- all clauses


@keras_space_export("keras_space.testing.run_layer_contract", serializable=False)
def run_layer_contract(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    expected_output_dtype=None,
    input_dtypes=None,
    call_kwargs=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_seed_generators=None,
    padding_mask=None,
    run_fit=True,
    expect_trainable_change=None,
    run_saved_model=True,
    run_mixed_precision=True,
    mixed_precision_output_dtype=None,
    rtol=1e-6,
    atol=1e-6,
    setup=None,
):
    """Check that a layer keeps the keras_space layer contract (every clause in order).

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: a numpy array; a list of arrays (passed to the layer as one
            list); or a dict of arrays (passed as keyword arguments, the first
            key being the first `call` argument).
        expected_output_shape: the output shape including the batch size
            (None entries match anything), or a list of shapes. Defaults to
            None (not checked).
        expected_output_dtype: the output dtype(s). Defaults to the layer's
            compute dtype for every output.
        input_dtypes: dtypes of the symbolic inputs, with the structure of
            `input_data`. Defaults to the arrays' dtypes.
        call_kwargs: extra keyword arguments for `call` (e.g. `training`).
            Defaults to None.
        expected_num_trainable_weights: Keras core's count, checked on the
            built layer. Defaults to None (not checked).
        expected_num_non_trainable_weights: likewise. Defaults to None.
        expected_num_seed_generators: likewise. Defaults to None.
        padding_mask: a (batch, seq) boolean mask for the masking clause.
            Defaults to None (clause skipped).
        run_fit: run the one-step `fit` clause (needs float outputs).
            Defaults to True.
        expect_trainable_change: whether a fit step must move a trainable
            weight. Defaults to whether the layer has trainable weights.
        run_saved_model: run the `model.export()` clause. It is the costliest,
            and what it checks (the class's weights and call trace into a
            SavedModel) rarely changes with the constructor variant: a test of
            several variants may run it for one of them. A SavedModel is
            TensorFlow's format: on other backends the clause is skipped.
            Defaults to `True`.
        run_mixed_precision: run the `mixed_float16` clause. Defaults to True.
        mixed_precision_output_dtype: the output dtype(s) expected under
            `mixed_float16`. Defaults to float16 for float outputs.
        rtol: relative tolerance of "identical outputs". Defaults to 1e-6.
        atol: absolute tolerance of "identical outputs". Defaults to 1e-6.
        setup: optional callable applied to every fresh layer instance before
            its first call (e.g. `lambda layer: layer.adapt(data)`).

    Raises:
        LayerContractError: naming the clause that failed.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_space.testing import run_layer_contract

    run_layer_contract(
        keras.layers.Dense,
        {"units": 3},
        input_data=np.random.rand(4, 5).astype("float32"),
        expected_output_shape=(4, 3),
        expected_num_trainable_weights=2,
        run_saved_model=False,
    )
    ```
    """
    call_kwargs = dict(call_kwargs or {})
    input_data = _prepare_data(input_data)

    def make(config=None):
        new = layer_cls(**init_kwargs) if config is None else layer_cls.from_config(config)
        if setup is not None:
            setup(new)
        return new

    layer = make()
    revived = check_config(layer, init_kwargs, make)
    check_symbolic_call(layer, input_data, expected_output_shape, expected_output_dtype,
                        input_dtypes, call_kwargs)
    check_eager_call(layer, input_data, expected_output_shape, expected_output_dtype, call_kwargs)
    check_config_outputs(layer, revived, input_data, call_kwargs, rtol, atol)
    check_weight_counts(layer, expected_num_trainable_weights, expected_num_non_trainable_weights,
                        expected_num_seed_generators)
    if padding_mask is not None:
        check_masking(layer, input_data, padding_mask, call_kwargs, max(rtol, 1e-5), max(atol, 1e-5))
    fresh = make()
    if run_fit:
        model = check_fit(fresh, input_data, input_dtypes, call_kwargs, expect_trainable_change)
    else:
        model, _ = _build_model(fresh, input_data, input_dtypes, call_kwargs)
    reference = _reference(model, input_data, None)
    check_keras_save(model, input_data, rtol, atol, reference)
    if run_saved_model and keras.backend.backend() == "tensorflow":
        check_saved_model(model, input_data, rtol, atol, reference)
    if run_mixed_precision:
        check_mixed_precision(make, input_data, input_dtypes, call_kwargs, run_fit,
                              mixed_precision_output_dtype)
