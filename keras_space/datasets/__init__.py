"""keras_space.datasets: public datasets (see DESIGN.md)."""
