"""keras_space.ops: numerics with no weights (README: "Johnson–Lindenstrauss", "Spherical latents")."""

from keras_space.ops.jl import (
    hamming_similarity,
    jl_epsilon,
    jl_min_dim,
    min_embedding_dim,
)
from keras_space.ops.power_spherical import (
    power_spherical_kl_to_uniform,
    power_spherical_log_prob,
)
from keras_space.ops.randomized_svd import randomized_svd
from keras_space.ops.vmf import (
    vmf_kl_to_uniform,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)
