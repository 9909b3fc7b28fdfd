"""``plane-guard`` command line: serve, preview, policy check, certificates, status, restart, publishes, runtime install.

Each sub-command imports its module only when it runs, so ``plane-guard runtime install`` (the
init container in every Plane pod) starts fast and does not load the web stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, TypeVar

from webhook import __version__
from webhook.core import conventions


def _serve(commands: Any) -> None:
    from webhook.serve.settings import Settings

    d = Settings()
    serve = commands.add_parser("serve", help="run the HTTPS admission webhook")
    serve.add_argument("--host", default=d.host, help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=d.port, help="HTTPS port (default 8443)")
    serve.add_argument("--cert-file", default=d.cert_file, help="serving certificate (PEM); reloaded when it changes")
    serve.add_argument("--key-file", default=d.key_file, help="private key of the serving certificate (PEM)")
    serve.add_argument("--policy", metavar="FILE", help="policy YAML (default: the embedded default policy)")
    serve.add_argument(
        "--mode",
        choices=("enforce", "audit"),
        default=d.mode,
        help="audit: never change a pod, only report what would change (overrides namespace labels)",
    )
    serve.add_argument("--workers", type=int, default=d.workers, help="server processes (default 1)")
    serve.add_argument(
        "--on-error",
        choices=("allow", "deny"),
        default=d.on_error,
        help="answer to a request that hits an internal error (default allow: never block a pod)",
    )
    serve.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger requests get 413")
    serve.add_argument("--log-level", default=d.log_level, choices=("debug", "info", "warning", "error"))
    serve.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=d.keep_alive_timeout,
        help="seconds an idle keep-alive connection stays open (default 120, above the API server's idle timeout)",
    )
    serve.add_argument(
        "--graceful-timeout", type=int, default=d.graceful_timeout, help="seconds to finish in-flight requests on SIGTERM (default 10)"
    )
    serve.add_argument(
        "--cert-check-interval", type=float, default=d.cert_check_interval, help="seconds between checks of the certificate files (default 2)"
    )
    serve.add_argument(
        "--client-ca-file",
        metavar="FILE",
        help="CA (PEM) of the API server's client certificate: the admission paths then require one (probes do not)",
    )
    limits = serve.add_argument_group("connection limits (each limit hit is logged and counted)")
    limits.add_argument(
        "--max-connections", type=int, default=d.max_connections, help="open connections per process; when full the most idle gives way (default 512)"
    )
    limits.add_argument(
        "--source-share",
        type=float,
        default=d.source_share,
        help="most of --max-connections one client address may hold; when the server is full, only addresses above an "
        "equal share give up idle connections (default 0.25)",
    )
    limits.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes, help="request line and headers; larger get 431 (default 16384)")
    limits.add_argument("--max-headers", type=int, default=d.max_headers, help="headers per request; more get 431 (default 100)")
    limits.add_argument(
        "--header-timeout", type=float, default=d.header_timeout, help="seconds for the TLS handshake, and for a request head once begun (default 5)"
    )
    limits.add_argument("--body-timeout", type=float, default=d.body_timeout, help="seconds for a request body once the head arrived (default 10)")
    limits.add_argument("--idle-timeout", type=float, default=d.idle_timeout, help="seconds a new connection may wait before its first request (default 10)")
    limits.add_argument(
        "--drain-seconds",
        type=float,
        default=d.drain_seconds,
        help="on SIGTERM, seconds of not-ready serving, each connection closed after its next answer (default 5)",
    )


def _preview(commands: Any) -> None:
    preview = commands.add_parser(
        "preview",
        help="show what the webhook would do to manifests, offline",
        description="Exit 0 when at least one Kubernetes object was previewed; 2, with a message, when nothing could be.",
    )
    preview.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="rendered YAML or JSON manifests: a file, a directory (read recursively, as helm template --output-dir "
        "writes it) or - for stdin; repeatable",
    )
    preview.add_argument("--policy", metavar="FILE", help="policy YAML (default: the embedded default policy)")
    output = preview.add_mutually_exclusive_group()
    output.add_argument(
        "--diff", action="store_true", help="print a unified diff against the lines of your own files instead of the mutated YAML"
    )
    output.add_argument(
        "--patch",
        action="store_true",
        help="print, for every object that carries a pod, the RFC 6902 patch the webhook returns for the pods the API "
        "server creates from it: with the ServiceAccount token volume (kube-api-access-*) and its mounts, unless "
        "automountServiceAccountToken is false on the pod or on a ServiceAccount in the input (one not in the input is "
        "assumed to leave it on); each entry's appliesTo says which, labelled with kind, namespace and name",
    )
    preview.add_argument(
        "-n",
        "--namespace",
        help="namespace of objects that name none, as with kubectl; an object naming another namespace is an error",
    )
    preview.add_argument(
        "--namespace-label",
        choices=("enabled", "audit", "none"),
        default="enabled",
        help=f"value of the namespace's {conventions.INJECT} label: enabled mutates, audit reports only, none is not opted in",
    )


def _policy(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = policy_commands.add_parser("check", help="validate a policy file (exit 2 when it is invalid)")
    check.add_argument("file", help="policy YAML; - for stdin")
    check.add_argument(
        "--webhook-configuration", metavar="FILE",
        help="compare the policy's images with the matchConditions of the webhook configurations in FILE "
        "(default: those this version ships)",
    )
    policy_commands.add_parser("default", help="print the embedded default policy")
    conditions = policy_commands.add_parser(
        "match-conditions", help="print the webhook configurations' matchConditions for a policy's images"
    )
    conditions.add_argument("file", nargs="?", help="policy YAML (default: the embedded default policy)")


def _certs(commands: Any) -> None:
    certs = commands.add_parser("certs", help="serving certificates")
    cert_commands = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    generate = cert_commands.add_parser("generate", help="write ca.crt, tls.crt and tls.key and print the caBundle")
    generate.add_argument("--out", default="certs", help="directory to write into (default certs/)")
    generate.add_argument("--service", default=conventions.SERVICE_NAME)
    generate.add_argument("--namespace", default=conventions.SERVICE_NAMESPACE)
    generate.add_argument("--days", type=int, default=365)
    generate.add_argument(
        "--ip", action="append", metavar="ADDRESS",
        help="also valid for this IP address (repeatable), for a webhook reached by URL, e.g. 127.0.0.1",
    )
    generate.add_argument("--force", action="store_true", help="overwrite existing files")
    bootstrap = cert_commands.add_parser(
        "bootstrap", help="in the cluster: create or renew the TLS Secret and patch the webhook caBundle"
    )
    bootstrap.add_argument("--service", default=conventions.SERVICE_NAME)
    bootstrap.add_argument("--namespace", default=conventions.SERVICE_NAMESPACE)
    bootstrap.add_argument("--secret", default=conventions.TLS_SECRET)
    bootstrap.add_argument("--mutating-webhook", default=conventions.MUTATING_WEBHOOK_CONFIGURATION)
    bootstrap.add_argument("--validating-webhook", default=conventions.VALIDATING_WEBHOOK_CONFIGURATION)
    bootstrap.add_argument("--days", type=int, default=365)
    bootstrap.add_argument("--renew-before-days", type=int, default=30)


def _status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="in the cluster: which Plane pods are guarded, what to restart, whether the webhook can be called",
        description="Reads only. Exit 0 when nothing needs attention; 1 when Plane pods are unguarded or stale "
        "in an enabled namespace, or the webhook configuration, certificate or Service is unhealthy; 2 on bad "
        "usage, missing credentials or an API server that cannot be reached or refuses the reads.",
    )
    _cluster_options(status, policy_help="compare pods with this policy instead of the one the webhook Deployment mounts")
    status.add_argument(
        "--cert-min-days", type=int, default=21, metavar="DAYS",
        help="attention when the serving certificate expires in fewer days (default 21; renewal starts at 30)",
    )
    _webhook_options(status)


def _restart(commands: Any) -> None:
    restart = commands.add_parser(
        "restart",
        help="in the cluster: restart the workloads whose Plane pods are unguarded or stale, and check the new pods",
        description="Restarts the Deployments, StatefulSets and DaemonSets that plane-guard status reports with "
        "unguarded or stale pods (as kubectl rollout restart), waits for each rollout, then checks that the new pods "
        "are guarded; stops at the first failure. Never touches a workload whose rollout is not complete or whose "
        "PodDisruptionBudget allows no disruption now. Without --yes it asks on a terminal, and changes nothing when "
        "stdin is not one. Exit 0 when everything asked for is guarded afterwards; 1 otherwise (also a dry run with "
        "work to do); 2 on bad usage, missing credentials or an API server that cannot be reached or refuses the reads.",
    )
    _cluster_options(restart, policy_help="judge pods by this policy instead of the one the webhook Deployment mounts")
    restart.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    restart.add_argument("-y", "--yes", action="store_true", help="restart without asking")
    restart.add_argument("--parallel", type=int, default=1, metavar="N", help="workloads restarted at once (default 1)")
    restart.add_argument(
        "--timeout", type=float, default=600, metavar="SECONDS",
        help="longest wait for one workload's rollout (default 600, a Deployment's default progress deadline)",
    )
    _webhook_options(restart)


def _cluster_options(parser: Any, *, policy_help: str) -> None:
    """The options ``status`` and ``restart`` share: credentials, namespaces, output, policy."""
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    parser.add_argument("--context", help="kubeconfig context (default: the current context)")
    parser.add_argument(
        "-n", "--namespace", action="append", metavar="NAMESPACE",
        help=f"only this namespace (repeatable; default: every namespace labelled {conventions.INJECT}=enabled or =audit)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table (default) or json")
    parser.add_argument("--policy", metavar="FILE", help=policy_help)


def _webhook_options(parser: Any) -> None:
    """Where the webhook runs, for the commands that read its Deployment and configurations."""
    parser.add_argument("--webhook-namespace", default=conventions.SERVICE_NAMESPACE, help="namespace of the webhook Deployment")
    parser.add_argument("--webhook-deployment", default=conventions.SERVICE_NAME, help="name of the webhook Deployment")
    parser.add_argument("--mutating-webhook", default=conventions.MUTATING_WEBHOOK_CONFIGURATION)
    parser.add_argument("--validating-webhook", default=conventions.VALIDATING_WEBHOOK_CONFIGURATION)

def _publishes(commands: Any) -> None:
    publishes = commands.add_parser(
        "publishes",
        help="from Plane pods' logs: the publishes that raised, may be lost, or were slow, per workload and pod",
        description="Reads the lines plane-guard's hook writes in guarded Plane processes, e.g. kubectl logs -n plane "
        "-l app.name=plane-plane-api --prefix --since 1h | plane-guard publishes. Exit 0 when nothing raised or may be "
        "lost; 1 when a publish raised, continued past its bound, stayed unconfirmed, has an unknown outcome, or lines "
        "went unreported; 2 on bad usage or an unreadable file.",
    )
    publishes.add_argument("file", nargs="*", metavar="FILE", help="log files, in order (default, or -: stdin)")
    publishes.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table (default) or json")


def _runtime(commands: Any) -> None:
    runtime = commands.add_parser("runtime", help="the files plane-guard delivers into Plane containers")
    runtime_commands = runtime.add_subparsers(dest="runtime_command", required=True, metavar="COMMAND")
    install = runtime_commands.add_parser("install", help="copy the runtime wrapper and hook into DIR (init container)")
    install.add_argument("dir", help="destination directory, normally the shared emptyDir volume")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plane-guard",
        description="Admission webhook that stops Plane from silently losing Celery tasks.",
    )
    parser.add_argument("--version", action="version", version=f"plane-guard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_serve, _preview, _policy, _certs, _status, _restart, _publishes, _runtime):
        add(commands)
    return parser


T = TypeVar("T")


def _options(cls: type[T], args: argparse.Namespace) -> T:
    """The command's typed options from the parsed arguments of the same names (lists become tuples)."""
    values = {}
    for name in (f.name for f in dataclasses.fields(cls)):  # type: ignore[arg-type]
        value = getattr(args, name)
        values[name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from webhook.serve import app
        from webhook.serve.settings import Settings

        return app.serve_command(_options(Settings, args))
    if args.command == "preview":
        from webhook.ops import preview

        return preview.preview_command(_options(preview.PreviewOptions, args))
    if args.command == "policy":
        from webhook.ops import policy_commands

        if args.policy_command == "default":
            return policy_commands.default_command()
        if args.policy_command == "match-conditions":
            return policy_commands.match_conditions_command(args.file)
        return policy_commands.check_command(args.file, args.webhook_configuration)
    if args.command == "certs":
        from webhook.ops import certs

        if args.certs_command == "generate":
            return certs.generate_command(_options(certs.GenerateOptions, args))
        return certs.bootstrap_command(_options(certs.BootstrapOptions, args))
    if args.command == "status":
        from webhook.ops import status

        return status.status_command(_options(status.StatusOptions, args))
    if args.command == "restart":
        from webhook.ops import restart

        return restart.restart_command(_options(restart.RestartOptions, args))
    if args.command == "publishes":
        from webhook.ops import publishes

        return publishes.publishes_command(publishes.Options(tuple(args.file), args.output))
    from webhook import runtime

    return runtime.install_command(args.dir)


if __name__ == "__main__":
    sys.exit(main())
