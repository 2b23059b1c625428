# syntax=docker/dockerfile:1
# egw: build a wheel in one stage, run it as a non-root user in a slim one.

FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY egw ./egw
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /var/lib/egw --create-home egw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# the config is mounted read-only over this default; the database lives on a volume
COPY config.yaml /etc/egw/config.yaml
VOLUME ["/var/lib/egw"]
WORKDIR /var/lib/egw
USER 10001
EXPOSE 8080
ENV EGW_HOST=0.0.0.0 \
    EGW_DB=/var/lib/egw/egw.db
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["egw"]
CMD ["serve", "--config", "/etc/egw/config.yaml"]
