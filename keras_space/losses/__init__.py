"""keras_space.losses: contrastive losses (README: "Exact large-batch contrastive training")."""

from keras_space.losses.info_nce import InfoNCE
