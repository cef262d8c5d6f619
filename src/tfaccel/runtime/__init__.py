"""What a trace returns and how it lives on: the Keras model (``model``), batching over it (``batching``),
and the SavedModel it saves as: ``saving`` writes it (below ``model``, which saves itself), ``export`` loads
it (above ``model``, which it builds), ``metadata`` reads the JSON beside it without TensorFlow.
"""
