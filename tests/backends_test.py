"""What depends on the backend itself: imports, refusals on unsupported backends,
and the float32 fallback of the vMF numerics on JAX without x64 mode."""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_space import api_export

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, backend, timeout=240, **env):
    """Run `code` in a fresh interpreter on `backend`; its stdout (fails the test on an error)."""
    env = dict(os.environ, KERAS_BACKEND=backend, **env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_an_object_on_a_backend_it_does_not_support_refuses_to_run():
    """The export decorator's refusal (what the torch backend meets: tested here with a
    class and a function declared for a backend other than the current one)."""
    other = "jax" if keras.backend.backend() == "tensorflow" else "tensorflow"

    class Toy:
        def __init__(self, x):
            self.x = x

    def toy(x):
        return x

    refused_class = api_export._refused_on_this_backend(Toy, "Toy", (other,))
    refused_function = api_export._refused_on_this_backend(toy, "toy", (other,))
    backend = keras.backend.backend()
    for call in (lambda: refused_class(1), lambda: refused_function(1)):
        with pytest.raises(NotImplementedError, match=rf"'{backend}' Keras backend.*runs on "
                                                      rf"{other}.*KERAS_BACKEND={other}"):
            call()
    assert api_export._refused_on_this_backend(toy, "toy", (backend,)) is toy


def test_every_public_object_names_its_backends():
    import keras_space.testing  # noqa: F401  (its objects register on import)

    assert set(api_export.SUPPORTED_BACKENDS) == set(api_export.PUBLIC_API)
    tensorflow_only = sorted(p for p, b in api_export.SUPPORTED_BACKENDS.items() if b != api_export.BACKENDS)
    assert tensorflow_only == [
        "keras_space.models.bert_from_checkpoint",
        "keras_space.models.export_for_serving",
        "keras_space.testing.check_saved_model",
        "keras_space.testing.run_on_logical_cpus",
        "keras_space.utils.enable_multi_worker_fit",
    ]
    assert all(api_export.SUPPORTED_BACKENDS[p] == ("tensorflow",) for p in tensorflow_only)


@pytest.mark.slow
def test_on_jax_import_needs_no_tensorflow_and_vmf_without_x64_runs_in_float32():
    """One fresh JAX process without x64 mode: `import keras_space` imports neither
    TensorFlow nor TensorFlow Probability; then the vMF numerics (and the vMF likelihood
    at kappa = 1e5, and the Power Spherical KL and log-density) run in float32: finite,
    accurate to float32, and the layers fit (a learned kappa through the implicit gradient,
    a per-example one). (Run by the TensorFlow session: the JAX session would start the same
    process again.)"""
    if keras.backend.backend() == "jax":
        pytest.skip("the TensorFlow session runs it (it starts its own JAX process)")
    out = run_python(
        """
        import sys
        import keras_space
        print(sorted(m for m in ("tensorflow", "tensorflow_probability") if m in sys.modules))
        import numpy as np, keras
        from keras_space.layers import VonMisesFisher
        from keras_space.ops import vmf_kl_to_uniform, vmf_log_normalizer, vmf_mean_resultant_length
        from keras_space.losses import VonMisesFisherNLL
        print(vmf_log_normalizer(3, 1.0).dtype, float(vmf_log_normalizer(3, 1.0)),
              float(vmf_mean_resultant_length(16, 10.0)), float(vmf_kl_to_uniform(16, 1e-2)),
              float(VonMisesFisherNLL()(np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 0.0, 2.0, 1e5]]))))
        for d, learn in ((16, True), (3, False)):
            model = keras.Sequential([keras.Input((d,)), VonMisesFisher(10.0, learn_kappa=learn, seed=0),
                                      keras.layers.Dense(1)])
            model.compile("adam", "mse")
            loss = model.fit(np.random.rand(32, d), np.random.rand(32, 1), verbose=0).history["loss"]
            print(np.isfinite(loss).all())
        from keras_space.layers import PowerSpherical
        from keras_space.ops import power_spherical_kl_to_uniform, power_spherical_log_prob
        print(float(power_spherical_kl_to_uniform(16, 1e-2)), float(power_spherical_kl_to_uniform(768, 1e3)),
              float(power_spherical_log_prob([[0.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]], 1e5)[0]))
        inputs = keras.Input((16,))
        kappa = keras.layers.Dense(1, activation="softplus")(inputs) + 1.0
        model = keras.Model(inputs, PowerSpherical(kappa=None, seed=0)([inputs, kappa]))
        model.compile("adam", "mse")
        print(np.isfinite(model.fit(np.random.rand(32, 16), np.random.rand(32, 16), verbose=0).history["loss"]).all())
        """, "jax", JAX_ENABLE_X64="0")
    lines = out.split("\n")
    assert lines[0] == "[]", out
    dtype, log_c, a, kl, nll = lines[1].split()
    assert dtype == "float32"
    assert abs(float(log_c) - -2.6924636085) < 1e-6 * 2.7
    assert abs(float(a) - 0.4876216680) < 1e-5       # A_16(10), mpmath
    assert abs(float(kl) - 3.1249983724e-06) < 1e-5 * 3.2e-6 * 10
    # -log(1e5 / (2 pi)): log C_3 + kappa has no kappa-sized term to cancel in float32
    assert abs(float(nll) - -9.675048399) < 1e-6 * 9.7
    assert lines[2:4] == ["True"] * 2
    # Power Spherical in float32: KL and log-density (Stirling differences, no
    # kappa-sized cancellation) to float32 accuracy, against mpmath; a per-example fit
    ps_kl_small, ps_kl_large, ps_log_prob = map(float, lines[4].split())
    assert abs(ps_kl_small - 3.67870494889e-6) < 1e-5 * 3.7e-6
    assert abs(ps_kl_large - 148.204173416) < 1e-5 * 148.2
    assert abs(ps_log_prob - 8.98191121795) < 1e-6 * 9.0  # log((1e5 + 1) / (4 pi)) at the mode
    assert lines[5] == "True"
