"""Example sweep specs shipped inside the package (package data), so an installed vitsweep has them.

    demo.yaml           what `vitsweep demo` runs: all three probes on a small ViT over the demo pairs
    imagenet-val.yaml   a full ImageNet-validation sweep on a GPU cluster, to edit (bucket, models)

`vitsweep init DIR` writes copies for a user to edit; `vitsweep demo` reads demo.yaml from here.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

EXAMPLES = ("demo.yaml", "imagenet-val.yaml")


def example_text(name: str) -> str:
    """The text of one packaged example spec, comments included (KeyError for an unknown name)."""
    if name not in EXAMPLES:
        raise KeyError(name)
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def example_spec(name: str) -> dict[str, Any]:
    """One packaged example spec, parsed (not yet validated)."""
    return yaml.safe_load(example_text(name))
