"""The project's layer-contract checker.

Every public layer's test calls `run_layer_contract(...)`. It checks, in this
order, and fails with an `AssertionError` that names the broken clause:

1. config: `get_config()` holds every constructor argument given, and
   `from_config(get_config())` gives the same config and, with the same
   weights, the same outputs;
2. symbolic call: on `keras.Input`s the output shape and dtype match
   `compute_output_shape` and the expected shape and dtype;
3. eager call: on real data the output shape and dtype match;
4. fit: one `model.fit` step runs, the loss is finite and (when the layer has
   trainable weights) the weights move;
5. `.keras` save -> `keras.saving.load_model` -> identical outputs;
6. `model.export()` SavedModel -> `tf.saved_model.load` -> identical outputs;
7. mixed precision: under `mixed_float16` the outputs are finite, float
   outputs are float16 and every float weight of the layer stays float32,
   and a fit step runs with a finite loss.

It uses only public Keras and TensorFlow APIs (no `keras.src.testing`).
"""

import os
import tempfile
import warnings

import keras
import numpy as np

__all__ = ["run_layer_contract", "LayerContractError"]


class LayerContractError(AssertionError):
    """A layer broke one clause of the contract."""

    def __init__(self, clause, message):
        self.clause = clause
        super().__init__(f"[{clause}] {message}")


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


def _make_inputs(input_data, input_dtypes):
    datas = _as_list(input_data)
    dtypes = _as_list(input_dtypes) if input_dtypes is not None else [None] * len(datas)
    inputs = []
    for i, (d, dt) in enumerate(zip(datas, dtypes, strict=True)):
        dt = dt or str(np.asarray(d).dtype)
        inputs.append(
            keras.Input(shape=np.asarray(d).shape[1:], dtype=dt, name=f"input_{i}")
        )
    return inputs


def _build_model(layer_fn, input_data, input_dtypes, call_kwargs):
    inputs = _make_inputs(input_data, input_dtypes)
    layer = layer_fn()
    args = inputs if isinstance(input_data, (list, tuple)) else inputs[0]
    if isinstance(input_data, (list, tuple)) and not layer_takes_list(layer):
        outputs = layer(*inputs, **call_kwargs)
    else:
        outputs = layer(args, **call_kwargs)
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)
    return model, layer, outputs


def layer_takes_list(layer):
    """Layers declare `call_takes_list = False` to get inputs as positional args."""
    return getattr(layer, "call_takes_list", True)


def _call(layer, input_data, call_kwargs):
    if isinstance(input_data, (list, tuple)):
        if layer_takes_list(layer):
            return layer(list(input_data), **call_kwargs)
        return layer(*input_data, **call_kwargs)
    return layer(input_data, **call_kwargs)


def _model_input(input_data):
    if isinstance(input_data, (list, tuple)):
        return list(input_data) if len(input_data) > 1 else input_data[0]
    return input_data


def _fit_once(model, input_data, outputs, clause):
    """One fit step against random targets; returns the loss."""
    outs = _as_list(outputs)
    float_outs = [o for o in outs if _is_float(o.dtype)]
    if len(float_outs) != len(outs):
        raise LayerContractError(
            clause, "a fit step needs float outputs; pass run_fit=False for this layer"
        )
    rng = np.random.default_rng(0)
    preds = _as_list(model(_model_input(input_data)))
    targets = [
        rng.normal(size=np.asarray(keras.ops.convert_to_numpy(p)).shape).astype("float32")
        for p in preds
    ]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=["mse"] * len(outs))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have any trainable")
            history = model.fit(
                _model_input(input_data),
                targets if len(targets) > 1 else targets[0],
                batch_size=len(targets[0]),
                epochs=1,
                verbose=0,
                shuffle=False,
            )
    except Exception as e:  # noqa: BLE001 - any failure breaks the clause
        raise LayerContractError(
            clause, f"fit failed: {type(e).__name__}: {str(e)[:300]}"
        ) from e
    loss = history.history["loss"][-1]
    if not np.isfinite(loss):
        raise LayerContractError(clause, f"loss after one fit step is {loss}")
    return loss


def run_layer_contract(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    expected_output_dtype=None,
    input_dtypes=None,
    call_kwargs=None,
    run_fit=True,
    expect_trainable_change=None,
    run_saved_model=True,
    run_mixed_precision=True,
    mixed_precision_output_dtype=None,
    rtol=1e-6,
    atol=1e-6,
    setup=None,
):
    """Check that a layer keeps the keras_space layer contract.

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        input_data: a numpy array, or a list of arrays for multi-input layers
            (passed as one list, or as positional arguments when the layer
            sets `call_takes_list = False`).
        expected_output_shape: the output shape including the batch size
            (None entries match anything), or a list of shapes.
        expected_output_dtype: the output dtype(s); defaults to the layer's
            compute dtype for every output.
        input_dtypes: dtypes of the symbolic inputs (default: the arrays').
        call_kwargs: extra keyword arguments for `call` (e.g. `training`).
        run_fit: run the one-step `fit` clause (needs float outputs).
        expect_trainable_change: whether a fit step must move a trainable
            weight; defaults to whether the layer has trainable weights.
        run_saved_model: run the `model.export()` clause.
        run_mixed_precision: run the `mixed_float16` clause.
        mixed_precision_output_dtype: the output dtype(s) expected under
            `mixed_float16` (default float16 for float outputs).
        rtol, atol: tolerances for "identical outputs".
        setup: optional callable applied to every fresh layer instance before
            its first call (e.g. `lambda layer: layer.adapt(data)`).

    Raises:
        LayerContractError: naming the clause that failed.

    Example:

    ```python
    import numpy as np
    from keras_space.testing import run_layer_contract

    run_layer_contract(
        keras.layers.Dense,
        {"units": 3},
        input_data=np.random.rand(4, 5).astype("float32"),
        expected_output_shape=(4, 3),
    )
    ```
    """
    call_kwargs = dict(call_kwargs or {})
    input_data = (
        [np.asarray(d) for d in input_data]
        if isinstance(input_data, (list, tuple))
        else np.asarray(input_data)
    )

    def make(config=None):
        new = layer_cls(**init_kwargs) if config is None else layer_cls.from_config(config)
        if setup is not None:
            setup(new)
        return new

    # 1. Config round trip.
    layer = make()
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
    revived = make(config)
    if _normalize(revived.get_config()) != _normalize(config):
        raise LayerContractError(
            "config", "from_config(get_config()).get_config() differs from get_config()"
        )

    # 2. Symbolic call.
    inputs = _make_inputs(input_data, input_dtypes)
    sym_in = inputs if isinstance(input_data, list) else inputs[0]
    sym_out = _call(layer, sym_in, call_kwargs)
    expected_dtypes = expected_output_dtype
    if expected_dtypes is None:
        expected_dtypes = [layer.compute_dtype] * len(_as_list(sym_out))
    expected_dtypes = _as_list(expected_dtypes)
    expected_shapes = None
    if expected_output_shape is not None:
        expected_shapes = (
            expected_output_shape
            if isinstance(expected_output_shape, list)
            else [expected_output_shape]
        )
    for i, out in enumerate(_as_list(sym_out)):
        if str(out.dtype) != str(expected_dtypes[i]):
            raise LayerContractError(
                "symbolic", f"output {i} dtype {out.dtype}, expected {expected_dtypes[i]}"
            )
        if expected_shapes is not None:
            exp = (None,) + tuple(expected_shapes[i])[1:]
            if not _shape_matches(out.shape, exp):
                raise LayerContractError(
                    "symbolic", f"output {i} shape {out.shape}, expected {exp}"
                )
    try:
        shape_arg = (
            [tuple(t.shape) for t in inputs]
            if isinstance(input_data, list)
            else tuple(inputs[0].shape)
        )
        if isinstance(input_data, list) and not layer_takes_list(layer):
            computed = layer.compute_output_shape(*shape_arg)
        else:
            computed = layer.compute_output_shape(shape_arg)
    except NotImplementedError as e:
        raise LayerContractError(
            "symbolic", "compute_output_shape is not implemented"
        ) from e
    computed_list = (
        computed if isinstance(computed, list) else [computed]
    )
    for i, (c, out) in enumerate(zip(computed_list, _as_list(sym_out), strict=True)):
        if not _shape_matches(c, out.shape):
            raise LayerContractError(
                "symbolic",
                f"compute_output_shape gives {c} for output {i}, call gives {out.shape}",
            )

    # 3. Eager call.
    eager_out = _to_numpy(_call(layer, input_data, call_kwargs))
    for i, out in enumerate(_as_list(eager_out)):
        if str(out.dtype) != str(expected_dtypes[i]):
            raise LayerContractError(
                "eager", f"output {i} dtype {out.dtype}, expected {expected_dtypes[i]}"
            )
        if expected_shapes is not None and not _shape_matches(
            out.shape, expected_shapes[i]
        ):
            raise LayerContractError(
                "eager", f"output {i} shape {out.shape}, expected {expected_shapes[i]}"
            )
        if _is_float(out.dtype) and not np.all(np.isfinite(out)):
            raise LayerContractError("eager", f"output {i} is not finite")

    # Config clause, part two: the revived layer with the same weights
    # computes the same function.
    _call(revived, input_data, call_kwargs)
    if len(revived.weights) != len(layer.weights):
        raise LayerContractError(
            "config",
            f"revived layer has {len(revived.weights)} weights, original "
            f"{len(layer.weights)}",
        )
    revived.set_weights(layer.get_weights())
    _assert_close(
        _to_numpy(_call(revived, input_data, call_kwargs)),
        eager_out,
        "config",
        "from_config(get_config()) with the same weights",
        rtol,
        atol,
    )

    # 4. One fit step.
    model, mlayer, mouts = _build_model(make, input_data, input_dtypes, call_kwargs)
    if run_fit:
        before = [np.array(w) for w in mlayer.trainable_weights]
        _fit_once(model, input_data, mouts, "fit")
        if expect_trainable_change is None:
            expect_trainable_change = bool(mlayer.trainable_weights)
        if expect_trainable_change:
            after = [np.array(w) for w in mlayer.trainable_weights]
            if not any(
                not np.array_equal(b, a) for b, a in zip(before, after, strict=True)
            ):
                raise LayerContractError(
                    "fit", "no trainable weight changed after one fit step"
                )

    reference = _to_numpy(model.predict(_model_input(input_data), verbose=0))

    with tempfile.TemporaryDirectory() as tmp:
        # 5. .keras round trip.
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
        _assert_close(
            _to_numpy(loaded.predict(_model_input(input_data), verbose=0)),
            reference,
            "keras_save",
            ".keras save/load",
            rtol,
            atol,
        )

        # 6. SavedModel export.
        if run_saved_model:
            import tensorflow as tf

            export_dir = os.path.join(tmp, "exported")
            model.export(export_dir, verbose=False)
            reloaded = tf.saved_model.load(export_dir)
            served = reloaded.serve(_model_input(input_data))
            _assert_close(
                _to_numpy(served),
                reference,
                "saved_model",
                "model.export() reload",
                rtol,
                atol,
            )

    # 7. Mixed precision.
    if run_mixed_precision:
        _check_mixed_precision(
            make, input_data, input_dtypes, call_kwargs, run_fit, mixed_precision_output_dtype
        )


def _check_mixed_precision(make, input_data, input_dtypes, call_kwargs, run_fit, out_dtypes):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model, layer, outs = _build_model(make, input_data, input_dtypes, call_kwargs)
        result = _as_list(_to_numpy(model(_model_input(input_data))))
        if out_dtypes is None:
            out_dtypes = [
                "float16" if _is_float(o.dtype) else str(o.dtype) for o in _as_list(outs)
            ]
        out_dtypes = _as_list(out_dtypes)
        for i, out in enumerate(result):
            if str(out.dtype) != str(out_dtypes[i]):
                raise LayerContractError(
                    "mixed_precision",
                    f"output {i} dtype {out.dtype}, expected {out_dtypes[i]}",
                )
            if _is_float(out.dtype) and not np.all(np.isfinite(out)):
                raise LayerContractError("mixed_precision", f"output {i} is not finite")
        for w in layer.weights:
            if str(w.dtype) in ("float16", "bfloat16"):
                raise LayerContractError(
                    "mixed_precision",
                    f"weight {w.path} is {w.dtype}; float weights must stay float32 "
                    "(or float64)",
                )
        if run_fit:
            _fit_once(model, input_data, outs, "mixed_precision")
    finally:
        keras.config.set_dtype_policy(previous)
