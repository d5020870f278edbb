# Prediction API for Cloud Run: serving dependencies and serving modules only (no pandas, plotting,
# Airflow or test tools). Build: docker build -t adroi-api . ; run: docker run -e MODEL_STORE=gs://... -p 8080:8080
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    BIND_HOST=0.0.0.0

WORKDIR /srv

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && useradd --system --uid 10001 --no-create-home adroi

COPY gunicorn.conf.py .
COPY app/ app/
COPY training/__init__.py training/
COPY training/core/ training/core/
# Byte-compile now: the image's files are read-only to the runtime user, and cold start counts.
RUN python -m compileall -q app training

USER 10001
EXPOSE 8080
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
