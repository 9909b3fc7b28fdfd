"""``make image-report``: what plane-guard costs a node, measured on the images ``make image`` builds.

* Image sizes, uncompressed (as stored) and compressed (gzip layers, config and manifest, as a
  registry stores them and a node downloads them: written by ``podman push`` to an OCI layout).
* What the init container makes each node pull: the whole init-container image, since it shares
  no layer with Plane's image. Both candidates: the full image and the runtime image.
* The pod start-up time plane-guard adds: a chart-shaped Plane API pod played with
  ``podman kube play``, from the play until the first line of the image's own entrypoint runs
  (a marker on a hostPath), median of N guarded starts minus the median of N unmutated ones,
  alternating. The guarded pod runs the init container (with the policy's CPU and memory
  limits) and the wrapper, including its AMQP URL merge. For scale, the same pod with an init
  container that only runs ``true``: what any init container costs on this container engine;
  and the runtime image with a CPU limit of 1 instead of the policy's: what the limit costs
  (the container runtime's own start-up is charged to the container's CPU quota).

Goals: the init container adds at most 10 MB to pull and at most 300 ms to start-up.
The last line: ``image_mb=X runtime_pull_mb=Y startup_added_ms=Z`` (compressed, MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.containers import images as test_images
from tests.containers.plane import fixtures, policy_with_runtime
from tests.pods import Pod, PodError, podman, remove_stale, wait_for
from tools.images import Unavailable
from webhook.core.mutation import apply_patch, mutate_pod

PULL_GOAL_MB = 10.0
STARTUP_GOAL_MS = 300.0
CASE = "ce-plane-api"
#: Never contacted: the pod is removed as soon as its entrypoint has started.
URL = "amqp://plane:bench-password@127.0.0.1:5672/plane-guard-bench"
FIRST_STEP = "entrypoint-start"


def mb(size: int) -> float:
    return size / 1e6


def sizes(image: str) -> tuple[int, int]:
    """(uncompressed bytes as stored, compressed bytes a node pulls)."""
    uncompressed = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    with tempfile.TemporaryDirectory(prefix="plane-guard-oci-") as scratch:
        podman("push", "--compression-format", "gzip", image, f"oci:{scratch}/layout", timeout=600)
        blobs = Path(scratch) / "layout" / "blobs" / "sha256"
        index = json.loads((Path(scratch) / "layout" / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads((blobs / manifest_digest).read_text())
        compressed = (blobs / manifest_digest).stat().st_size + manifest["config"]["size"]
        compressed += sum(layer["size"] for layer in manifest["layers"])
    return uncompressed, compressed


@dataclass(frozen=True)
class Configuration:
    """How the measured pod starts: ``unmutated``, ``guarded`` or with a ``noop-init`` container."""

    kind: str
    runtime_image: str | None = None
    init_cpu_limit: str | None = None  # None: the policy's


def _pod(configuration: Configuration, markers: Path) -> tuple[dict, list[dict]]:
    """The API pod for a configuration, its markers on a hostPath."""
    runtime_image = configuration.runtime_image
    pods, objects = fixtures(URL, port=0)
    spec = pods[CASE]
    for volume in spec["spec"]["volumes"]:
        if volume["name"] == "test-state":
            volume.pop("emptyDir")
            volume["hostPath"] = {"path": str(markers), "type": "Directory"}
    if runtime_image:
        mutated = apply_patch(spec, mutate_pod(spec, policy_with_runtime(runtime_image)).patch)
        (init,) = mutated["spec"]["initContainers"]
        if configuration.kind == "guarded":
            if configuration.init_cpu_limit:
                init["resources"]["limits"]["cpu"] = configuration.init_cpu_limit
            return mutated, objects
        spec["spec"]["initContainers"] = [{**init, "command": ["/bin/busybox", "true"], "volumeMounts": []}]
    return spec, objects


def start_ms(configuration: Configuration, app_image: str, scratch: Path) -> float:
    """Milliseconds from `podman kube play` until the image's entrypoint wrote its first line."""
    markers = Path(tempfile.mkdtemp(dir=scratch))
    os.chmod(markers, 0o777)
    spec, objects = _pod(configuration, markers)
    pod = Pod(spec, objects, images={spec["spec"]["containers"][0]["image"]: app_image})
    marker_file = markers / "markers"
    started = time.perf_counter()
    try:
        pod.start(timeout=120)
        wait_for(lambda: marker_file.exists() and FIRST_STEP in marker_file.read_text(), timeout=60, interval=0.005,
                 what="the entrypoint's first step")
        return (time.perf_counter() - started) * 1000
    finally:
        pod.remove(grace=0)


def startup(images: test_images.Images, runs: int, scratch: Path) -> dict[str, list[float]]:
    """Start-up times by configuration, the configurations alternating so drift hits all alike."""
    configurations = {
        "unmutated": Configuration("unmutated"),
        "init `true`": Configuration("noop-init", images.runtime),
        "runtime image": Configuration("guarded", images.runtime),
        "runtime, cpu 1": Configuration("guarded", images.runtime, init_cpu_limit="1"),
        "full image": Configuration("guarded", images.full),
    }
    for configuration in configurations.values():  # warm-up: page cache, first container of an image
        start_ms(configuration, images.app, scratch)
    times: dict[str, list[float]] = {name: [] for name in configurations}
    for _ in range(runs):
        for name, configuration in configurations.items():
            times[name].append(start_ms(configuration, images.app, scratch))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.image_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="pod starts per configuration (default 10)")
    args = parser.parse_args()
    try:
        remove_stale()
        images = test_images.ensure()
    except (Unavailable, PodError) as exc:
        print(f"image-report: cannot run: {exc}", file=sys.stderr)
        return 2

    full, runtime = sizes(images.full), sizes(images.runtime)
    print(f"{'image':<48} | uncompressed MB | compressed MB (pulled)")
    for label, (raw, packed) in (("plane-guard (full: webhook, bootstrap, runtime)", full),
                                 ("plane-guard-runtime (init container only)", runtime)):
        print(f"{label:<48} | {mb(raw):>15.1f} | {mb(packed):>10.2f}")
    print()
    print("what the init container makes each node pull (no layer shared with Plane's image):")
    print(f"  full image {mb(full[1]):.2f} MB, runtime image {mb(runtime[1]):.2f} MB")
    print()

    with tempfile.TemporaryDirectory(prefix="plane-guard-startup-") as scratch:
        times = startup(images, args.runs, Path(scratch))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"pod start-up, `podman kube play` until the entrypoint runs (median of {args.runs}, ms):")
    for name, median in medians.items():
        added = "" if name == "unmutated" else f"  (+{median - medians['unmutated']:.0f})"
        spread = f"min {min(times[name]):.0f}, max {max(times[name]):.0f}"
        print(f"  {name:<14} {median:>6.0f}{added:<8} {spread}")
    added = medians["runtime image"] - medians["unmutated"]
    pull = mb(runtime[1])
    print()
    print(f"goals with the runtime image: pull <= {PULL_GOAL_MB:g} MB ({'met' if pull <= PULL_GOAL_MB else 'MISSED'}), "
          f"start-up added <= {STARTUP_GOAL_MS:g} ms ({'met' if added <= STARTUP_GOAL_MS else 'MISSED'})")
    print(f"image_mb={mb(full[1]):.1f} runtime_pull_mb={pull:.2f} startup_added_ms={added:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
