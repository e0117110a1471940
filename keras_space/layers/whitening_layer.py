"""WhiteningLayer: BERT-whitening with streaming float64 statistics."""

import warnings

import keras
import ml_dtypes
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

MODES = ("pca", "zca")


def _batches(data, batch_size, steps):
    """Yield numpy (n, d) batches (views where possible, any dtype) from arrays,
    tensors or tf.data."""
    try:
        import tensorflow as tf

        is_dataset = isinstance(data, tf.data.Dataset)
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        is_dataset = False
    if is_dataset:
        for count, element in enumerate(data):
            if steps is not None and count >= steps:
                break
            if isinstance(element, (tuple, list)):
                element = element[0]
            yield np.asarray(element)
        return
    try:
        array = np.asarray(keras.ops.convert_to_numpy(data) if not isinstance(data, np.ndarray) else data)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "biuf":
        raise validation.ArgumentTypeError(
            "`data` must be a numeric (N, d) array, tensor or tf.data.Dataset. "
            f"Received: data={data!r:.80}"
        )
    size = batch_size or 4096
    total = array.shape[0] if array.ndim else 0
    limit = total if steps is None else min(total, steps * size)
    for start in range(0, limit, size):
        yield array[start : min(start + size, limit)]


class _CovarianceAccumulator:
    """Exact streaming mean and scatter matrix in float64, memory O(d^2).

    Every batch is shifted by one fixed point, the first batch's mean, while
    it is converted to float64 (one pass, into a reused buffer); the shifted
    column sums and the scatter matrix (a float64 symmetric rank-k update)
    are accumulated, and the mean and scatter about the mean are recovered
    at the end. The shift is within sampling noise of the mean, so the final
    correction N m m^T is tiny and nothing cancels. Float32 products instead
    (about 2x faster) leave a relative error ~5e-9 on the top eigenvalues and
    make the smallest ones meaningless (benchmarks/RESULTS.md).
    """

    def __init__(self):
        self.count = 0
        self.shift = None
        self.sums = None
        self.scatter = None
        self._buffer = None

    def update(self, batch):
        """Add a (n, d) batch of finite values. Returns False (and adds nothing)
        when the batch holds NaN or inf (or values whose squares overflow)."""
        n = batch.shape[0]
        if n == 0:
            return True
        if self.shift is None:
            with np.errstate(over="ignore", invalid="ignore"):
                self.shift = batch.mean(axis=0, dtype="float64")
            self.sums = np.zeros_like(self.shift)
            self.scatter = np.zeros((batch.shape[1],) * 2)
        if self._buffer is None or self._buffer.shape[0] < n:
            self._buffer = np.empty((n, batch.shape[1]))
        shifted = self._buffer[:n]
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            np.subtract(batch, self.shift, out=shifted, dtype="float64")
            sums = shifted.sum(axis=0)
            scatter = shifted.T @ shifted  # numpy calls the symmetric rank-k update (syrk)
        if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(np.diagonal(scatter)))):
            return False
        self.count += n
        self.sums += sums
        self.scatter += scatter
        return True

    @property
    def mean(self):
        return self.shift + self.sums / self.count

    def covariance(self):
        """Unbiased covariance (N - 1), as numpy.cov and sklearn's PCA."""
        offset = self.sums / self.count
        scatter = self.scatter - self.count * np.outer(offset, offset)
        return scatter / max(self.count - 1, 1)


@keras_space_export("keras_space.layers.WhiteningLayer")
class WhiteningLayer(keras.layers.Layer):
    """BERT-whitening: x -> (x - beta mu) U Lambda^(-gamma/2), first k columns.

    With mu the mean and Sigma = U Lambda U^T the covariance of the sentence
    vectors (eigenvalues sorted descending), whitening makes the covariance
    the identity, which improves cosine-similarity semantics of many encoders
    and, truncated to k components, shrinks the vectors. beta = gamma = 1 is
    the original; beta = gamma = 0 is a pure rotation (near-lossless
    compression when truncated). `mode="zca"` rotates back:
    (x - beta mu) U_k Lambda_k^(-gamma/2) U_k^T, keeping the input dimension.

    Statistics come from `adapt()`, which streams exact float64 sums (memory
    O(d^2), not O(N d)); mean and kernel are stored as non-trainable float64
    weights, so they survive `.keras` save/load and `model.export()`, and the
    projection runs in float64 (then cast to the compute dtype): with
    anisotropic embeddings the eigenvalues span many decades and float32
    would amplify rounding by 1 / sqrt(lambda_min).

    Args:
        n_components: k, the number of components kept (None: all). Capped at
            the rank of the adapted data, with a warning, when `adapt` runs
            before the layer is built. Defaults to `None`.
        beta: how much of the mean to remove (1: all). Defaults to `1.0`.
        gamma: the power of the eigenvalue scaling (1: whitening, 0: rotation).
            Defaults to `1.0`.
        epsilon: added to the eigenvalues before the power (default 0, exact
            whitening as in the paper and sklearn; the rank cap already keeps
            zero-variance directions out).
        mode: "pca" (output k dims, PCA order) or "zca" (output d dims).
            Defaults to `"pca"`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (..., d).

    Example:

    ```python
    import numpy as np
    from keras_space.layers import WhiteningLayer

    vectors = np.random.normal(size=(10000, 384)).astype("float32")
    whitening = WhiteningLayer(n_components=128)
    whitening.adapt(vectors, batch_size=1024)
    reduced = whitening(vectors)  # (10000, 128), identity covariance
    ```

    References:
        - Su et al., "Whitening Sentence Representations for Better Semantics
          and Faster Retrieval", https://arxiv.org/abs/2103.15316
    """

    def __init__(
        self, n_components=None, beta=1.0, gamma=1.0, epsilon=0.0, mode="pca", **kwargs
    ):
        super().__init__(autocast=False, **kwargs)
        self.n_components = validation.positive_int("n_components", n_components, allow_none=True)
        self.beta = validation.finite_float("beta", beta)
        self.gamma = validation.finite_float("gamma", gamma)
        self.epsilon = validation.non_negative_float("epsilon", epsilon)
        self.mode = validation.choice("mode", mode, MODES)
        self.adapted = False
        self.eigenvalues = None  # numpy float64, descending, after adapt()

    def _output_dim(self, input_dim):
        if self.mode == "zca":
            return input_dim
        return self.n_components or input_dim

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None:
            raise ValueError(f"WhiteningLayer needs a known last dimension. Received: input_shape={input_shape}")
        if self.n_components is not None and self.n_components > d:
            raise ValueError(
                f"`n_components`={self.n_components} exceeds the input dimension {d}. "
                f"Received: n_components={self.n_components}"
            )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: d})
        self.mean = self.add_weight(
            name="mean", shape=(d,), initializer="zeros", trainable=False, dtype="float64",
            autocast=False,  # float64 statistics on every call path (never cast to float16)
        )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(d, self._output_dim(d)),
            initializer="zeros",
            trainable=False,
            dtype="float64",
            autocast=False,
        )

    def adapt(self, data, batch_size=None, steps=None):
        """Fit mean and covariance on `data`, streaming exact float64 sums.

        Args:
            data: a (N, d) numpy array or tensor, or a `tf.data.Dataset` of
                (n, d) batches (or of (x, ...) tuples).
            batch_size: rows per batch for arrays and tensors (default 4096).
            steps: at most this many batches.

        Each call starts from scratch: the statistics of an earlier `adapt`
        are replaced, not accumulated (stream several batches through one
        call instead). The output width is fixed once the layer is built (by
        the first `adapt`, capped at that data's rank).

        Raises:
            ValueError: rows with NaN or inf (their count is given), fewer
                than two rows, data with no variance (rank 0: constant rows,
                or values whose squares underflow), or n_components above the
                data's rank once the layer is built.
        """
        acc = _CovarianceAccumulator()
        bad = 0
        overflow = False
        for batch in _batches(data, batch_size, steps):
            if batch.ndim != 2:
                raise ValueError(f"`data` batches must be 2-D (n, d). Received a batch of shape {batch.shape}")
            if bad == 0 and acc.update(batch):
                continue
            # a non-finite statistic: count the rows with NaN or inf (here and after)
            rows = int(np.sum(~np.all(np.isfinite(batch), axis=1)))
            overflow = overflow or rows == 0
            bad += rows
        if bad:
            raise ValueError(f"`data` has {bad} rows with NaN or inf values; clean them before adapt().")
        if overflow:
            raise ValueError(
                "`data` has values so large that their squares overflow float64 "
                "(largest |value| above ~1e154); rescale it before adapt()."
            )
        if acc.count < 2:
            raise ValueError(f"adapt() needs at least 2 rows. Received {acc.count}.")
        d = acc.mean.shape[0]
        eigenvalues, vectors = np.linalg.eigh(acc.covariance())
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = np.maximum(eigenvalues[order], 0.0), vectors[:, order]
        tol = eigenvalues[0] * d * np.finfo("float64").eps if eigenvalues[0] > 0 else 0.0
        rank = int(np.sum(eigenvalues > tol))
        if rank == 0:
            raise ValueError(
                f"`data` has no variance (rank 0 found over {acc.count} rows, {d} dims; "
                f"largest eigenvalue {eigenvalues[0]:.3g}): there is nothing to whiten. "
                "Constant rows, or values so small that their squares underflow float64?"
            )
        wanted = self.n_components or d
        if wanted > rank:
            message = (
                f"n_components={wanted} exceeds the rank {rank} of the adapted data "
                f"({acc.count} rows, {d} dims): the remaining components have no variance "
                "and cannot be whitened"
            )
            if self.built:
                raise ValueError(message + f". Use n_components <= {rank}.")
            warnings.warn(message + f"; keeping {rank}.", stacklevel=2)
            self.n_components = rank
        if not self.built:
            self.build((None, d))
        elif self.mean.shape[0] != d:
            raise ValueError(f"The layer was built for {self.mean.shape[0]} dims; the data has {d}.")
        k = self._output_dim(d) if self.mode == "pca" else (self.n_components or d)
        scale = (eigenvalues[:k] + self.epsilon) ** (-self.gamma / 2.0)
        if not np.all(np.isfinite(scale)):
            raise ValueError(
                f"(eigenvalue + epsilon) ** (-gamma / 2) overflows float64 for gamma={self.gamma}, "
                f"epsilon={self.epsilon} (eigenvalues from {eigenvalues[k - 1]:.3g} to "
                f"{eigenvalues[0]:.3g}): use a gamma of moderate size (the paper uses 0 to 1)."
            )
        # each component's output spread, in the dtype the layer returns
        spread = np.sqrt(eigenvalues[:k]) * scale
        out = ml_dtypes.finfo(keras.backend.standardize_dtype(self.compute_dtype))
        top = float(out.max) / 1e3  # room for outputs 1,000 spreads out
        if spread.min() < out.tiny or spread.max() > top:
            raise ValueError(
                f"With gamma={self.gamma} and epsilon={self.epsilon}, the whitened outputs "
                f"would have spreads from {spread.min():.3g} to {spread.max():.3g} "
                f"(eigenvalues {eigenvalues[k - 1]:.3g} to {eigenvalues[0]:.3g}): outside "
                f"{out.dtype}'s normal range [{float(out.tiny):.3g}, {top:.3g}], so they "
                "would underflow to 0 or overflow: use a gamma of moderate size (the paper "
                "uses 0 to 1)."
            )
        kernel = vectors[:, :k] * scale[None, :]
        if self.mode == "zca":
            kernel = kernel @ vectors[:, :k].T
        self.mean.assign(acc.mean)
        self.kernel.assign(kernel)
        self.eigenvalues = eigenvalues
        self.adapted = True

    def load_own_variables(self, store):
        super().load_own_variables(store)
        # A layer saved before adapt() has an all-zero kernel; an adapted one never does.
        self.adapted = bool(np.any(keras.ops.convert_to_numpy(self.kernel) != 0))

    def call(self, inputs):
        if not self.adapted:
            raise ValueError(
                "WhiteningLayer has no statistics yet: call adapt() on the sentence "
                "vectors (or load a saved layer) before using it."
            )
        # float64: with anisotropic embeddings the eigenvalues span many decades
        # and 1 / sqrt(lambda_min) amplifies float32 rounding past 1e-4.
        x = ops.cast(inputs, "float64") - self.beta * self.mean
        return ops.cast(ops.matmul(x, self.kernel), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self._output_dim(input_shape[-1]),)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "n_components": self.n_components,
            "beta": self.beta,
            "gamma": self.gamma,
            "epsilon": self.epsilon,
            "mode": self.mode,
        }
