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

from keras_space.api_export import keras_space_export

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
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 2:
            raise ValueError(f"`factor` must be an integer >= 2. Received: factor={factor!r}")
        if not (isinstance(noise, (int, float)) and noise >= 0):
            raise ValueError(f"`noise` must be a float >= 0. Received: noise={noise!r}")
        self.k = int(factor)
        self.noise = float(noise)
        self.rng = np.random.default_rng(seed)
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
        variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))

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
        self.dense(old._query_dense, new._query_dense, s_query, qk, (0,))
        self.dense(old._key_dense, new._key_dense, s_value, qk, (0,))
        self.dense(old._value_dense, new._value_dense, s_value, self.hidden, (0,))
        self.dense(old._output_dense, new._output_dense, self.hidden, s_out, (1,))

    def transformer_encoder(self, old, new, s):
        """keras-hub TransformerEncoder on a residual stream of form s (kept through the block)."""
        self.layer_norm(old._self_attention_layer_norm, new._self_attention_layer_norm, s, s)
        self.layer_norm(old._feedforward_layer_norm, new._feedforward_layer_norm, s, s)
        self.attention(old._self_attention_layer, new._self_attention_layer, s, s, s)
        mid = s if _is_homogeneous(old._feedforward_intermediate_dense.activation) else 1.0
        self.dense(old._feedforward_intermediate_dense, new._feedforward_intermediate_dense, s, mid)
        self.dense(old._feedforward_output_dense, new._feedforward_output_dense, mid, s)


def _config_widened(layer, k, s_in):
    """The config of the widened layer (and the class to build it with)."""
    config = layer.get_config()
    name = type(layer).__name__
    if name in ("Embedding", "ReversibleEmbedding"):
        config["output_dim"] = layer.output_dim * k
    elif name == "Dense":
        config["units"] = layer.units * k
    elif name == "MultiHeadAttention":
        if layer._output_shape is not None:
            raise ValueError(
                f"MultiHeadAttention '{layer.name}' has output_shape={layer._output_shape}; "
                "widen() supports output_shape=None only."
            )
        config["key_dim"] = layer._key_dim * k
        config["value_dim"] = (layer._value_dim or layer._key_dim) * k
    elif name == "TransformerEncoder":
        config["intermediate_dim"] = layer.intermediate_dim * k
        config["layer_norm_epsilon"] = layer.layer_norm_epsilon * s_in**2
    return type(layer).from_config(config)


SUPPORTED = (
    "InputLayer", "Embedding", "ReversibleEmbedding", "PositionEmbedding", "Dense",
    "LayerNormalization", "MultiHeadAttention", "TransformerEncoder", "Dropout", "Add",
)


def _widen_functional(model, w, keep_output_width):
    k = w.k
    if model.__class__.__name__ != "Functional":  # Sequential or a functional subclass
        ins, outs = model.inputs, model.outputs
        model = keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs)
    forms = {}
    output_ids = {id(t) for t in model.outputs}

    def uses(tensor):
        consumers = []
        for op in model.operations:
            for node in op._inbound_nodes:
                if any(t is tensor for t in node.input_tensors):
                    consumers.append(op)
        return consumers

    new_inputs = []
    for t in model.inputs:
        widen_it = "float" in str(t.dtype) and not all(
            type(c).__name__ == "Dense" for c in uses(t)
        )
        shape = t.shape[1:-1] + (t.shape[-1] * k,) if widen_it else t.shape[1:]
        new = keras.Input(shape, dtype=t.dtype, name=t.name)
        forms[id(new)] = w.hidden if widen_it else None
        new_inputs.append(new)

    def call(layer, *args, **kwargs):
        name = type(layer).__name__
        if name not in SUPPORTED:
            raise ValueError(
                f"widen() does not support layer '{layer.name}' of type {name}. "
                f"Supported: {', '.join(SUPPORTED)}, keras-hub BertBackbone."
            )
        flat_in = [a for a in keras.tree.flatten(args) if isinstance(a, keras.KerasTensor)]
        s_in = forms.get(id(flat_in[0])) if flat_in else None
        if name in ("Dropout", "Add"):  # no weights: a fresh copy, the form passes through
            in_forms = {forms.get(id(a)) for a in flat_in}
            if len(in_forms) != 1:
                raise ValueError(
                    f"Add '{layer.name}' sums tensors of different widened forms {in_forms}; "
                    "this model cannot be widened function-preservingly."
                )
            out = type(layer).from_config(layer.get_config())(*args, **kwargs)
            forms[id(out)] = s_in
            return out
        new = _config_widened(layer, k, s_in if s_in is not None else 1.0)
        if name == "Dense":
            keep = keep_output_width and id(_original_output(layer)) in output_ids
            if keep:
                config = layer.get_config()
                new = type(layer).from_config(config)
            out = new(*args, **kwargs)
            if keep:
                s_out = None
            else:  # relu(c z) = c relu(z): homogeneous activations keep the hidden form
                s_out = w.hidden if _is_homogeneous(layer.activation) else 1.0
            w.dense(layer, new, s_in, s_out)
        elif name in ("Embedding", "ReversibleEmbedding", "PositionEmbedding"):
            out = new(*args, **kwargs)
            s_out = w.embedding(layer, new)
        elif name == "LayerNormalization":
            out = new(*args, **kwargs)
            s_out = w.hidden
            w.layer_norm(layer, new, s_in, s_out)
        elif name == "MultiHeadAttention":
            out = new(*args, **kwargs)
            s_value = forms.get(id(flat_in[1])) if len(flat_in) > 1 else s_in
            s_out = w.hidden
            w.attention(layer, new, s_in, s_value, s_out)
        elif name == "TransformerEncoder":
            if s_in is None:
                raise ValueError(f"TransformerEncoder '{layer.name}' needs a widened input.")
            out = new(*args, **kwargs)
            s_out = s_in
            w.transformer_encoder(layer, new, s_in)
        forms[id(out)] = s_out
        return out

    def _original_output(layer):
        return layer._inbound_nodes[0].output_tensors[0]

    new_inputs = keras.tree.pack_sequence_as(model.input, new_inputs)
    widened = keras.models.clone_model(
        model, input_tensors=new_inputs, clone_function=lambda layer: layer, call_function=call
    )
    return widened


def _widen_bert(backbone, w):
    k = w.k
    config = backbone.get_config()
    config.update(hidden_dim=backbone.hidden_dim * k, intermediate_dim=backbone.intermediate_dim * k)
    new = type(backbone).from_config(config)
    for name in ("token_embedding", "position_embedding", "segment_embedding"):
        w.embedding(getattr(backbone, name), getattr(new, name))
    w.layer_norm(backbone.embeddings_layer_norm, new.embeddings_layer_norm, w.hidden, w.hidden)
    for old_layer, new_layer in zip(backbone.transformer_layers, new.transformer_layers, strict=True):
        w.transformer_encoder(old_layer, new_layer, w.hidden)
    w.dense(backbone.pooled_dense, new.pooled_dense, w.hidden, 1.0)  # tanh: repeated, unscaled
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
        noise: relative size of the symmetry-breaking noise (0 = exact copies).
            The function is preserved for any value (to float rounding).
        keep_output_width: see above.
        seed: seed of the noise.

    Returns:
        The widened model.

    Example:

    ```python
    import keras_hub
    from keras_space.growth import narrow_outputs, widen
    from keras_space.utils import minilm_path

    small = keras_hub.models.BertBackbone.from_preset(minilm_path())
    big = widen(small, 2, noise=0.01)                # 768 wide, same 12 heads
    same = narrow_outputs(big(inputs), 2)            # == small(inputs) to ~1e-6
    ```

    References:
        - Su, "Can we losslessly enlarge a Transformer model? (1)",
          https://kexue.fm/archives/8444
        - Chen et al., "Net2Net: Accelerating Learning via Knowledge Transfer",
          https://arxiv.org/abs/1511.05641
    """
    w = _Widener(factor, noise, seed)
    if type(model).__name__ == "BertBackbone" or (
        hasattr(model, "transformer_layers") and hasattr(model, "pooled_dense")
    ):
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
    x = np.asarray(keras.ops.convert_to_numpy(x))
    return np.repeat(x, factor, axis=-1) / math.sqrt(factor)


@keras_space_export("keras_space.growth.narrow_outputs")
def narrow_outputs(outputs, factor):
    """Read the original-width outputs back from a widened model's outputs.

    Hidden states (form repeat / sqrt(k)) are averaged over the k copies and
    multiplied by sqrt(k); a keras-hub BertBackbone's `"pooled_output"` (after
    tanh, form repeat) is averaged only. Accepts a tensor, a list or a dict.
    """

    def narrow(x, scaled=True):
        x = np.asarray(keras.ops.convert_to_numpy(x))
        copies = x.reshape(x.shape[:-1] + (x.shape[-1] // factor, factor)).mean(-1)
        return copies * math.sqrt(factor) if scaled else copies

    if isinstance(outputs, dict):
        return {key: narrow(v, scaled=key != "pooled_output") for key, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [narrow(v) for v in outputs]
    return narrow(outputs)
