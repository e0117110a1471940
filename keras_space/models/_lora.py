"""LoRA beside prompts: keras-hub's `enable_lora` on a P-tuned backbone, kept through save/load.

keras-hub's `Backbone.enable_lora(rank)` gives the query and value projections of
every attention layer (Keras `EinsumDense` layers) two trainable low-rank factors,
`W + (alpha / rank) A B`. Three things stand between that and a P-tuned model that
trains, resumes and serves:

- It leaves the projections' biases trainable; LoRA as in the paper and in HF PEFT
  (`bias="none"`) trains the factors only. `attach` makes the factors the only
  trainable weights of those layers.
- A `.keras` file (or `save_weights`) holds each layer's merged kernel `W + AB` and
  no factors, and the layers come back without LoRA (keras-hub backbones rebuild
  from their own arguments), so a reloaded model can neither resume nor tell the
  frozen `W` from the update. The model's config records the LoRA layers (by
  path, rank and alpha), `from_config` enables LoRA on them again, and a
  `_LoraFactors` attribute of the model stores each layer's own `W` and factors;
  Keras loads a model's attributes after its layers, so it writes them over what
  the layers loaded.
- Serving wants the update merged into `W`: `merge_lora`.
"""

import keras
from keras import ops

from keras_space.api_export import keras_space_export

_FACTORS = ("lora_kernel_a", "lora_kernel_b")


def lora_layers(model):
    """The LoRA-enabled layers (Keras `EinsumDense` with `lora_enabled`) inside `model`."""
    return [layer for layer in model._flatten_layers(include_self=False)
            if getattr(layer, "lora_enabled", False)]


def check_no_lora(backbone, advice):
    """Refuse a backbone on which LoRA was already enabled (`advice`: what to do instead)."""
    found = lora_layers(backbone)
    if found:
        raise ValueError(
            f"`backbone` must not have LoRA enabled already (found on {len(found)} layers, rank "
            f"{found[0].lora_rank}): {advice}. Received: backbone with LoRA enabled"
        )


def is_factor(variable):
    """Whether `variable` is a LoRA factor (its name is Keras's)."""
    return variable.name in _FACTORS


class _LoraFactors(keras.layers.Layer):
    """Saves, and loads after the layers have, each LoRA layer's frozen kernel and factors.

    Not a layer of the model's graph (set past Keras's attribute tracking): only
    Keras's saving walks it, after the model's layers.
    """

    def __init__(self, layers):
        super().__init__(name="lora_factors")
        self._targets = lambda: layers  # not walked by saving: the layers save themselves

    def save_own_variables(self, store):
        for i, layer in enumerate(self._targets()):
            store[f"{i}_kernel"] = layer._kernel
            for factor in _FACTORS:
                store[f"{i}_{factor}"] = getattr(layer, factor)

    def load_own_variables(self, store):
        layers = self._targets()
        if len(store.keys()) != 3 * len(layers):
            raise ValueError(
                f"The file holds LoRA factors for {len(store.keys()) // 3} layers; this model "
                f"has {len(layers)} LoRA layers.")
        for i, layer in enumerate(layers):
            layer._kernel.assign(store[f"{i}_kernel"])
            for factor in _FACTORS:
                getattr(layer, factor).assign(store[f"{i}_{factor}"])


def attach(model):
    """Make the LoRA factors the only trainable weights of `model`'s LoRA layers (their
    kernels and biases frozen) and give the model the saveable that keeps them."""
    layers = lora_layers(model)
    for layer in layers:
        layer.trainable = True
        for variable in layer._trainable_variables:
            variable.trainable = is_factor(variable)
    if layers:  # past Keras's tracking: not a sublayer, no weights of its own
        object.__setattr__(model, "_lora_factors", _LoraFactors(layers))


def config_of(model):
    """The LoRA entry of `model`'s config (None without LoRA)."""
    layers = lora_layers(model)
    if not layers:
        return None
    return {"rank": layers[0].lora_rank, "alpha": layers[0].lora_alpha,
            "layers": [layer.path for layer in layers]}


def restore(model, config):
    """Enable LoRA again on the layers `config` (from `config_of`) names, then `attach`."""
    if config is None:
        return
    by_path = {layer.path: layer for layer in model._flatten_layers(include_self=False)}
    missing = [path for path in config["layers"] if path not in by_path]
    if missing:
        raise ValueError(f"The config names LoRA layers this model does not have: {missing}")
    for path in config["layers"]:
        by_path[path].enable_lora(config["rank"], lora_alpha=config["alpha"])
    attach(model)


def merged_kernel(layer):
    """`W + (alpha / rank) A B` in the kernel's own dtype, as the layer computes it."""
    update = (layer.lora_alpha / layer.lora_rank) * ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)
    return ops.cast(ops.add(layer._kernel, update), layer._kernel.dtype)


@keras_space_export("keras_space.models.merge_lora")
def merge_lora(model):
    """The serving form of a model with LoRA: each update merged into its frozen kernel.

    Returns a new model of the same class (from `model`'s config, every layer new,
    nothing shared) whose LoRA layers are plain again, with kernel
    `W + (alpha / rank) A B` computed as the LoRA layer computes it, so the outputs
    equal `model`'s to float rounding (bit for bit where the kernel's dtype is the
    compute dtype); every other weight is copied. `model` is left as it was and can
    keep training. Merge after `freeze_prompts` or before, in either order.

    Args:
        model: a `PTuningModel` built with `lora_rank` (or its `freeze_prompts` form).

    Returns:
        A model of `model`'s class without LoRA layers.

    Example:

    ```python
    import keras_hub, numpy as np
    from keras_space.models import merge_lora, p_tuning_model

    bert = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32)
    model = p_tuning_model(bert, num_classes=2, num_virtual_tokens=4, lora_rank=4)
    served = merge_lora(model)
    x = {"token_ids": np.array([[2, 5, 7, 3]]), "segment_ids": np.zeros((1, 4), "int32"),
         "padding_mask": np.ones((1, 4), "int32")}
    np.testing.assert_allclose(served.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model with LoRA layers. Received: model={model!r}")
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            "`model` has no LoRA layers to merge (built without `lora_rank`, or merged "
            f"already: merge_lora returns a model without them). Received: model={model.name}")
    config = dict(model.get_config())
    config.pop("lora", None)
    merged = type(model).from_config(config)
    kernels = {id(layer._kernel): layer for layer in layers}
    source = [v for v in model.weights if not is_factor(v)]
    for target, variable in zip(merged.weights, source, strict=True):  # the same layers, in order
        if tuple(target.shape) != tuple(variable.shape):
            raise AssertionError(f"merge_lora: {target.path} {target.shape} against "
                                 f"{variable.path} {variable.shape}")
        layer = kernels.get(id(variable))
        value = variable if layer is None else merged_kernel(layer)
        target.assign(ops.convert_to_numpy(value))  # a copy: JAX may donate the source's buffer
    return merged

