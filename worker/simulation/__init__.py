"""The active-learning simulator: the real loop on an already-labeled folder.

Labels are revealed by an oracle (the folder's class names) instead of a
pathologist, so a lab can compare selection strategies before spending reader
hours.  Everything that decides the outcome is the production code: backbone
features and their cache (worker/ml/backend.py, feature_store.py), head
training (worker/ml/train.py), uncertainty (worker/ml/uncertainty.py) and the
selection strategies (worker/ml/selection/).  No Celery, no database.
"""
