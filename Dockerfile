# The production image: one image, three roles (web, worker, beat) chosen by the command.
# `--target agent`: the PoP-side image (HAProxy, PowerDNS, ExaBGP and the agents; no Django).
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 STEERING_VAR_DIR=/var/lib/steering
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
COPY --from=frontend /src/frontend/dist ./frontend/dist
RUN useradd --system --home /var/lib/steering steering && mkdir -p /var/lib/steering \
    && SECRET_KEY=build python manage.py collectstatic --noinput -v0 \
    && chown -R steering /var/lib/steering
USER steering
EXPOSE 8000
# 0.0.0.0 inside the container's own network namespace, so the published port reaches it;
# docker-compose.yml publishes it on 127.0.0.1 only.
CMD ["python", "-m", "uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--ws-max-size", "65536"]


# The PoP side: what runs beside a data plane. The agents use only the standard library (the GSLB
# server adds uvicorn); the image holds no database or Redis client and no Django.
FROM python:3.11-slim-bookworm AS agent
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends haproxy pdns-server pdns-backend-remote \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir 'exabgp>=4.2,<5' 'uvicorn[standard]'
WORKDIR /opt/steering
COPY pyproject.toml README.md ./
COPY steering ./steering
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --home /var/lib/steering-agent steering-agent \
    && install -d -o steering-agent -m 0700 /var/lib/steering-agent
USER steering-agent
