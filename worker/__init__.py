"""hemaloop's background side: the Celery app, thin tasks, and worker/ml (TensorFlow)."""
