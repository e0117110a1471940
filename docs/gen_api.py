"""Write the API reference pages (docs/api/*.md) from the public API.

Run `python docs/gen_api.py` after adding or removing a public symbol;
`tests/api_test.py` fails while the pages and `keras_space.api_export.PUBLIC_API`
disagree.
"""

import collections
import importlib
import os

TITLES = {
    "activations": "keras_space.activations", "callbacks": "keras_space.callbacks",
    "datasets": "keras_space.datasets", "growth": "keras_space.growth",
    "layers": "keras_space.layers", "losses": "keras_space.losses",
    "models": "keras_space.models", "ops": "keras_space.ops",
    "optimizers": "keras_space.optimizers", "testing": "keras_space.testing",
    "utils": "keras_space.utils",
}


def public_api():
    """{group: sorted public paths}, every public subpackage imported first."""
    from keras_space.api_export import PUBLIC_API

    for group in TITLES:
        importlib.import_module(f"keras_space.{group}")
    importlib.import_module("keras_space.optimizers.schedules")
    importlib.import_module("keras_space.utils.masking")
    groups = collections.defaultdict(list)
    for path in sorted(PUBLIC_API):
        groups[path.split(".")[1]].append(path)
    return groups


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "api")
    groups = public_api()
    index = ["# API reference", "", "Generated from the docstrings: every public symbol, "
             "nothing private.", ""]
    for group, paths in sorted(groups.items()):
        index.append(f"- [{TITLES[group]}]({group}.md): " + ", ".join(
            f"`{p.rsplit('.', 1)[1]}`" for p in paths))
        page = [f"# {TITLES[group]}", ""]
        for path in paths:
            page += [f"::: {path}", ""]
        with open(os.path.join(here, f"{group}.md"), "w") as f:
            f.write("\n".join(page))
    with open(os.path.join(here, "index.md"), "w") as f:
        f.write("\n".join(index) + "\n")


if __name__ == "__main__":
    main()
