"""Batch inference with a saved traced model on a distributed engine: Ray (Data and Serve) and Spark.

:mod:`.predictor` holds what every engine shares (scoring batches of any size with a model that may take
one batch only, dtype conversion, checks) and needs nothing beyond tfaccel; :mod:`.ray` and :mod:`.spark`
adapt it to each engine and import it, so they need the ``ray`` and ``spark`` extras
(``pip install 'tfaccel[ray]'``, ``'tfaccel[spark]'``). Importing this package imports neither engine.
"""
