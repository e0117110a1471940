"""Function-preserving widening of Transformers and plain Keras models by an integer factor.

Every hidden unit is repeated k times *in place* ([x1, x1, x2, x2, ...], so
attention heads stay intact). A widened tensor is `repeat(x) * s` for a scale
`s` ("its form"): hidden states carry s = 1/sqrt(k) (same norm as x), the
outputs of a non-homogeneous activation (GELU, tanh) carry s = 1, and inputs
that are data (token ids, features) are not widened (form None). Each layer's
weights follow from the forms of its input and output:

- a linear map from form s_in to form s_out: kernel repeated on both sides and
  multiplied by s_out / (k * s_in) (one k from summing the k equal input
  copies), bias repeated times s_out; from an unwidened input: s_out only;
- embeddings: repeated times 1/sqrt(k);
- LayerNorm on form s: epsilon * s**2 (the variance shrinks by s**2), gamma
  and beta repeated times the output form;
- attention (1/sqrt(head_dim) scaling, head_dim grows k-fold): queries and keys
  get the form k**(-1/4), so q'.k' / sqrt(k d) = q.k / sqrt(d); values and the
  output projection are plain linear maps. For s_in = 1/sqrt(k) this gives the
  article's rules: query/key weights * k^(1/4)/k, biases * k^(1/4)/sqrt(k),
  value/output weights / k, biases / sqrt(k); GELU FFN: first layer w / sqrt(k)
  with the bias unchanged, second w / (k sqrt(k)), bias / sqrt(k).

Symmetry-breaking noise adds, to every kernel's rows that read the k copies of
one input unit, perturbations that sum to zero over the copies: the copies are
equal, so the function is unchanged, but their outgoing weights differ and
training pulls them apart.
"""

import math

import keras
import numpy as np

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.utils import validation

_HOMOGENEOUS = {"linear", "relu", None}


def _activation_name(activation):
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or str(activation)
    return name


def _is_homogeneous(activation):
    """relu(c z) = c relu(z) for c > 0: the output may keep the input's scale."""
    return _activation_name(activation) in _HOMOGENEOUS


class _Widener:
    def __init__(self, factor, noise, seed):
        self.k = validation.positive_int("factor", factor, minimum=2)
        self.noise = validation.non_negative_float("noise", noise)
        if self.noise > 1.0:
            raise ValueError(
                "`noise` must be in [0, 1]: it is relative to each weight's spread, and the "
                "function is kept to float rounding times (1 + noise), so larger noise "
                "swamps the weights (and 1e300 overflows them). "
                f"Received: noise={noise!r}"
            )
        self.rng = np.random.default_rng(validation.non_negative_int("seed", seed, allow_none=True))
        self.hidden = 1.0 / math.sqrt(self.k)

    # --------------------------------------------------------------- arrays
    def grow(self, array, new_shape, scale, input_axes=()):
        """Repeat every axis that grew k-fold, scale, and add zero-sum noise over input copies."""
        array = np.asarray(array, dtype="float64")
        grown = []
        for axis, (old, new) in enumerate(zip(array.shape, new_shape, strict=True)):
            if new != old and new == self.k * old:
                array = np.repeat(array, self.k, axis=axis)
                grown.append(axis)
            elif new != old:
                raise ValueError(f"Cannot widen a weight of shape {array.shape} to {tuple(new_shape)}")
        array = array * scale
        if self.noise > 0:
            for axis in input_axes:
                if axis in grown:
                    array = self._perturb(array, axis)
        return array

    def _perturb(self, array, axis):
        moved = np.moveaxis(array, axis, 0)
        units = moved.shape[0] // self.k
        split = moved.reshape((units, self.k) + moved.shape[1:])
        delta = self.rng.normal(size=split.shape) * self.noise * (np.std(array) or 1.0)
        delta -= delta.mean(axis=1, keepdims=True)
        return np.moveaxis((split + delta).reshape(moved.shape), 0, axis)

    def kernel_scale(self, s_in, s_out):
        out = 1.0 if s_out is None else s_out
        return out if s_in is None else out / (self.k * s_in)

    def assign(self, variable, value):
        value = value.astype(keras.backend.standardize_dtype(variable.dtype))
        if not np.all(np.isfinite(value)):
            raise ValueError(
                f"Widening gives non-finite values for `{variable.path}`: the model's own "
                "weights are non-finite or too large for the widened dtype. "
                f"Received: model with weights of up to {np.nanmax(np.abs(value)):g}"
            )
        variable.assign(value)

    # --------------------------------------------------------------- layers
    def dense(self, old, new, s_in, s_out, input_axes=(0,)):
        """A linear map (Dense or EinsumDense) from form s_in to form s_out (None: unwidened)."""
        kernel, *bias = old.weights
        noisy = input_axes if s_in is not None else ()
        self.assign(new.kernel, self.grow(kernel, new.kernel.shape, self.kernel_scale(s_in, s_out), noisy))
        if bias:
            self.assign(new.bias, self.grow(bias[0], new.bias.shape, 1.0 if s_out is None else s_out))

    def embedding(self, old, new):
        for o, n in zip(old.weights, new.weights, strict=True):
            self.assign(n, self.grow(o, n.shape, self.hidden))
        return self.hidden

    def layer_norm(self, old, new, s_in, s_out):
        if s_in is None:
            raise ValueError(f"LayerNormalization '{old.name}' reads an unwidened tensor; widen its input.")
        new.epsilon = old.epsilon * s_in**2
        for o, n in zip(old.weights, new.weights, strict=True):
            self.assign(n, self.grow(o, n.shape, s_out))

    def attention(self, old, new, s_query, s_value, s_out):
        """MultiHeadAttention: query/key in form k^(-1/4), values in the hidden form."""
        qk = self.k ** -0.25
        self.dense(old.query_dense, new.query_dense, s_query, qk, (0,))
        self.dense(old.key_dense, new.key_dense, s_value, qk, (0,))
        self.dense(old.value_dense, new.value_dense, s_value, self.hidden, (0,))
        self.dense(old.output_dense, new.output_dense, self.hidden, s_out, (1,))

    def transformer_encoder(self, old, new, s):
        """keras-hub TransformerEncoder on a residual stream of form s (kept through the block)."""
        a, b = _backbones.transformer_sublayers(old), _backbones.transformer_sublayers(new)
        self.layer_norm(a["attention_norm"], b["attention_norm"], s, s)
        self.layer_norm(a["output_norm"], b["output_norm"], s, s)
        self.attention(a["attention"], b["attention"], s, s, s)
        mid = s if _is_homogeneous(a["intermediate"].activation) else 1.0
        self.dense(a["intermediate"], b["intermediate"], s, mid)
        self.dense(a["output"], b["output"], mid, s)


# ----------------------------------------------------------------- rule table
#
# One function per layer kind, looked up with `isinstance` (first match wins).
# A rule gets the widener and a `_Site` (the original layer, the forms of its
# inputs, and `call(new_layer)`, which calls a layer on the widened inputs) and
# returns (output, form of the output). Supporting a new layer kind is one
# entry here and one test.


class _Site:
    """One call of an original layer during cloning, on widened inputs."""

    def __init__(self, layer, forms, call, keeps_output_width):
        self.layer = layer
        self.forms = forms  # the widened form of each tensor input (None: unwidened)
        self.s_in = forms[0] if forms else None
        self.call = call
        self.keeps_output_width = keeps_output_width


def _clone(layer, **changes):
    """A fresh layer of the same class from `layer`'s config with `changes`."""
    config = layer.get_config()
    config.update(changes)
    return type(layer).from_config(config)


def _widen_weightless(w, site):
    """Dropout, Add: a fresh copy; the form passes through (Add needs one form)."""
    if len(set(site.forms)) != 1:
        raise ValueError(
            f"{type(site.layer).__name__} '{site.layer.name}' combines tensors of different "
            f"widened forms {set(site.forms)}; this model cannot be widened "
            "function-preservingly."
        )
    return site.call(_clone(site.layer)), site.s_in


def _widen_dense(w, site):
    layer = site.layer
    if site.keeps_output_width:
        new, s_out = _clone(layer), None
    else:  # relu(c z) = c relu(z): homogeneous activations keep the hidden form
        new = _clone(layer, units=layer.units * w.k)
        s_out = w.hidden if _is_homogeneous(layer.activation) else 1.0
    out = site.call(new)
    w.dense(layer, new, site.s_in, s_out)
    return out, s_out


def _widen_embedding(w, site):
    new = _clone(site.layer, output_dim=site.layer.output_dim * w.k)
    out = site.call(new)
    return out, w.embedding(site.layer, new)


def _widen_position_embedding(w, site):
    """keras-hub PositionEmbedding: its width follows its (widened) input."""
    new = _clone(site.layer)
    out = site.call(new)
    return out, w.embedding(site.layer, new)


def _widen_layer_norm(w, site):
    new = _clone(site.layer)
    out = site.call(new)
    w.layer_norm(site.layer, new, site.s_in, w.hidden)
    return out, w.hidden


def _widen_attention(w, site):
    layer = site.layer
    config = layer.get_config()
    if config.get("output_shape") is not None:
        raise ValueError(
            f"MultiHeadAttention '{layer.name}' has output_shape={config['output_shape']}; "
            "widen() supports output_shape=None only."
        )
    new = _clone(layer, key_dim=layer.key_dim * w.k, value_dim=(layer.value_dim or layer.key_dim) * w.k)
    out = site.call(new)
    s_value = site.forms[1] if len(site.forms) > 1 else site.s_in
    w.attention(layer, new, site.s_in, s_value, w.hidden)
    return out, w.hidden


def _widen_transformer_encoder(w, site):
    layer, s = site.layer, site.s_in
    if s is None:
        raise ValueError(f"TransformerEncoder '{layer.name}' needs a widened input.")
    new = _clone(
        layer,
        intermediate_dim=layer.intermediate_dim * w.k,
        layer_norm_epsilon=layer.layer_norm_epsilon * s**2,
    )
    out = site.call(new)
    w.transformer_encoder(layer, new, s)
    return out, s


def _rules():
    """(layer classes, rule) pairs, most specific first."""
    import keras_hub

    return (
        ((keras.layers.Dropout, keras.layers.Add), _widen_weightless),
        ((keras.layers.Dense,), _widen_dense),
        ((keras.layers.Embedding,), _widen_embedding),  # ReversibleEmbedding included
        ((keras_hub.layers.PositionEmbedding,), _widen_position_embedding),
        ((keras.layers.LayerNormalization,), _widen_layer_norm),
        ((keras.layers.MultiHeadAttention,), _widen_attention),
        ((keras_hub.layers.TransformerEncoder,), _widen_transformer_encoder),
    )


def _supported_names(rules):
    names = [cls.__name__ for classes, _ in rules for cls in classes]
    return ", ".join(names + ["keras-hub BertBackbone"])


def _consumers(model, tensor):
    """The operations of `model` that read `tensor`."""
    readers = []
    for op in model.operations:
        if isinstance(op, keras.layers.InputLayer):
            continue
        try:
            inputs = keras.tree.flatten(op.input)
        except (AttributeError, ValueError):  # an op called more than once: not a plain reader
            readers.append(op)
            continue
        if any(t is tensor for t in inputs):
            readers.append(op)
    return readers


def _produces(layer, output_ids):
    """Whether `layer`'s (single) output is one of the model outputs."""
    try:
        return id(layer.output) in output_ids
    except (AttributeError, ValueError):  # called more than once: not a model's output layer
        return False


def _widen_functional(model, w, keep_output_width):
    if model.__class__.__name__ != "Functional":  # Sequential or a functional subclass
        ins, outs = model.inputs, model.outputs
        model = keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs)
    rules = _rules()
    forms = {}
    output_ids = {id(t) for t in model.outputs}

    new_inputs = []
    for t in model.inputs:
        # Float inputs read only by Dense layers are features; other float inputs are hidden states.
        widen_it = "float" in str(t.dtype) and not all(
            isinstance(c, keras.layers.Dense) for c in _consumers(model, t)
        )
        shape = t.shape[1:-1] + (t.shape[-1] * w.k,) if widen_it else t.shape[1:]
        new = keras.Input(shape, dtype=t.dtype, name=t.name)
        forms[id(new)] = w.hidden if widen_it else None
        new_inputs.append(new)

    def call(layer, *args, **kwargs):
        rule = next((fn for classes, fn in rules if isinstance(layer, classes)), None)
        if rule is None:
            raise ValueError(
                f"widen() does not support layer '{layer.name}' of type {type(layer).__name__}. "
                f"Supported: {_supported_names(rules)}."
            )
        tensors = [a for a in keras.tree.flatten(args) if isinstance(a, keras.KerasTensor)]
        site = _Site(
            layer,
            [forms.get(id(t)) for t in tensors],
            lambda new: new(*args, **kwargs),
            keep_output_width and _produces(layer, output_ids),
        )
        out, s_out = rule(w, site)
        forms[id(out)] = s_out
        return out

    new_inputs = keras.tree.pack_sequence_as(model.input, new_inputs)
    return keras.models.clone_model(
        model, input_tensors=new_inputs, clone_function=lambda layer: layer, call_function=call
    )


def _widen_bert(backbone, w):
    """A keras-hub BertBackbone, through the backbone adapter."""
    new = _backbones.rebuilt_wider(backbone, w.k)
    for old_table, new_table in zip(
        _backbones.embedding_parts(backbone), _backbones.embedding_parts(new), strict=True
    ):
        w.embedding(old_table, new_table)
    w.layer_norm(_backbones.embeddings_norm(backbone), _backbones.embeddings_norm(new), w.hidden, w.hidden)
    for old_layer, new_layer in zip(
        _backbones.transformer_layers(backbone), _backbones.transformer_layers(new), strict=True
    ):
        w.transformer_encoder(old_layer, new_layer, w.hidden)
    w.dense(_backbones.pooler(backbone), _backbones.pooler(new), w.hidden, 1.0)  # tanh: repeated, unscaled
    return new


@keras_space_export("keras_space.growth.widen")
def widen(model, factor, noise=0.0, keep_output_width=False, seed=None):
    """A new model, every hidden dimension `factor` times wider, computing the same function.

    Supported: a keras-hub `BertBackbone` (returns a `BertBackbone` with
    `hidden_dim` and `intermediate_dim` times `factor`, same heads), and
    functional or Sequential models of `Embedding`, `Dense`,
    `LayerNormalization`, `MultiHeadAttention`, keras-hub `TransformerEncoder`
    (pre- or post-norm), `PositionEmbedding`, `ReversibleEmbedding`, `Dropout`
    and `Add`. The original model is not modified.

    Inputs: integer inputs (token ids) and float inputs read only by Dense
    layers (features) keep their width; other float inputs are hidden states
    and must be passed widened (`widen_inputs`). Outputs are widened hidden
    states, read back with `narrow_outputs`, unless `keep_output_width=True`,
    where Dense layers that produce model outputs keep their width (e.g. a
    classifier's logits come out identical).

    keras-hub's `BertBackbone` hard-codes LayerNorm epsilon 1e-12 in its
    config; the widened backbone's LayerNorms get epsilon / k in memory, but a
    reloaded one has 1e-12 again, a relative change below 1e-11 of any output.

    Args:
        model: the model to widen.
        factor: integer k >= 2.
        noise: relative size of the symmetry-breaking noise, in [0, 1] (0 = exact
            copies). The function is preserved for any value (to float rounding
            times 1 + noise). Defaults to `0.0`.
        keep_output_width: see above. Defaults to `False`.
        seed: seed of the noise. Defaults to `None`.

    Returns:
        The widened model.

    Example:

    ```python
    import keras_hub
    import numpy as np
    from keras_space.growth import narrow_outputs, widen

    # the pretrained MiniLM loads the same way: BertBackbone.from_preset(minilm_path())
    small = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                          hidden_dim=16, intermediate_dim=32)
    big = widen(small, 2, noise=0.01)                # 32 wide, same 2 heads
    inputs = {"token_ids": np.array([[2, 17, 5, 3]]), "segment_ids": np.zeros((1, 4), "int32"),
              "padding_mask": np.ones((1, 4), "int32")}
    same = narrow_outputs(big(inputs), 2)            # == small(inputs) to float32 rounding
    np.testing.assert_allclose(same["pooled_output"], small(inputs)["pooled_output"], atol=1e-5)
    ```

    References:
        - Su, "Can we losslessly enlarge a Transformer model? (1)",
          https://kexue.fm/archives/8444
        - Chen et al., "Net2Net: Accelerating Learning via Knowledge Transfer",
          https://arxiv.org/abs/1511.05641
    """
    w = _Widener(factor, noise, seed)
    keep_output_width = validation.strict_bool("keep_output_width", keep_output_width)
    if _backbones.is_bert_backbone(model):
        return _widen_bert(model, w)
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            "`model` must be a built functional or Sequential keras.Model or a keras-hub "
            f"BertBackbone. Received: {type(model).__name__}"
        )
    return _widen_functional(model, w, keep_output_width)


@keras_space_export("keras_space.growth.widen_inputs")
def widen_inputs(x, factor):
    """Hidden states of the original width -> the widened model's input form (repeat / sqrt(k))."""
    factor = validation.positive_int("factor", factor, minimum=2)
    x = np.asarray(keras.ops.convert_to_numpy(x))
    return np.repeat(x, factor, axis=-1) / math.sqrt(factor)


@keras_space_export("keras_space.growth.narrow_outputs")
def narrow_outputs(outputs, factor):
    """Read the original-width outputs back from a widened model's outputs.

    Hidden states (form repeat / sqrt(k)) are averaged over the k copies and
    multiplied by sqrt(k); a keras-hub BertBackbone's `"pooled_output"` (after
    tanh, form repeat) is averaged only. Accepts a tensor, a list or a dict.
    """
    factor = validation.positive_int("factor", factor, minimum=2)

    def narrow(x, scaled=True):
        x = np.asarray(keras.ops.convert_to_numpy(x))
        if x.shape[-1] % factor:
            raise ValueError(
                f"`outputs` must have a last axis divisible by factor={factor} (a widened "
                f"model's output). Received: shape {x.shape}"
            )
        copies = x.reshape(x.shape[:-1] + (x.shape[-1] // factor, factor)).mean(-1)
        return copies * math.sqrt(factor) if scaled else copies

    if isinstance(outputs, dict):
        return {key: narrow(v, scaled=key != "pooled_output") for key, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [narrow(v) for v in outputs]
    return narrow(outputs)
