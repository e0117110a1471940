"""PowerSpherical: a latent layer on the unit sphere with the Power Spherical law."""

from keras_space.api_export import keras_space_export
from keras_space.layers._spherical_latent import SphericalLatent
from keras_space.ops import power_spherical


@keras_space_export("keras_space.layers.PowerSpherical")
class PowerSpherical(SphericalLatent):
    """Power Spherical latent: mean direction in, sample on the sphere out.

    The Power Spherical distribution (De Cao & Aziz, 2020) has density proportional
    to (1 + <mu, z>)^kappa on S^{d-1}: like vMF(mu, kappa) it concentrates around mu,
    but its sampler needs no rejection step and no Bessel function. t = <z, mu> has
    (1 + t)/2 ~ Beta((d - 1)/2 + kappa, (d - 1)/2), drawn as a ratio of two Gamma
    draws (reparameterised in kappa through their implicit gradients), and the rest of
    z is a uniform direction turned around mu by one Householder reflection (from the
    pole opposite mu's first coordinate, so nothing cancels in float32). Use it where
    the vMF's sampler is the cost (large d, large batches) or where kappa per example
    is wanted with plain autodiff.

    Everything else is `VonMisesFisher`'s: the input (any non-zero vector; normalised
    inside; a zero vector maps to e_1, a NaN/inf entry makes the row NaN) is the mean
    direction; kappa is fixed, learned (`learn_kappa=True`, log kappa) or, with
    `kappa=None`, a second input with one value per example (`layer([mu, kappa])`,
    kappa of shape (batch,) or (batch, 1), positive and finite, else a `ValueError`
    naming it). In training the layer outputs a sample and adds the KL to the uniform
    sphere (closed form, `keras_space.ops.power_spherical_kl_to_uniform`; the batch
    mean with per-example kappa) with `add_loss`, tracked by the metric `kl`
    (TensorFlow; on JAX `kl_divergence()` gives it); in inference it outputs mu (or a
    sample, with `sample_in_inference=True`). The log-density is
    `keras_space.ops.power_spherical_log_prob`.

    Args:
        kappa: concentration (> 0); the initial value when learned; `None`: one kappa
            per example, given as the second input.
        learn_kappa: learn kappa (one scalar) by gradient descent. Defaults to `False`.
        sample_in_inference: output samples also when `training=False`. Defaults to `False`.
        seed: int seed for the samples (None: random). Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (batch, d), d >= 2; with `kappa=None`, the list
            `[mean_direction, kappa]`.
        training: sample (True) or return the mean direction (False).
        padding_mask: for (batch, sequence, d) inputs, a (batch, sequence) boolean or
            0/1 mask, True = real (a Keras mask arriving with the inputs works too; the
            argument wins). Padded positions are not read (their mean direction and
            kappa may hold anything, NaN included), output zeros, and are left out of
            the per-example KL's mean; the output carries the mask on.

    Example:

    ```python
    import keras
    from keras_space.layers import PowerSpherical

    inputs = keras.Input((64,))
    h = keras.layers.Dense(128, activation="relu")(inputs)
    kappa = keras.layers.Dense(1, activation="softplus")(h) + 1.0   # per example
    z = PowerSpherical(kappa=None, seed=0)([keras.layers.Dense(16)(h), kappa])
    vae = keras.Model(inputs, keras.layers.Dense(64)(z))
    vae.compile("adam", "mse")
    ```

    References:
        - De Cao & Aziz, "The Power Spherical distribution",
          https://arxiv.org/abs/2006.04437
    """

    def _kl(self, kappa):
        return power_spherical._kl_to_uniform(self.dim, kappa)

    def _draw(self, mu, kappa, seed):
        return power_spherical._sample(mu, kappa, seed)
