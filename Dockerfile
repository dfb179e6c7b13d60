# Consenso: one image for web (gunicorn), the Celery worker and beat. See docker-compose.yml.
FROM python:3.11-slim

# PYTHONPATH: run from the source tree, not site-packages, because settings find templates/ and
# locale/ beside config/ (BASE_DIR) and those are not part of the installed distribution.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, from the metadata alone, so a code change does not reinstall them.
# (No package sources are present yet, so this installs only the dependencies.)
COPY pyproject.toml README.md ./
RUN pip install .

COPY . .
RUN pip install --no-deps --force-reinstall . \
    && rm -rf build ./*.egg-info

# Static files are built into the image (whitenoise serves them with hashed names). Settings
# refuse DEBUG off without a strong SECRET_KEY; this dummy exists only for this build step and
# never reaches the runtime environment.
RUN SECRET_KEY=build-only-collectstatic-key-not-used-at-runtime-0123456789abcdefghij \
    DEBUG=false \
    python manage.py collectstatic --noinput

# An unprivileged user: the code and static files stay root-owned and read-only to it. Its own
# home is the one writable place (gunicorn keeps its control socket there).
RUN groupadd --system --gid 10001 consenso \
    && useradd --system --uid 10001 --gid consenso --create-home --home-dir /home/consenso \
       --shell /usr/sbin/nologin consenso
USER consenso

EXPOSE 8000

CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--access-logfile", "-"]
