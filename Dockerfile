# The Bookshelf API: `bookshelf serve` (waitress) on port 8000 as a non-root user; migrations are
# applied on start (`bookshelf init-db`).
#   docker build -t bookshelf .
#   docker run -p 8000:8000 -e SECRET_KEY=... -e DATABASE_URL=postgresql+psycopg://... bookshelf

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies exactly as locked (requirements/runtime.txt: versions and hashes), in the
# virtual environment that the image ships (without pip: nothing in the image installs anything).
# This layer is built again only when the lock changes, not on every edit of the code.
FROM base AS dependencies
RUN python3 -m venv /opt/venv
COPY requirements/runtime.txt /tmp/
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes --requirement /tmp/runtime.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# The project itself: a wheel built by an environment that is not shipped (its build backend as
# locked in requirements/build.txt), installed into /opt/app with its metadata and the `bookshelf`
# command, which runs on /opt/venv's interpreter.
FROM dependencies AS project
RUN python3 -m venv /opt/build
COPY requirements/build.txt /tmp/
RUN /opt/build/bin/pip install --no-cache-dir --require-hashes --requirement /tmp/build.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bookshelf ./bookshelf
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
        --target /opt/app /dist/*.whl

FROM base
ENV PATH="/opt/app/bin:/opt/venv/bin:$PATH" \
    PYTHONPATH=/opt/app \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
# Production refuses to start without DATABASE_URL; DATABASE_URL=sqlite:////opt/app/instance/x.db
# asks for a SQLite file in the instance folder: the one directory that the app's user may write to.
RUN groupadd --system --gid 10001 bookshelf \
    && useradd --system --no-log-init --uid 10001 --gid bookshelf --home-dir /app \
        --shell /usr/sbin/nologin bookshelf \
    && install -d -o bookshelf -g bookshelf /opt/app/instance
COPY --from=dependencies /opt/venv /opt/venv
COPY --from=project /opt/app /opt/app
WORKDIR /app
# `python wsgi.py` and `flask --app wsgi`, for commands written before `bookshelf serve`.
COPY wsgi.py ./
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/health', timeout=2)"]
# `bookshelf serve` stops on SIGTERM within 10 seconds, letting the requests under way finish.
STOPSIGNAL SIGTERM
CMD ["/bin/sh", "-c", "bookshelf init-db && exec bookshelf serve"]
