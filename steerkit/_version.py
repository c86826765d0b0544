"""The library's version, in one place: the package metadata reads it at build time
(``[tool.setuptools.dynamic]`` in pyproject.toml), and cache keys, ``/healthz``, ``--version`` and
evaluation reports read it here. Bump it with an entry in CHANGELOG.md."""

__version__ = "0.1.0"
