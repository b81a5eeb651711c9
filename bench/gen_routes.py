#!/usr/bin/env python3
"""Writes a large standalone configuration for the route scale benchmark (bench/scale.sh).

One GatewayClass and one Gateway with an HTTP listener; N HTTPRoutes, each with its own
hostname (r<i>.scale.test) and four rules: an Exact path, two PathPrefix matches (one of them
with a header match), a GET on /static, and a catch-all; N Services with one EndpointSlice each,
every endpoint on 127.0.0.1 at the backend port given (the Services are distinct backends with
their own balancers; they may all point at one echo server). Every `--regex-every`-th route also
has a RegularExpression path match.

    bench/gen_routes.py N OUTDIR --listen-port P --backend-port B [--regex-every K] [--first I]

Writes OUTDIR/gateway.yaml, OUTDIR/routes.yaml and OUTDIR/services.yaml, the layout of
examples/quickstart. The request for route i: `Host: r<i>.scale.test`, path /api/v1/items.
With `--first I`, the routes and Services are numbered from I, and only OUTDIR/extra.yaml is
written (routes and Services, no Gateway): more routes for a configuration written before.
"""

import argparse
import os


def route(i, namespace, regex):
    extra = ""
    if regex:
        extra = """
    - matches:
        - path: {type: RegularExpression, value: "/r%d/items/[0-9]+/detail"}
      backendRefs: [{name: svc-%d, port: 80}]""" % (i, i)
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: scale}}]
  hostnames: [r{i}.scale.test]
  rules:
    - matches:
        - path: {{type: Exact, value: /healthz}}
      backendRefs: [{{name: svc-{i}, port: 80}}]
    - matches:
        - path: {{type: PathPrefix, value: /api/v1}}
        - path: {{type: PathPrefix, value: /api/v2}}
          headers: [{{name: x-version, value: "2"}}]
      backendRefs: [{{name: svc-{i}, port: 80}}]
    - matches:
        - path: {{type: PathPrefix, value: /static}}
          method: GET
      backendRefs: [{{name: svc-{i}, port: 80}}]{extra}
    - backendRefs: [{{name: svc-{i}, port: 80}}]
"""


def service(i, namespace, backend_port):
    return f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: {namespace}}}
spec: {{ports: [{{name: http, port: 80, targetPort: {backend_port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{i}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: svc-{i}}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("routes", type=int, help="number of HTTPRoutes (and of Services)")
    parser.add_argument("outdir")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    parser.add_argument("--namespace", default="scale")
    parser.add_argument("--regex-every", type=int, default=0,
                        help="give every K-th route a RegularExpression match (0: none)")
    parser.add_argument("--first", type=int, default=None,
                        help="number from I and write only OUTDIR/extra.yaml")
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    ns = args.namespace
    first = args.first or 0
    numbers = range(first, first + args.routes)
    routes = "---\n".join(
        route(i, ns, args.regex_every > 0 and i % args.regex_every == 0) for i in numbers)
    services = "---\n".join(service(i, ns, args.backend_port) for i in numbers)
    if args.first is not None:
        with open(os.path.join(args.outdir, "extra.yaml"), "w") as f:
            f.write(routes + "---\n" + services)
        return
    with open(os.path.join(args.outdir, "gateway.yaml"), "w") as f:
        f.write(f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: novaedge}}
spec: {{controllerName: novaedge.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: scale, namespace: {ns}}}
spec:
  gatewayClassName: novaedge
  listeners: [{{name: http, protocol: HTTP, port: {args.listen_port}}}]
""")
    with open(os.path.join(args.outdir, "routes.yaml"), "w") as f:
        f.write(routes)
    with open(os.path.join(args.outdir, "services.yaml"), "w") as f:
        f.write(services)


if __name__ == "__main__":
    main()
