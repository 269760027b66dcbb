FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    WEBHOOK_LISTEN=0.0.0.0 \
    WEBHOOK_PORT=8080 \
    HEALTH_PORT=8080

RUN useradd --create-home --uid 10001 capacity
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY locales ./locales
RUN pip install . && mkdir -p /app/data && chown capacity:capacity /app/data

USER capacity
VOLUME ["/app/data"]
# The webhook (run --webhook) and /health, on one port; publish it to the reverse proxy only.
EXPOSE 8080
# /health answers 200 when the database and the Bot API are fine (503 otherwise). Polling
# and webhook mode both serve it on 8080 with the defaults above.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('HEALTH_PORT') or '8080'), timeout=5)"]
# SIGTERM (docker stop) stops the bot gracefully; give it `--time 30` / stop_grace_period.
STOPSIGNAL SIGTERM
CMD ["capacity-bot", "run"]
