"""keras_space.datasets: readers of public sentence-pair data (README: "BERT-whitening ... STS evaluation")."""
from keras_space.datasets.sick import (
    ContrastiveTuples,
    SickPairs,
    load_sick,
    sick_contrastive_tuples,
)
from keras_space.datasets.sts import load_sts
