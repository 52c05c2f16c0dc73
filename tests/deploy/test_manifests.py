"""deploy/k8s: valid Kubernetes objects, and KEDA objects that scale real pools on real queues.

Offline: Kubernetes objects are checked against the schemas bundled with the
kubernetes-validate package; KEDA's custom resources, which it has no schema for, are
checked structurally here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.files import (
    K8S,
    Manifest,
    cluster_config,
    containers,
    dockerfile,
    longest_task_s,
    manifests,
    of_kind,
    pools,
    readme_secrets,
    sample_config,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the dev extra)")

#: The oldest Kubernetes minor version the manifests are meant to apply to.
KUBERNETES_VERSION = "1.29"
KEDA_API = "keda.sh/v1alpha1"
WORKER_PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def core_objects() -> list[Manifest]:
    return [m for m in manifests() if not m.body["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize("manifest", core_objects(), ids=str)
def test_every_kubernetes_object_matches_its_schema(manifest: Manifest) -> None:
    # strict: an unknown or misspelt field fails, instead of being dropped by the API server
    kubernetes_validate.validate(manifest.body, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    import yaml

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "turnout.yaml"}
    assert set(kustomization["resources"]) == files
    # and the pods' ConfigMap is generated from turnout.yaml, under the name they mount
    (generated,) = kustomization["configMapGenerator"]
    assert generated["name"] == "turnout-config" and generated["files"] == ["turnout.yaml"]


@pytest.mark.parametrize("pool", pools(sample_config()))
def test_each_pool_has_a_worker_deployment_and_a_scaled_object(pool: str) -> None:
    deployment = of_kind("Deployment")[f"turnout-{pool}"]
    (worker,) = containers(deployment)
    assert worker["args"][:3] == ["worker", "--pool", pool]
    assert "replicas" not in deployment.body["spec"], "KEDA owns the replica count"
    scaled = [s for s in of_kind("ScaledObject").values() if s.body["spec"]["scaleTargetRef"]["name"] == deployment.name]
    assert len(scaled) == 1


@pytest.mark.parametrize("scaled", of_kind("ScaledObject").values(), ids=str)
def test_a_scaled_object_scales_its_pool_on_that_pools_redis_list(scaled: Manifest) -> None:
    # Given the queues of the sample config, which the cluster config shares
    queues = pools(sample_config())
    spec = scaled.body["spec"]
    # Then it is a KEDA object aimed at an existing Deployment ...
    assert scaled.body["apiVersion"] == KEDA_API
    target = of_kind("Deployment")[spec["scaleTargetRef"]["name"]]
    pool = containers(target)[0]["args"][2]
    # ... scaling on the length of the very lists that Deployment's workers consume, every one
    # of them (a guard left by a pod that died must wake a pool scaled to zero)
    triggers = spec["triggers"]
    assert all(trigger["type"] == "redis" for trigger in triggers)
    assert [trigger["metadata"]["listName"] for trigger in triggers] == queues[pool]
    assert all(int(trigger["metadata"]["listLength"]) > 0 for trigger in triggers)
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


@pytest.mark.parametrize("scaled", of_kind("ScaledObject").values(), ids=str)
def test_a_scaled_object_knows_where_redis_is(scaled: Manifest) -> None:
    for trigger in scaled.body["spec"]["triggers"]:
        if {"address", "addressFromEnv", "host", "hostFromEnv"} & set(trigger["metadata"]):
            continue
        auth = of_kind("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
        assert auth.body["apiVersion"] == KEDA_API
        parameters = {ref["parameter"] for ref in auth.body["spec"]["secretTargetRef"]}
        assert "address" in parameters or {"host", "port"} <= parameters


def test_every_secret_the_manifests_read_is_one_the_readme_creates() -> None:
    # Given the Secrets the README's kubectl commands create (the manifests define none)
    created = readme_secrets()
    assert not of_kind("Secret")
    # Then every key a pod or KEDA reads is among them
    for name, key in referenced_secret_keys():
        assert name in created, f"Secret {name} is used but the README does not create it"
        assert key is None or key in created[name], f"Secret {name} has no key {key} in the README"


def referenced_secret_keys() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    for deployment in of_kind("Deployment").values():
        for container in containers(deployment):
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    ref = env["valueFrom"]["secretKeyRef"]
                    refs.append((ref["name"], ref["key"]))
            refs += [(source["secretRef"]["name"], None) for source in container.get("envFrom", []) if "secretRef" in source]
    for auth in of_kind("TriggerAuthentication").values():
        refs += [(ref["name"], ref["key"]) for ref in auth.body["spec"]["secretTargetRef"]]
    return refs


def test_only_tier_pools_receive_the_provider_keys() -> None:
    tiers = {tier.name for tier in sample_config().tiers}
    for deployment in of_kind("Deployment").values():
        for container in containers(deployment):
            gets_keys = any(s.get("secretRef", {}).get("name") == "turnout-provider-keys" for s in container.get("envFrom", []))
            is_tier_pool = container["args"][0] == "worker" and container["args"][2] in tiers
            assert gets_keys == is_tier_pool, str(deployment)


@pytest.mark.parametrize("pool", pools(sample_config()))
def test_worker_probes_ask_the_pods_own_celery_node_to_answer(pool: str) -> None:
    (worker,) = containers(of_kind("Deployment")[f"turnout-{pool}"])
    for probe in WORKER_PROBES:
        command = worker[probe]["exec"]["command"]
        assert command[:4] == ["turnout", "worker-ping", "--pool", pool], probe
        assert worker[probe]["timeoutSeconds"] >= 5, "a Python start and a broker round trip take seconds"


def test_tier_pods_get_longer_to_stop_than_their_longest_task(tmp_path: Path) -> None:
    config = cluster_config(tmp_path)
    for tier in config.tiers:
        spec = of_kind("Deployment")[f"turnout-{tier.name}"].body["spec"]["template"]["spec"]
        longest = sum(d.timeout_s for d in tier.deployments)
        assert spec["terminationGracePeriodSeconds"] > longest, tier.name
    assert longest_task_s(config) > 0


def test_the_cluster_config_is_valid_and_keeps_the_sample_queues(tmp_path: Path) -> None:
    # When the ConfigMap's turnout.yaml is loaded as a pod would load it
    config = cluster_config(tmp_path)
    # Then it names the queues that the ScaledObjects watch, and holds no key itself
    assert pools(config) == pools(sample_config())
    for tier in config.tiers:
        assert all(d.api_key and d.api_key.startswith("os.environ/") for d in tier.deployments)


@pytest.mark.parametrize("deployment", of_kind("Deployment").values(), ids=str)
def test_every_container_has_requests_limits_and_runs_as_the_image_user(deployment: Manifest) -> None:
    image_user = dict(dockerfile())["USER"].split(":")[0]
    pod = deployment.body["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user
    for container in containers(deployment):
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{container['name']} {bound}"
        assert container["readinessProbe"] and container["livenessProbe"]


@pytest.mark.parametrize("name", ["turnout-flower", "turnout-metrics"])
def test_flower_and_metrics_have_a_service_on_their_port(name: str) -> None:
    (container,) = containers(of_kind("Deployment")[name])
    service = of_kind("Service")[name].body["spec"]
    port = container["args"][container["args"].index("--port") + 1]
    assert [p["containerPort"] for p in container["ports"]] == [int(port)]
    assert service["selector"].items() <= of_kind("Deployment")[name].body["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["ports"]} == {p["name"] for p in container["ports"]}
