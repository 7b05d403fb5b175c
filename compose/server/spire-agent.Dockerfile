# A spire-agent image laid out like ghcr.io/spiffe/spire-agent (binary in /opt/spire/bin, entry point
# `spire-agent run`, uid/gid 1000), for hosts that reach no registry: the test bench
# (compose/docker-compose.server.bench.yml). The binary comes from the build context, staged by
# compose/stage-build-inputs.sh (compose/.build/spire/spire-agent). Build context: the repository root.
#
#   docker build -f compose/server/spire-agent.Dockerfile --build-arg BASE=hpcs-bench/debian:bookworm \
#     -t hpcs-bench/spire-agent:1.13.3 .
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG SPIRE_AGENT=compose/.build/spire/spire-agent
COPY ${SPIRE_AGENT} /opt/spire/bin/spire-agent
RUN /opt/spire/bin/spire-agent --version
USER 1000:1000
ENTRYPOINT ["/opt/spire/bin/spire-agent", "run"]
