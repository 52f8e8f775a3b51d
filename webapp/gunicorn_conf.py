"""gunicorn settings for production (docker-compose ``web``) and bench/label_latency.py.

Labeling requests are short and CPU-bound in Python (the database answers in
a few milliseconds): one single-threaded worker process per core keeps each
request on a core without GIL contention between threads, and without more
processes than cores fighting over them (on 2 cores, 4 workers doubled the
95th-percentile latency of bench/label_latency.py against 2).
"""

import os

workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, os.cpu_count() or 2))))
threads = int(os.environ.get("WEB_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
keepalive = 5
timeout = 60
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None
# The pages' polling stays out of the access log (webapp/access_log.py).
logger_class = "webapp.access_log.QuietPollingLogger"
