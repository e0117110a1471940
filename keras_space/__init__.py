"""keras_space: Keras 3 building blocks for a family of well-argued ideas.

P-tuning prompts, spherical (von Mises-Fisher) latents, smooth activations
by mollification, BERT-whitening, Johnson-Lindenstrauss tools, attention-free
token mixers, function-preserving widening, gradient accumulation and exact
large-batch contrastive training by gradient caching.
"""

__version__ = "0.2.0"

from keras_space import (
    activations,
    callbacks,
    datasets,
    growth,
    layers,
    losses,
    models,
    ops,
    optimizers,
    utils,
)
