"""Machine-learning core of the hemaloop worker.

Pure TensorFlow/NumPy code (no Celery, no database): weight resolution, the
InceptionV3 classifier, image loading, feature extraction, head training,
metrics and uncertainty scores, and `backend.CellClassifier`, the small
predict/fit interface the rest of the server uses.

Importing this package must stay cheap: TensorFlow is imported only by the
submodules that need it, so the web process can import the NumPy-only parts.
"""
