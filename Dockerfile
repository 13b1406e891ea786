# The one image every perpline component runs from (k8s/: each container picks its module).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN python -m pip install --no-cache-dir uv==0.13.8 \
 && uv pip install --system --no-cache -r requirements.lock \
 && uv pip install --system --no-cache --no-deps -e . \
 && python -m perpline.matcher.build
ENV PYTHONUNBUFFERED=1
USER 10001
