"""VonMisesFisher: a latent layer on the unit sphere (vMF-VAE).

Everything is `keras.ops` (sampling and the KL through `keras_space.ops.vmf`,
random draws from the layer's `SeedGenerator`): TensorFlow and JAX.
"""

import math

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import _dtype_safe as safe
from keras_space.ops import _stateless_random as rnd
from keras_space.ops import vmf
from keras_space.utils import validation

SAMPLERS = ("auto", "closed_form", "table", "wood")


@keras_space_export("keras_space.layers.VonMisesFisher")
class VonMisesFisher(keras.layers.Layer):
    """von Mises-Fisher latent: mean direction in, sample on the sphere out.

    kappa is one number (fixed, or learned with `learn_kappa=True`) or, with
    `kappa=None`, a second input: one kappa per example, e.g. from a softplus
    head of the encoder (`layer([mu, kappa])`, kappa of shape (batch,) or
    (batch, 1); in general the mean direction's shape without its last axis,
    optionally with a trailing 1). Each example then has its own KL and its
    sample carries the gradient in its own kappa.

    The input (any non-zero vector; it is normalised inside, after division
    by its largest entry so that huge and tiny vectors work; a zero vector is
    mapped to the first basis vector, a NaN/inf entry makes the output row
    NaN) is the mean direction mu. In training
    the layer outputs z ~ vMF(mu, kappa) on S^{d-1}, reparameterised through
    mu: z = w mu + sqrt(1 - w^2) nu, where w does not depend on mu and nu is a
    uniform unit vector orthogonal to mu (at d = 3, one uniform angle in an
    orthonormal basis around mu), so gradients reach mu through z. In
    inference it outputs mu (or a sample, with `sample_in_inference=True`).

    With the uniform prior on the sphere, KL(q || p) depends only on (d,
    kappa); it is added with `add_loss` in training (mean over the batch; 0 for
    an empty batch) and
    tracked by the metric `kl` (shown by `fit`; on TensorFlow only: Keras's JAX
    trainer runs a layer's `call` in a scope that holds no metric state, so
    there the layer has no metric and `kl_divergence()` gives the value). With
    fixed kappa it is a
    positive constant that cannot collapse to zero.

    Samplers of w:

    - "closed_form" (default for d = 3, fixed or learned kappa): the exact
      inverse CDF w = 1 + log(u + (1 - u) e^(-2 kappa)) / kappa, one uniform
      per sample, stable for kappa from 1e-3 to 1e5; its kappa gradient is
      exact by plain autodiff.
    - "table" (default for fixed kappa, d != 3): an inverse-CDF table of 4097
      quantiles of the angle arccos w, computed once at build time (33 KB,
      exact at the nodes, linear in between); no loop in the graph.
    - "wood" (default with `learn_kappa=True` or per-example kappa, d != 3):
      Wood's (1994) rejection sampler, vectorised inside a
      `keras.ops.while_loop`.

    All are correct for kappa from 1e-3 to 1e5 and d up to 4096 (tested
    against A_d(kappa) and the exact CDF).

    `learn_kappa=True` learns log kappa; with per-example kappa the gradient
    reaches each kappa_i (and the head that predicts it). The gradient through
    the samples is
    the implicit reparameterisation gradient dw/dkappa = -(dF/dkappa) / p(w)
    (Figurnov et al. 2018), computed by 96-point Gauss-Legendre quadrature of
    the CDF's kappa-derivative on the tail side of w; the KL term's gradient
    is exact. This is unbiased, unlike reparameterising through the accepted
    proposal of the rejection sampler alone.

    Args:
        kappa: concentration (> 0); the initial value when learned; `None`:
            one kappa per example, given as the second input.
        learn_kappa: learn kappa (one scalar) by gradient descent. Defaults to `False`.
        sampler: "auto", "closed_form" (d = 3 only), "table" (one fixed kappa
            only) or "wood". Defaults to `"auto"`: "closed_form" for d = 3,
            else "wood" with `learn_kappa=True` or per-example kappa, else
            "table".
        sample_in_inference: output samples also when `training=False`. Defaults to `False`.
        seed: int seed for the samples (None: random). Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (batch, d), d >= 2; with `kappa=None`, the list
            `[mean_direction, kappa]`, kappa of shape (batch,) or (batch, 1),
            positive and finite (otherwise a `ValueError` naming `kappa`; inside a
            compiled step TensorFlow's `InvalidArgumentError` or JAX's runtime
            error with that message).
        training: sample (True) or return the mean direction (False).

    Example:

    ```python
    import keras
    from keras_space.layers import VonMisesFisher

    inputs = keras.Input((64,))
    mu = keras.layers.Dense(16)(keras.layers.Dense(128, activation="relu")(inputs))
    z = VonMisesFisher(kappa=50.0, seed=0)(mu)   # KL added with add_loss
    outputs = keras.layers.Dense(64)(keras.layers.Dense(128, activation="relu")(z))
    vae = keras.Model(inputs, outputs)
    vae.compile("adam", "mse")

    # kappa per example, predicted by the encoder (S-VAE: softplus + 1)
    h = keras.layers.Dense(128, activation="relu")(inputs)
    kappa = keras.layers.Dense(1, activation="softplus")(h) + 1.0
    z = VonMisesFisher(kappa=None, seed=0)([keras.layers.Dense(16)(h), kappa])
    ```

    References:
        - Davidson et al., "Hyperspherical Variational Auto-Encoders",
          https://arxiv.org/abs/1804.00891
        - Xu & Durrett, "Spherical Latent Spaces for Stable Variational
          Autoencoders", https://arxiv.org/abs/1808.10805
        - Wood, "Simulation of the von Mises Fisher distribution",
          https://doi.org/10.1080/03610919408813161
        - Figurnov et al., "Implicit Reparameterization Gradients",
          https://arxiv.org/abs/1805.08498
    """

    def __init__(
        self,
        kappa=None,
        learn_kappa=False,
        sampler="auto",
        sample_in_inference=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(autocast=False, **kwargs)
        self.per_example = kappa is None
        kappa = None if self.per_example else validation.positive_float("kappa", kappa)
        validation.choice("sampler", sampler, SAMPLERS)
        learn_kappa = validation.strict_bool("learn_kappa", learn_kappa)
        if learn_kappa and self.per_example:
            raise ValueError(
                "learn_kappa=True learns one kappa; with kappa=None each example's kappa is "
                "an input (learned by the layer that predicts it). Received: kappa=None, "
                "learn_kappa=True"
            )
        if sampler == "table" and (learn_kappa or self.per_example):
            raise ValueError(
                "The 'table' sampler is built for one fixed kappa; use sampler='wood' "
                f"(or 'auto') with learn_kappa=True or kappa=None. Received: sampler={sampler!r}, "
                f"kappa={kappa}, learn_kappa={learn_kappa}"
            )
        self.kappa = kappa
        self.learn_kappa = bool(learn_kappa)
        self.sampler = sampler
        self.sample_in_inference = validation.strict_bool("sample_in_inference", sample_in_inference)
        self.seed = validation.non_negative_int("seed", seed, allow_none=True)
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Keras's JAX trainer cannot update a metric owned by a layer (its stateless
        # call maps weights and seeds only): no metric there rather than a false 0.
        self.kl_metric = keras.metrics.Mean(name="kl") if keras.backend.backend() != "jax" else None

    def _resolved_sampler(self):
        if self.sampler != "auto":
            return self.sampler
        if self.dim == 3:
            return "closed_form"
        return "wood" if self.learn_kappa or self.per_example else "table"

    def _split(self, inputs):
        """(mean direction, kappa input or None) from the call's inputs (or their shapes)."""
        pair = isinstance(inputs, (list, tuple)) and len(inputs) == 2 and not isinstance(
            inputs[0], (int, type(None)))
        if pair != self.per_example:
            wanted = ("the list [mean_direction, kappa]" if self.per_example
                      else "the mean direction alone (kappa is the layer's)")
            raise ValueError(
                f"VonMisesFisher(kappa={self.kappa}) takes {wanted}. Received: "
                + ("one input" if self.per_example
                   else "a list of 2 inputs; pass kappa=None for a kappa per example")
            )
        return tuple(inputs) if pair else (inputs, None)

    def build(self, input_shape):
        mu_shape, kappa_shape = self._split(input_shape)
        mu_shape = tuple(mu_shape)
        d = mu_shape[-1] if mu_shape else None
        if d is None or d < 2:
            raise ValueError(
                f"VonMisesFisher needs a known last dimension d >= 2. Received: input_shape={input_shape}"
            )
        self.dim = int(d)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: self.dim})
        if self.per_example:
            self._check_kappa_shape(kappa_shape, mu_shape)
            self.input_spec = [self.input_spec, None]  # kappa: checked in call, named
        if self.sampler == "closed_form" and self.dim != 3:
            raise ValueError(
                "sampler='closed_form' is the inverse CDF of d = 3 only; use 'auto', "
                f"'table' or 'wood'. Received: sampler='closed_form' with input_shape={input_shape}"
            )
        if self.learn_kappa:
            self.log_kappa = self.add_weight(
                name="log_kappa",
                shape=(),
                initializer=keras.initializers.Constant(math.log(self.kappa)),
                trainable=True,
                dtype="float32",
            )
        if self._resolved_sampler() == "table":
            table = vmf._inverse_cdf_table(self.dim, self.kappa)
            self.inverse_cdf = self.add_weight(
                name="inverse_cdf",
                shape=table.shape,
                initializer=keras.initializers.Constant(table),
                trainable=False,
                dtype="float64",
                autocast=False,  # float64 quantiles on every call path (never cast to float16)
            )

    @staticmethod
    def _check_kappa_shape(kappa_shape, mu_shape):
        kappa_shape, batch = tuple(kappa_shape), tuple(mu_shape)[:-1]
        head, tail = kappa_shape[:len(batch)], kappa_shape[len(batch):]
        fits = len(head) == len(batch) and tail in ((), (1,), (None,)) and all(
            a is None or b is None or a == b for a, b in zip(head, batch, strict=True))
        if not fits:
            raise ValueError(
                "VonMisesFisher's kappa input has one value per example: the mean direction's "
                f"shape without its last axis, {batch}, or that with a trailing 1. Received: "
                f"kappa with shape {kappa_shape} for a mean direction of shape {tuple(mu_shape)}"
            )

    def current_kappa(self, kappa=None):
        """kappa now, as a float64 tensor (float32 on JAX without x64 mode): the layer's,
        or for a layer with `kappa=None` the given per-example `kappa`, checked positive
        and finite (a `ValueError` naming `kappa` otherwise), same shape."""
        if self.per_example:
            if kappa is None:
                raise ValueError("VonMisesFisher(kappa=None) has no kappa of its own: pass the "
                                 "per-example kappa. Received: kappa=None")
            return vmf._checked_kappa(kappa)
        if self.learn_kappa:
            return ops.exp(ops.cast(self.log_kappa, vmf._wide_dtype()))
        return vmf._as_f64(self.kappa)

    def kl_divergence(self, kappa=None):
        """KL(vMF(mu, kappa) || uniform on S^{d-1}), float64: a scalar, or for a layer
        with `kappa=None` one per entry of the given `kappa`."""
        return vmf._kl_to_uniform(self.dim, self.current_kappa(kappa))

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
        """A vMF sample around unit vectors `mu` (float32), with the layer's kappa or
        (`kappa=None` layers) the per-example `kappa` of shape `mu.shape[:-1]`.

        w and 1 - w are drawn in float64 (one scalar per sample; 1 - w is
        ~1/kappa small for large kappa), the sphere part in float32 (d = 3:
        one uniform angle in an orthonormal basis around mu; d = 2 and 4:
        float64).
        """
        s_w, s_noise = rnd.split(rnd.seed_tensor(self.seed_generator), 2)
        shape = ops.shape(mu)[:-1]
        sampler = self._resolved_sampler()
        w, one_minus_w = vmf._sample_w(
            self.dim,
            self.current_kappa(kappa),
            shape,
            s_w,
            sampler=sampler,
            table=self.inverse_cdf if sampler == "table" else None,
            reparameterize_kappa=self.learn_kappa or self.per_example,
        )
        # d = 2, 4: noise nearly along mu is likely enough (P(angle < s) ~ s^(d-1)) that
        # float32 would leave |z| - 1 ~ 1e-5 in big batches; float64 is free there.
        # d = 3 turns one uniform angle around mu instead, exact in float32.
        work = vmf._wide_dtype() if self.dim in (2, 4) else "float32"
        mu = ops.cast(mu, work)
        if work != "float32":  # and mu unit to float64 precision, or the projection is off as much
            mu = mu / safe.norm(mu, axis=-1, keepdims=True)
        w, one_minus_w = ops.cast(w, work), ops.cast(one_minus_w, work)
        if self.dim == 3:
            angle = rnd.uniform(shape, s_noise, "float32", maxval=2.0 * math.pi)
            z = vmf._sample_on_sphere_3d(mu, w, one_minus_w, angle)
        else:
            noise = rnd.normal(ops.shape(mu), s_noise, work)
            z = vmf._sample_on_sphere(mu, w, one_minus_w, noise)
        return ops.cast(z, "float32")

    def call(self, inputs, training=None):
        inputs, kappa = self._split(inputs)
        mu = self.mean_direction(inputs)
        if self.per_example:
            self._check_kappa_shape(kappa.shape, inputs.shape)
            if len(kappa.shape) == len(inputs.shape):  # (batch, 1) -> (batch,)
                kappa = ops.squeeze(kappa, -1)
            kappa = self.current_kappa(kappa)  # checked here: in inference too
        if training:
            kl = ops.cast(self.kl_divergence(kappa), "float32")
            if self.per_example:  # the batch mean; 0 for an empty batch, as Keras's losses
                kl = ops.sum(kl) / ops.maximum(ops.cast(ops.size(kl), "float32"), 1.0)
            self.add_loss(kl)
            if self.kl_metric is not None:
                self.kl_metric.update_state(kl)
        out = self.sample(mu, kappa) if training or self.sample_in_inference else mu
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(self._split(input_shape)[0])

    def get_config(self):
        return {
            **super().get_config(),
            "kappa": self.kappa,
            "learn_kappa": self.learn_kappa,
            "sampler": self.sampler,
            "sample_in_inference": self.sample_in_inference,
            "seed": self.seed,
        }
