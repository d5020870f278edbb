"""The serving core: what training and the API share, importable without pandas, scikit-learn or matplotlib.

store (local folder | Cloud Storage), registry (versions, manifests, LATEST), artifact (the one model loader
and verification), errors, events, logs. The
Dockerfile copies this package whole into the serving image; nothing in it may import the rest of `training`.
"""
