"""The base of the latent layers on the unit sphere (VonMisesFisher, PowerSpherical).

What they share: kappa fixed, learned (log kappa) or per example (a second input);
the mean direction from any vector; the KL to the uniform sphere added with
`add_loss` in training (and the `kl` metric, TensorFlow only); a sample in training
(or with `sample_in_inference=True`), the mean direction otherwise; padding of
(batch, sequence, d) inputs (`padding_mask` or a Keras mask) never read. A subclass gives
`_kl(kappa)` (wide dtype, kappa's shape) and `_draw(mu, kappa, seed)`.
"""

import math

import keras
from keras import ops

from keras_space.ops import _stateless_random as rnd
from keras_space.ops import vmf
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


class SphericalLatent(keras.layers.Layer):
    """A latent layer on the unit sphere (the module docstring says what is shared);
    the public ones are `VonMisesFisher` and `PowerSpherical`."""

    def __init__(self, kappa=None, learn_kappa=False, sample_in_inference=False, seed=None,
                 **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.supports_masking = True
        self.per_example = kappa is None
        kappa = None if self.per_example else validation.positive_float("kappa", kappa)
        learn_kappa = validation.strict_bool("learn_kappa", learn_kappa)
        if learn_kappa and self.per_example:
            raise ValueError(
                "learn_kappa=True learns one kappa; with kappa=None each example's kappa is "
                "an input (learned by the layer that predicts it). Received: kappa=None, "
                "learn_kappa=True"
            )
        self.kappa = kappa
        self.learn_kappa = bool(learn_kappa)
        self.sample_in_inference = validation.strict_bool("sample_in_inference", sample_in_inference)
        self.seed = validation.non_negative_int("seed", seed, allow_none=True)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Keras's JAX trainer cannot update a metric owned by a layer (its stateless
        # call maps weights and seeds only): no metric there rather than a false 0.
        self.kl_metric = keras.metrics.Mean(name="kl") if keras.backend.backend() != "jax" else None

    def _split(self, inputs):
        """(mean direction, kappa input or None) from the call's inputs (or their shapes)."""
        pair = isinstance(inputs, (list, tuple)) and len(inputs) == 2 and not isinstance(
            inputs[0], (int, type(None)))
        if pair != self.per_example:
            wanted = ("the list [mean_direction, kappa]" if self.per_example
                      else "the mean direction alone (kappa is the layer's)")
            raise ValueError(
                f"{type(self).__name__}(kappa={self.kappa}) takes {wanted}. Received: "
                + ("one input" if self.per_example
                   else "a list of 2 inputs; pass kappa=None for a kappa per example")
            )
        return tuple(inputs) if pair else (inputs, None)

    def build(self, input_shape):
        mu_shape, kappa_shape = self._split(input_shape)
        mu_shape = tuple(mu_shape)
        d = mu_shape[-1] if mu_shape else None
        if d is None or d < 2:
            raise ValueError(f"{type(self).__name__} needs a known last dimension d >= 2. "
                             f"Received: input_shape={input_shape}")
        self.dim = int(d)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: self.dim})
        if self.per_example:
            self._check_kappa_shape(kappa_shape, mu_shape)
            self.input_spec = [self.input_spec, None]  # kappa: checked in call, named
        if self.learn_kappa:
            self.log_kappa = self.add_weight(
                name="log_kappa",
                shape=(),
                initializer=keras.initializers.Constant(math.log(self.kappa)),
                trainable=True,
                dtype="float32",
            )

    def _check_kappa_shape(self, kappa_shape, mu_shape):
        kappa_shape, batch = tuple(kappa_shape), tuple(mu_shape)[:-1]
        head, tail = kappa_shape[:len(batch)], kappa_shape[len(batch):]
        fits = len(head) == len(batch) and tail in ((), (1,), (None,)) and all(
            a is None or b is None or a == b for a, b in zip(head, batch, strict=True))
        if not fits:
            raise ValueError(
                f"{type(self).__name__}'s kappa input has one value per example: the mean "
                f"direction's shape without its last axis, {batch}, or that with a trailing 1. "
                f"Received: kappa with shape {kappa_shape} for a mean direction of shape "
                f"{tuple(mu_shape)}"
            )

    def current_kappa(self, kappa=None):
        """kappa now, as a float64 tensor (float32 on JAX without x64 mode): the layer's,
        or for a layer with `kappa=None` the given per-example `kappa`, checked positive
        and finite (a `ValueError` naming `kappa` otherwise), same shape."""
        if self.per_example:
            if kappa is None:
                raise ValueError(f"{type(self).__name__}(kappa=None) has no kappa of its own: "
                                 "pass the per-example kappa. Received: kappa=None")
            return vmf._checked_kappa(kappa)
        if self.learn_kappa:
            return ops.exp(ops.cast(self.log_kappa, vmf._wide_dtype()))
        return vmf._as_f64(self.kappa)

    def kl_divergence(self, kappa=None):
        """KL(q(mu, kappa) || uniform on S^{d-1}), float64: a scalar, or for a layer
        with `kappa=None` one per entry of the given `kappa`."""
        return self._kl(self.current_kappa(kappa))

    def mean_direction(self, inputs):
        """Unit vectors along the inputs (float32).

        Divided by the largest |entry| first, so 1e30-sized and 1e-30-sized
        vectors (float64 inputs are normalised in float64) give their unit
        vector; exact zero vectors map to e_1; a NaN or inf entry makes the
        row NaN (a non-finite input never becomes a valid direction). When
        every row's squared norm is a normal finite number (the usual batch)
        the rescaling is skipped: x / |x| in three passes instead of ten.

        Gradients are finite for every finite row: zero at an exact zero row
        (its direction e_1 is a constant), (I - u u^T) / |x| elsewhere, however
        small |x| is; neither route's unselected value leaks a NaN into them.
        """
        return ops.cast(vmf._unit_rows(inputs), "float32")

    def sample(self, mu, kappa=None):
        """A sample around unit vectors `mu` (float32), with the layer's kappa or
        (`kappa=None` layers) the per-example `kappa` of shape `mu.shape[:-1]`."""
        return ops.cast(self._draw(mu, self.current_kappa(kappa),
                                   rnd.seed_tensor(self.seed_generator)), "float32")

    def call(self, inputs, training=None, padding_mask=None, mask=None):
        inputs, kappa = self._split(inputs)
        if self.per_example:
            self._check_kappa_shape(kappa.shape, inputs.shape)
            if len(kappa.shape) == len(inputs.shape):  # (batch, 1) -> (batch,)
                kappa = ops.squeeze(kappa, -1)
        real = self._real_positions(inputs, mask, padding_mask)
        if real is not None:  # padded positions: garbage out before anything reads it
            inputs = ops.where(ops.expand_dims(real, -1), inputs, ops.ones_like(inputs))
            if self.per_example:
                kappa = ops.where(real, kappa, ops.ones_like(kappa))
        mu = self.mean_direction(inputs)
        if self.per_example:
            kappa = self.current_kappa(kappa)  # checked here: in inference too
        if training:
            kl = ops.cast(self.kl_divergence(kappa), "float32")
            if self.per_example:  # the mean over real positions; 0 if there are none
                weight = ops.ones_like(kl) if real is None else ops.cast(real, "float32")
                kl = ops.sum(kl * weight) / ops.maximum(ops.sum(weight), 1.0)
            self.add_loss(kl)
            if self.kl_metric is not None:
                self.kl_metric.update_state(kl)
        out = self.sample(mu, kappa) if training or self.sample_in_inference else mu
        if real is not None:
            out = ops.where(ops.expand_dims(real, -1), out, ops.zeros_like(out))
        return ops.cast(out, self.compute_dtype)

    @staticmethod
    def _real_positions(inputs, mask, padding_mask):
        """The (batch, sequence) mask of a (batch, sequence, d) input (`padding_mask`
        wins over a Keras mask), None without one. Other ranks have no sequence: a Keras
        mask is not read there, a `padding_mask` is refused."""
        if len(inputs.shape) != 3:
            if padding_mask is not None:
                raise ValueError("`padding_mask` is for (batch, sequence, d) inputs. Received: "
                                 f"inputs of shape {tuple(inputs.shape)}")
            return None
        if padding_mask is None and mask is None:
            return None
        return resolve_padding_mask(mask, padding_mask, inputs)

    def compute_mask(self, inputs, mask=None, padding_mask=None):
        if padding_mask is not None:
            return padding_mask
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(self._split(inputs_shape)[0])

    def get_config(self):
        return {
            **super().get_config(),
            "kappa": self.kappa,
            "learn_kappa": self.learn_kappa,
            "sample_in_inference": self.sample_in_inference,
            "seed": self.seed,
        }
