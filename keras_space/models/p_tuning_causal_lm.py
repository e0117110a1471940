"""PTuningCausalLM: GPT-2 with trainable virtual tokens that generates text."""

import contextlib
import weakref

import keras
from keras import ops

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.models import _lora as lora
from keras_space.models.p_tuning import (
    _prompt_encoders,
    _prompted_states,
    _RealPositions,
)
from keras_space.utils import validation

# model -> {(id(sampler), stop ids): (sampler, its compiled generate function),
#           ("name", sampler name): the sampler object that name stands for}
_GENERATE_FUNCTIONS = weakref.WeakKeyDictionary()


@keras_space_export("keras_space.models.PTuningCausalLM")
class PTuningCausalLM(keras.Model):
    """A frozen keras-hub GPT-2 behind trainable virtual tokens, as a causal language model.

    The virtual tokens are a prefix, as in `p_tuning_model` (`depth="shallow"`: they
    enter with the token embeddings; `"deep"`: each Transformer layer also gets its
    own, P-tuning v2). Called on `{"token_ids", "padding_mask"}` (padding on the right
    or the left) it returns the next-token logits at every text position, (batch, seq,
    vocabulary): train it as keras-hub's `GPT2CausalLM` (`y` the ids shifted by one,
    `sample_weight` the shifted mask); only the prompt trains.

    `generate()` continues texts with a key/value cache: a prefix sees only itself, so
    the prompt's keys and values are the same for every text; they are computed once
    per call and written into the first `num_virtual_tokens` slots of the cache, and
    each new token then costs what it costs an unprompted GPT-2.

    Args:
        backbone: a `keras_hub.models.GPT2Backbone` (frozen here).
        num_virtual_tokens, encoder, encoder_hidden_dim, dropout, anchor_token_ids,
            depth, seed: as in `p_tuning_model`. `num_virtual_tokens` defaults to `16`,
            `encoder` to `"mlp"`, `depth` to `"shallow"`.

    Example:

    ```python
    import keras, keras_hub, numpy as np
    from keras_space.models import PTuningCausalLM

    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    lm = PTuningCausalLM(gpt2, num_virtual_tokens=4, depth="deep")
    x = {"token_ids": np.array([[5, 6, 7, 0], [5, 6, 0, 0]]),
         "padding_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0]])}
    out = lm.generate(x, max_length=8)          # greedy; the prompt's cache computed once
    out["token_ids"].shape                      # (2, 8): the texts, then generated ids
    ```
    """

    def __init__(self, backbone, num_virtual_tokens=16, encoder="mlp", encoder_hidden_dim=None,
                 dropout=0.0, anchor_token_ids=None, depth="shallow", seed=None, **kwargs):
        super().__init__(**kwargs)
        _backbones.check_embedding_stack(backbone)
        if not _backbones.is_causal(backbone):
            raise ValueError(
                "`backbone` must be a causal language model (keras_hub.models.GPT2Backbone) to "
                "generate text; for an encoder use p_tuning_model(..., head='masked_lm'). "
                f"Received: backbone={type(backbone).__name__}")
        lora.check_no_lora(backbone, "PTuningCausalLM trains its prompts only (prompts beside LoRA: "
                           "p_tuning_model(..., lora_rank=r))")
        self.backbone = backbone
        self.options = dict(num_virtual_tokens=num_virtual_tokens, encoder=encoder,
                            encoder_hidden_dim=encoder_hidden_dim, dropout=dropout)
        if anchor_token_ids is not None:  # plain ints in the config (numpy arrays too)
            anchor_token_ids = validation.int_sequence("anchor_token_ids", anchor_token_ids, minimum=0)
        self.anchor_token_ids = anchor_token_ids
        self.seed = seed
        self.prompts = _prompt_encoders(backbone, depth, anchor_token_ids, seed,
                                        placeholder_ids=None, **self.options)  # (checks depth)
        self.depth = depth
        for prompt in self.prompts:  # generate() may come before any call
            if not prompt.built:
                prompt.build((None, None, prompt.embedding_dim))
        self.num_virtual_tokens = self.prompts[0].num_virtual_tokens
        self.positions = _RealPositions(name="real_positions")
        backbone.trainable = False

    # ------------------------------------------------------------ forward

    def call(self, inputs):
        backbone = self.backbone
        token_ids = validation.all_token_ids("token_ids", inputs["token_ids"],
                                             _backbones.vocabulary_size(backbone))
        x = _prompted_states(backbone, self.prompts, token_ids, None, inputs["padding_mask"],
                             self.depth, self.positions)
        return _backbones.causal_lm_logits(backbone, x[:, self.num_virtual_tokens:])

    # --------------------------------------------------------- generation
    def _cached_step(self, token_ids, cache, index):
        """Text positions index, index + 1, ... through the cache: (logits, states, cache)."""
        backbone, n = self.backbone, self.num_virtual_tokens
        length = ops.shape(token_ids)[1]
        positions = ops.broadcast_to(n + index + ops.arange(length, dtype="int32")[None],
                                     ops.shape(token_ids))
        x = _backbones.finish_embeddings(backbone, _backbones.embed_tokens(backbone, token_ids),
                                         None, positions)
        hidden, cache = _backbones.run_decoder_with_cache(backbone, x, cache, n + index)
        return _backbones.causal_lm_logits(backbone, hidden), hidden, cache

    def _prompt_cache(self, batch_size, length):
        """A cache of `length` slots, the prompt's keys and values in the first ones."""
        backbone, n = self.backbone, self.num_virtual_tokens

        def prompt(i):
            table = ops.cast(self.prompts[i].prompt_embeddings(training=False), backbone.compute_dtype)
            return ops.broadcast_to(table[None], (batch_size, n, table.shape[-1]))

        cache = _backbones.empty_cache(backbone, batch_size, length, backbone.compute_dtype)
        positions = ops.broadcast_to(ops.arange(n, dtype="int32")[None], (batch_size, n))
        x = _backbones.finish_embeddings(backbone, prompt(0), None, positions)
        deep = self.depth == "deep"  # each further layer reads its own prompt there
        _, cache = _backbones.run_decoder_with_cache(
            backbone, x, cache, 0, before_layer=(lambda i, s: s if i == 0 else prompt(i)) if deep else None)
        return cache

    def generate(self, inputs, max_length=None, sampler="greedy", stop_token_ids=None):
        """Continue each text to `max_length` tokens.

        Args:
            inputs: `{"token_ids", "padding_mask"}` (numpy or tensors), each row's text
                first and padding after it (keras-hub's GPT-2 preprocessors pad so),
                at least one real token per row.
            max_length: length of the returned rows (text and generated tokens);
                defaults to the inputs' length. The virtual tokens take
                `num_virtual_tokens` of the backbone's `max_sequence_length` positions.
            sampler: a keras-hub sampler or its name (`"greedy"`, `"top_k"`, ...;
                `keras_hub.samplers.TopKSampler(k=5, seed=0)` for seeded sampling).
            stop_token_ids: optional ids that end a row (the padding mask ends there).

        Returns:
            `{"token_ids", "padding_mask"}` of shape (batch, max_length): the texts
            as given, the generated tokens after them.
        """
        import keras_hub
        import numpy as np

        token_ids = np.asarray(ops.convert_to_numpy(inputs["token_ids"])).astype("int32")
        mask = np.asarray(ops.convert_to_numpy(inputs["padding_mask"])).astype(bool)
        if token_ids.ndim != 2 or mask.shape != token_ids.shape:
            raise ValueError(
                "`inputs` must hold (batch, sequence) `token_ids` and a `padding_mask` of the same "
                f"shape. Received: token_ids {token_ids.shape}, padding_mask {mask.shape}")
        lengths = mask.sum(1)
        if token_ids.shape[0] == 0 or not np.all(lengths > 0) or not np.all(
                mask == (np.arange(mask.shape[1]) < lengths[:, None])):
            raise ValueError(
                "`inputs` must hold rows of at least one real token, padded on the right (text "
                f"first). Received: padding_mask={mask.astype(int).tolist()}")
        max_length = validation.positive_int("max_length", max_length, allow_none=True)
        max_length = token_ids.shape[1] if max_length is None else max_length
        limit = _backbones.max_sequence_length(self.backbone)
        if max_length < token_ids.shape[1] or self.num_virtual_tokens + max_length > limit:
            raise ValueError(
                f"`max_length` must lie between the inputs' length {token_ids.shape[1]} and "
                f"{limit - self.num_virtual_tokens} (the backbone's max_sequence_length {limit} less "
                f"the {self.num_virtual_tokens} virtual tokens). Received: max_length={max_length}")
        pad = max_length - token_ids.shape[1]
        token_ids = np.pad(token_ids, ((0, 0), (0, pad)))
        mask = np.pad(mask, ((0, 0), (0, pad)))
        validation.all_token_ids("token_ids", token_ids, _backbones.vocabulary_size(self.backbone))
        if isinstance(sampler, str):  # one sampler object per name and model: compiled once
            named = _GENERATE_FUNCTIONS.setdefault(self, {})
            sampler = named.setdefault(("name", sampler), keras_hub.samplers.get(sampler))
        else:
            sampler = keras_hub.samplers.get(sampler)
        if stop_token_ids is not None:
            stop_token_ids = tuple(validation.int_sequence("stop_token_ids", stop_token_ids, minimum=0))

        with self._sampling_mode():
            generated = self._generate(token_ids, mask, sampler, stop_token_ids)
        out_mask = np.ones_like(mask)
        if stop_token_ids is not None:  # a row ends at its first generated stop token
            stops = np.isin(generated, stop_token_ids) & ~mask
            out_mask = np.cumsum(stops, axis=1) - stops == 0
        return {"token_ids": generated, "padding_mask": out_mask}

    def _sampling_mode(self):
        """keras-hub's samplers and cached attention mix int32 indices with Python ints,
        which JAX's x64 mode makes int64 (a TypeError): on JAX in x64 mode, sampling runs
        in JAX's default 32-bit mode, which a float64 model cannot."""
        if keras.backend.backend() != "jax":
            return contextlib.nullcontext()
        import jax

        if not jax.config.jax_enable_x64:
            return contextlib.nullcontext()
        if keras.backend.standardize_dtype(self.backbone.compute_dtype) == "float64":
            raise ValueError(
                "generate() runs keras-hub's samplers, which on JAX need its default 32-bit mode: "
                "a float64 model cannot generate on JAX. Received: a model of dtype float64 "
                "(JAX_ENABLE_X64 on)")
        return jax.enable_x64(False)

    def _generate(self, token_ids, mask, sampler, stop_token_ids):
        """The generated ids (numpy), by a function compiled once per sampler and stop ids
        (`tf.function`, or `jax.jit` over the variables' values, as keras-hub compiles its
        own `generate`)."""
        import numpy as np

        functions = _GENERATE_FUNCTIONS.setdefault(self, {})
        key = (id(sampler), stop_token_ids)
        if key not in functions:  # (the sampler is kept with its function: ids stay unique)
            functions[key] = (sampler, self._compiled_generate(sampler, stop_token_ids))
        generated = functions[key][1](ops.convert_to_tensor(token_ids), ops.convert_to_tensor(mask))
        return np.asarray(ops.convert_to_numpy(generated))

    def _generate_step(self, token_ids, mask, sampler, stop_token_ids):
        batch, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        cache = self._prompt_cache(batch, self.num_virtual_tokens + length)
        _, hidden, cache = self._cached_step(token_ids, cache, 0)

        def next(prompt, cache, index):  # the state of token index - 1 predicts token index
            logits, hidden, cache = self._cached_step(
                ops.slice(prompt, [0, index - 1], [batch, 1]), cache, index - 1)
            return ops.squeeze(logits, axis=1), ops.squeeze(hidden, axis=1), cache

        first = ops.min(ops.sum(ops.cast(mask, "int32"), axis=1))  # the first slot to fill
        return sampler(next=next, prompt=token_ids, cache=cache, index=first, mask=mask,
                       stop_token_ids=stop_token_ids, hidden_states=hidden, model=self)

    def _compiled_generate(self, sampler, stop_token_ids):
        def step(token_ids, mask):
            return self._generate_step(token_ids, mask, sampler, stop_token_ids)

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.function(step, reduce_retracing=True)
        import itertools

        import jax

        def stateless(token_ids, mask, state):
            sampler_values, trainable, non_trainable = state
            mapping = itertools.chain(zip(sampler.variables, sampler_values, strict=True),
                                      zip(self.trainable_variables, trainable, strict=True),
                                      zip(self.non_trainable_variables, non_trainable, strict=True))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                generated = step(token_ids, mask)
            return generated, [scope.get_current_value(v) for v in sampler.variables]

        compiled = jax.jit(stateless)

        def run(token_ids, mask):  # the sampler's seed state advances, as eagerly
            state = tuple([v.value for v in variables] for variables in (
                sampler.variables, self.trainable_variables, self.non_trainable_variables))
            generated, sampler_values = compiled(token_ids, mask, state)
            for variable, value in zip(sampler.variables, sampler_values, strict=True):
                variable.assign(value)
            return generated

        return run

    def _frozen_prompts(self):
        """`freeze_prompts(self)`: the same model with every prompt a plain, frozen table."""
        options = dict(self.options, encoder="none", encoder_hidden_dim=None, dropout=0.0)
        frozen = type(self)(self.backbone, depth=self.depth, **options)
        for mine, theirs in zip(frozen.prompts, self.prompts, strict=True):
            mine.prompt_table.assign(ops.convert_to_numpy(theirs.prompt_embeddings(training=False)))
            mine.trainable = False
        return frozen

    # ------------------------------------------------------------- saving
    def get_config(self):
        config = super().get_config()
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      anchor_token_ids=self.anchor_token_ids, depth=self.depth, seed=self.seed,
                      **self.options)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
