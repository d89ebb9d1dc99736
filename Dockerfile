# The streamguard image: the CLI (worker, topics, replay, demo) with the contracts under /app/topics.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY topics ./topics
COPY streamguard ./streamguard
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home streamguard \
    && install -d -m 0700 -o streamguard /keys  # a named volume mounted here inherits this owner
ENV STREAMGUARD_CONTRACTS_DIR=/app/topics \
    STREAMGUARD_WEB_HOST=0.0.0.0
USER streamguard
EXPOSE 6066
ENTRYPOINT ["streamguard"]
CMD ["worker"]
