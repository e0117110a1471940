"""VonMisesFisher: a latent layer on the unit sphere (vMF-VAE).

Everything is `keras.ops` (sampling and the KL through `keras_space.ops.vmf`,
random draws from the layer's `SeedGenerator`): TensorFlow and JAX.
"""

import math

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._spherical_latent import SphericalLatent
from keras_space.ops import _dtype_safe as safe
from keras_space.ops import _stateless_random as rnd
from keras_space.ops import vmf
from keras_space.utils import validation

SAMPLERS = ("auto", "closed_form", "table", "wood")


@keras_space_export("keras_space.layers.VonMisesFisher")
class VonMisesFisher(SphericalLatent):
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
        padding_mask: for (batch, sequence, d) inputs, a (batch, sequence) boolean or
            0/1 mask, True = real (a Keras mask arriving with the inputs works too; the
            argument wins). Padded positions are not read (their mean direction and
            kappa may hold anything, NaN included), output zeros, and are left out of
            the per-example KL's mean; the output carries the mask on.

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
        super().__init__(kappa=kappa, learn_kappa=learn_kappa,
                         sample_in_inference=sample_in_inference, seed=seed, **kwargs)
        validation.choice("sampler", sampler, SAMPLERS)
        if sampler == "table" and (self.learn_kappa or self.per_example):
            raise ValueError(
                "The 'table' sampler is built for one fixed kappa; use sampler='wood' "
                f"(or 'auto') with learn_kappa=True or kappa=None. Received: sampler={sampler!r}, "
                f"kappa={self.kappa}, learn_kappa={self.learn_kappa}"
            )
        self.sampler = sampler

    def _resolved_sampler(self):
        if self.sampler != "auto":
            return self.sampler
        if self.dim == 3:
            return "closed_form"
        return "wood" if self.learn_kappa or self.per_example else "table"

    def build(self, input_shape):
        super().build(input_shape)
        if self.sampler == "closed_form" and self.dim != 3:
            raise ValueError(
                "sampler='closed_form' is the inverse CDF of d = 3 only; use 'auto', "
                f"'table' or 'wood'. Received: sampler='closed_form' with input_shape={input_shape}"
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

    def _kl(self, kappa):
        return vmf._kl_to_uniform(self.dim, kappa)

    def _draw(self, mu, kappa, seed):
        """w and 1 - w are drawn in float64 (one scalar per sample; 1 - w is
        ~1/kappa small for large kappa), the sphere part in float32 (d = 3:
        one uniform angle in an orthonormal basis around mu; d = 2 and 4:
        float64)."""
        s_w, s_noise = rnd.split(seed, 2)
        shape = ops.shape(mu)[:-1]
        sampler = self._resolved_sampler()
        w, one_minus_w = vmf._sample_w(
            self.dim,
            kappa,
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
            return vmf._sample_on_sphere_3d(mu, w, one_minus_w, angle)
        noise = rnd.normal(ops.shape(mu), s_noise, work)
        return vmf._sample_on_sphere(mu, w, one_minus_w, noise)

    def get_config(self):
        return {**super().get_config(), "sampler": self.sampler}
