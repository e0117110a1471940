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
    kappa); it is added with `add_loss` in training (mean over the batch) and
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
    - "table" (default for fixed kappa): an inverse-CDF table of 4097
      quantiles of the angle arccos w, computed once at build time (33 KB,
      exact at the nodes, linear in between); no loop in the graph.
    - "wood" (default with `learn_kappa=True`): Wood's (1994) rejection
      sampler, vectorised inside a `keras.ops.while_loop`.

    All are correct for kappa from 1e-3 to 1e5 and d up to 4096 (tested
    against A_d(kappa) and the exact CDF).

    `learn_kappa=True` learns log kappa. Its gradient through the samples is
    the implicit reparameterisation gradient dw/dkappa = -(dF/dkappa) / p(w)
    (Figurnov et al. 2018), computed by 96-point Gauss-Legendre quadrature of
    the CDF's kappa-derivative on the tail side of w; the KL term's gradient
    is exact. This is unbiased, unlike reparameterising through the accepted
    proposal of the rejection sampler alone.

    Args:
        kappa: concentration (> 0); the initial value when learned.
        learn_kappa: learn kappa (one scalar) by gradient descent. Defaults to `False`.
        sampler: "auto", "closed_form" (d = 3 only), "table" (fixed kappa only)
            or "wood". Defaults to `"auto"`: "closed_form" for d = 3, else
            "wood" with `learn_kappa=True`, else "table".
        sample_in_inference: output samples also when `training=False`. Defaults to `False`.
        seed: int seed for the samples (None: random). Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (batch, d), d >= 2.
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
        kappa,
        learn_kappa=False,
        sampler="auto",
        sample_in_inference=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(autocast=False, **kwargs)
        kappa = validation.positive_float("kappa", kappa)
        validation.choice("sampler", sampler, SAMPLERS)
        learn_kappa = validation.strict_bool("learn_kappa", learn_kappa)
        if sampler == "table" and learn_kappa:
            raise ValueError(
                "The 'table' sampler is built for one fixed kappa; use sampler='wood' "
                f"(or 'auto') with learn_kappa=True. Received: sampler={sampler!r}"
            )
        self.kappa = float(kappa)
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
        return "wood" if self.learn_kappa else "table"

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None or d < 2:
            raise ValueError(
                f"VonMisesFisher needs a known last dimension d >= 2. Received: input_shape={input_shape}"
            )
        self.dim = int(d)
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: self.dim})
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

    def current_kappa(self):
        """kappa now, as a float64 tensor (float32 on JAX without x64 mode)."""
        if self.learn_kappa:
            return ops.exp(ops.cast(self.log_kappa, vmf._wide_dtype()))
        return vmf._as_f64(self.kappa)

    def kl_divergence(self):
        """KL(vMF(mu, kappa) || uniform on S^{d-1}), float64 scalar."""
        return vmf.vmf_kl_to_uniform(self.dim, self.current_kappa())

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

    def sample(self, mu):
        """A vMF sample around unit vectors `mu` (float32).

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
            self.current_kappa(),
            shape,
            s_w,
            sampler=sampler,
            table=self.inverse_cdf if sampler == "table" else None,
            reparameterize_kappa=self.learn_kappa,
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
        mu = self.mean_direction(inputs)
        if training:
            kl = ops.cast(self.kl_divergence(), "float32")
            self.add_loss(kl)
            if self.kl_metric is not None:
                self.kl_metric.update_state(kl)
        out = self.sample(mu) if training or self.sample_in_inference else mu
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kappa": self.kappa,
            "learn_kappa": self.learn_kappa,
            "sampler": self.sampler,
            "sample_in_inference": self.sample_in_inference,
            "seed": self.seed,
        }
