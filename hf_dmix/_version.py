"""The version of hf-dmix, in one place: ``pyproject.toml`` reads it from here (``[tool.setuptools.dynamic]``),
``hf_dmix.__version__`` and every ``dmix_config.json`` (``hf_dmix_version``) too."""

__version__ = "0.1.0"
