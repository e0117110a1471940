"""keras_space.models: public models (see DESIGN.md)."""
