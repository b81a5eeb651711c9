# Builds the novaedge binary in a Rust image and ships it in a slim Debian image. The one
# binary is both the controller (`novaedge controller`) and the agent (`novaedge agent`); see
# config/.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p novaedge

FROM debian:bookworm-slim
RUN useradd --system --uid 65532 novaedge
COPY --from=build /src/target/release/novaedge /usr/local/bin/novaedge
USER 65532
ENTRYPOINT ["/usr/local/bin/novaedge"]
