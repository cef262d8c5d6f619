"""What a trace returns and how it lives on: the Keras model (``model``), batching over it (``batching``),
and saving/loading it as a SavedModel (``export``).
"""
