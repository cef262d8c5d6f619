"""The compiler: the stages of ``trace`` and the artefacts they pass along.

``pipeline`` lists the stages in order and is where ``trace`` lives; every other module here is one stage or
one artefact. This package's ``__init__`` imports nothing, so the TF-free modules (``ir``, ``partition``,
``placement``, ``selection``, ``core_stages``) stay importable without TensorFlow.
"""
