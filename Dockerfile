FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 capacity
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY locales ./locales
COPY emulator ./emulator
RUN pip install . && mkdir -p /app/data && chown capacity:capacity /app/data

USER capacity
VOLUME ["/app/data"]
CMD ["capacity-bot", "run"]
