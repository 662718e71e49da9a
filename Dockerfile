# Fusebox container image: a builder stage with a venv, a slim non-root runtime.
#
#   docker build -t fusebox .
#   docker run --rm -p 8080:8080 \
#     -v ./fusebox.toml:/etc/fusebox.toml:ro -v fusebox-cache:/var/lib/fusebox \
#     -e OPENAI_API_KEY fusebox
#
# The config is mounted read-only at /etc/fusebox.toml; secrets come from the
# environment variables it names. The container listens on 8080 whatever
# server.port says (`--port` below); the cache lives on the /var/lib/fusebox
# volume (set `store.path = "/var/lib/fusebox"`; a relative path lands there too).
# SIGTERM (docker stop) drains in-flight requests for up to server.drain_s:
# give `docker stop --time` a little more than that.

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/fusebox
COPY pyproject.toml README.md LICENSE ./
COPY gateway ./gateway
COPY policies ./policies
COPY providers ./providers
RUN /opt/fusebox/bin/pip install --no-cache-dir .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/fusebox/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 fusebox \
    && useradd --system --uid 10001 --gid fusebox --no-create-home \
       --home-dir /var/lib/fusebox --shell /usr/sbin/nologin fusebox \
    && mkdir -p /var/lib/fusebox \
    && chown fusebox:fusebox /var/lib/fusebox
COPY --from=builder /opt/fusebox /opt/fusebox
WORKDIR /var/lib/fusebox
VOLUME ["/var/lib/fusebox"]
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["fusebox", "serve", "--config", "/etc/fusebox.toml", "--host", "0.0.0.0"]
CMD ["--port", "8080"]
