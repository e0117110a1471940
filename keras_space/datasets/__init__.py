"""keras_space.datasets: public datasets (see DESIGN.md)."""
from keras_space.datasets.sts import load_sts
