"""Locust load tests: ``make loadtest`` (see run.py), or locustfile.py against any gateway."""
