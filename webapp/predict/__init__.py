"""The Predict page: upload cells, see what the active model (or a chosen version)
makes of them, with a Grad-CAM heatmap; add one to the project only when asked.

The web process never loads a model: the predict worker answers (worker/prediction.py)
while the request waits (client.py).
"""

from .routes import bp

__all__ = ["bp"]
