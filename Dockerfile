# The one image every perpline component runs from (k8s/: each container picks its module).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN python -m pip install --no-cache-dir uv==0.13.8 \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.lock \
 && uv pip install --system --no-cache --no-deps -e . \
 && python -m perpline.matcher.build \
 && python -m compileall -q perpline
# bytecode compiled at build: the processes run as a user that cannot write __pycache__, and a new API
# replica would otherwise compile every module it imports before serving (about 1 CPU s: bench.replica)
ENV PYTHONUNBUFFERED=1
USER 10001
