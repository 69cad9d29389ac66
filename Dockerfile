# Two images from one file: `api` (no torch) and `worker` (CUDA torch).
FROM python:3.11-slim AS base
WORKDIR /app
ENV PYTHONUNBUFFERED=1 DISTILLERY_DATA_DIR=/data
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
COPY distillery_client ./distillery_client

FROM base AS api
RUN pip install --no-cache-dir .
EXPOSE 8000
CMD ["distillery", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
RUN pip install --no-cache-dir '.[worker]'
CMD ["distillery", "worker", "--queues", "default", "--concurrency", "1"]
