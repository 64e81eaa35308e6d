# tlsgate, and the demo's backends and certificate step (docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY admin ./admin
# trustme only for the demo's certificate step; the gateway itself does not need it.
RUN pip install --no-cache-dir . trustme
COPY tests/__init__.py tests/linebackend.py ./tests/
COPY scripts/demo_stack.py ./scripts/
COPY examples ./examples
RUN useradd --system --home /app tlsgate && mkdir /state && chown tlsgate /state
USER tlsgate
EXPOSE 18443 9901
ENTRYPOINT ["tlsgate"]
CMD ["serve", "--bootstrap", "examples/demo.yaml", "--state-dir", "/state"]
