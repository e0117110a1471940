"""keras_space.losses: contrastive losses (README: "Exact large-batch contrastive training")
and the vMF negative log-likelihood of directions."""

from keras_space.losses.cosent import CoSENT
from keras_space.losses.info_nce import InfoNCE
from keras_space.losses.matryoshka import Matryoshka
from keras_space.losses.von_mises_fisher_nll import VonMisesFisherNLL
