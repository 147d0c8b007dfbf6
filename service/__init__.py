"""The crypto price service: a gunicorn-served Flask API of simulated prices."""
