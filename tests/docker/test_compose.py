"""docker-compose.yml and the nginx and Prometheus files it mounts, checked offline."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import crossplane
import jsonschema
import pytest
import yaml

from .deployment_files import (
    API_TARGETS,
    NGINX_CONF,
    PROMETHEUS_CONF,
    REPO_ROOT,
    compose,
    compose_services_with_target,
    dockerfile_stages,
    healthcheck_command,
    serving_port,
)


def compose_validator() -> jsonschema.Draft202012Validator:
    """The Compose Specification's schema, as vendored by the check-jsonschema package."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def test_compose_file_follows_the_compose_specification() -> None:
    errors = [
        f"{error.json_path}: {error.message}"
        for error in compose_validator().iter_errors(compose())
    ]
    assert errors == []


def test_schema_check_would_catch_a_misspelt_key() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["api"]["depends-on"] = broken["services"]["api"].pop("depends_on")
    assert not compose_validator().is_valid(broken)


def test_builds_use_the_dockerfile_and_existing_targets() -> None:
    stages = dockerfile_stages()
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), name
        assert build["target"] in stages, f"{name}: no stage {build['target']}"


def test_default_stack_serves_while_it_trains() -> None:
    """The API starts beside the training job, not after it: it serves each model as soon
    as the job exports it (issue: something served within the first minutes)."""
    default = {name for name, service in services().items() if "profiles" not in service}
    assert default == {"train", "api"}
    dependency = services()["api"]["depends_on"]["train"]
    assert dependency["condition"] == "service_started"


def test_training_writes_the_volume_that_the_api_reads() -> None:
    train_mounts = services()["train"]["volumes"]
    assert "models:/models" in train_mounts
    assert "${CELLSIGN_DATA:-../shared/data}:/data:ro" in train_mounts
    for name in ("api", "api-gpu"):
        assert services()[name]["volumes"] == ["models:/models:ro"]
    assert "models" in compose()["volumes"]


@pytest.mark.parametrize("profile", ["gpu", "monitoring", "scale", "multiworker"])
def test_each_profile_has_services(profile: str) -> None:
    assert any(profile in service.get("profiles", []) for service in services().values())


def test_gpu_api_reserves_one_nvidia_gpu() -> None:
    service = services()["api-gpu"]
    assert service["build"]["target"] == "api-gpu"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


@pytest.mark.parametrize("target", API_TARGETS)
def test_compose_healthcheck_is_the_images_own(target: str) -> None:
    for name, service in compose_services_with_target(target).items():
        assert service["healthcheck"]["test"] == ["CMD", *healthcheck_command(target)], name


def test_load_balancer_waits_for_a_healthy_api() -> None:
    balancer = services()["load-balancer"]
    assert balancer["depends_on"]["api"]["condition"] == "service_healthy"
    assert balancer["image"].startswith("nginx:")


def workers() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in services().items()
        if "multiworker" in service.get("profiles", [])
    }


def test_multiworker_services_describe_one_two_worker_cluster() -> None:
    configs = {name: json.loads(s["environment"]["TF_CONFIG"]) for name, s in workers().items()}
    assert len(configs) == 2
    clusters = [config["cluster"] for config in configs.values()]
    assert clusters[0] == clusters[1]
    addresses = clusters[0]["worker"]
    assert len({address.split(":")[1] for address in addresses}) == 1
    for name, config in configs.items():
        assert config["task"]["type"] == "worker"
        assert addresses[config["task"]["index"]].split(":")[0] == name


def test_workers_train_only_the_job_that_supports_several_workers() -> None:
    """The SIGNS custom loop runs under MultiWorkerMirroredStrategy; Keras 3's fit(), which
    trains the autoencoder, does not (keras-team/keras#20585)."""
    assert {service["command"][0] for service in workers().values()} == {"signs"}


def test_only_the_chief_worker_writes_the_shared_models_volume() -> None:
    for name, service in workers().items():
        index = json.loads(service["environment"]["TF_CONFIG"])["task"]["index"]
        output = service["command"][service["command"].index("--out") + 1]
        writes_volume = "models:/models" in service["volumes"]
        assert writes_volume == (index == 0) == (output == "/models"), name


def test_bind_mounted_files_exist() -> None:
    for name, service in services().items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).is_file(), f"{name}: {source} is missing"


def test_nginx_configuration_parses_strictly(tmp_path: Path) -> None:
    """nginx reads the file inside ``http {}`` (conf.d), so parse it there."""
    main_file = tmp_path / "nginx.conf"
    main_file.write_text(f"events {{}}\nhttp {{\n    include {NGINX_CONF};\n}}\n")
    parsed = crossplane.parse(str(main_file), strict=True)
    assert parsed["status"] == "ok", parsed["errors"]


def nginx_upstream_servers() -> list[list[str]]:
    parsed = crossplane.parse(str(NGINX_CONF), check_ctx=False)
    return [
        server["args"]
        for directive in parsed["config"][0]["parsed"]
        if directive["directive"] == "upstream"
        for server in directive["block"]
        if server["directive"] == "server"
    ]


def test_nginx_balances_over_every_api_replica() -> None:
    assert nginx_upstream_servers() == [[f"api:{serving_port()}", "resolve"]]
    mounts = services()["load-balancer"]["volumes"]
    assert f"./{NGINX_CONF.relative_to(REPO_ROOT)}:/etc/nginx/conf.d/default.conf:ro" in mounts


def test_prometheus_scrapes_each_api_replica() -> None:
    config = yaml.safe_load(PROMETHEUS_CONF.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"] == [
        {"names": ["api"], "type": "A", "port": serving_port(), "refresh_interval": "30s"}
    ]
    mounts = services()["prometheus"]["volumes"]
    assert f"./{PROMETHEUS_CONF.relative_to(REPO_ROOT)}:/etc/prometheus/prometheus.yml:ro" in mounts
