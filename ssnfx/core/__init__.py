"""The runtime core, the bottom layer: what a shared model is made of at run time.

The plan and its options (:mod:`ssnfx.core.plan`, :mod:`ssnfx.core.config`), the registries
(combiners, methods, layer kinds, grouping strategies), the store and its generator, and the
shared model's class. It imports no pass (:mod:`ssnfx.passes` imports it) and nothing above;
the import-linter contract in ``pyproject.toml`` checks that in CI. Importing this package
imports none of its modules, so that a light one (the errors) stays light.
"""
