"""gunicorn settings for production (docker-compose ``web``) and bench/label_latency.py.

Labeling requests are short and database-bound: several single-threaded
worker processes keep each request on one core without Python's GIL
contention between threads of one process.
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
threads = int(os.environ.get("WEB_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
keepalive = 5
timeout = 60
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
