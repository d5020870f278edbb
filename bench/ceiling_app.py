"""The ceiling for `bench_serve.py`: a bare Flask app answering constant JSON, served like the API."""

from __future__ import annotations

from flask import Flask, Response

app = Flask(__name__)
_BODY = b'{"predictions": [4219977.4], "model_version": "constant"}'


@app.post("/predict")
def constant() -> Response:
    """Answer the same small JSON body to every request, reading none of it."""
    return Response(_BODY, mimetype="application/json")
