# fulfilld in a container: `docker compose up` (see docker-compose.yml) or
#   docker build -t fulfilld . && docker run fulfilld --help
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fulfilld

FROM debian:bookworm-slim
# curl: the health checks in docker-compose.yml.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /app fulfilld \
 && mkdir -p /app/data/sandbox && chown -R fulfilld /app/data
COPY --from=build /src/target/release/fulfilld /usr/local/bin/fulfilld
COPY config /app/config
WORKDIR /app
USER fulfilld
ENV FULFILLD__HTTP__ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["fulfilld"]
CMD ["serve"]
