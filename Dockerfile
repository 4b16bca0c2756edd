# The Bookshelf API: waitress on port 8000 as a non-root user; migrations are applied on start.
#   docker build -t bookshelf .
#   docker run -p 8000:8000 -e SECRET_KEY=... -e DATABASE_URL=postgresql+psycopg://... bookshelf

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pyproject.toml's two lists of requirements, each in a file of its own: the layers that install
# them are built again only when a list changes, not on every edit of the code or the toml.
FROM base AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
    open("build.txt", "w").write("\n".join(p["build-system"]["requires"])); \
    open("runtime.txt", "w").write("\n".join(p["project"]["dependencies"]))'

# The dependencies, in the virtual environment that the image ships (without pip: nothing in the
# image installs anything).
FROM base AS dependencies
RUN python3 -m venv /opt/venv
COPY --from=requirements /src/runtime.txt /tmp/
RUN /opt/venv/bin/pip install --no-cache-dir --requirement /tmp/runtime.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# The project itself, built and installed into /opt/app (compiled, with its metadata) by an
# environment that is not shipped.
FROM base AS project
RUN python3 -m venv /opt/build
COPY --from=requirements /src/build.txt /tmp/
RUN /opt/build/bin/pip install --no-cache-dir --requirement /tmp/build.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bookshelf ./bookshelf
RUN /opt/build/bin/pip install --no-cache-dir --no-deps --no-build-isolation --target /opt/app .

FROM base
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONPATH=/opt/app \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
# Without DATABASE_URL the app keeps a SQLite file in its instance folder, /opt/app/instance: the
# one directory that the app's user may write to.
RUN groupadd --system --gid 10001 bookshelf \
    && useradd --system --no-log-init --uid 10001 --gid bookshelf --home-dir /app \
        --shell /usr/sbin/nologin bookshelf \
    && install -d -o bookshelf -g bookshelf /opt/app/instance
COPY --from=dependencies /opt/venv /opt/venv
COPY --from=project /opt/app /opt/app
WORKDIR /app
COPY wsgi.py ./
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/health', timeout=2)"]
# wsgi.py stops on SIGTERM within 10 seconds, letting the requests under way finish.
STOPSIGNAL SIGTERM
CMD ["/bin/sh", "-c", "flask --app wsgi init-db && exec python wsgi.py"]
