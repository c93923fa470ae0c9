"""The normalization study: experiments behind docs/normalization.md and their runner.

``tinynet.study.runner.run_grid`` runs a grid of configs on local processes
or a Dask cluster; ``tinynet.study.experiments.EXPERIMENTS`` maps each
experiment's name to its module; ``tinynet.study.cli`` is ``tinynet study``.
"""
