"""The JSON Schemas in schemas/ (the client's own files): valid JSON Schema, the requests the
clients build validate, the real servers' responses validate, and bodies the servers refuse are
refused by the schemas too."""

import base64
import json
from pathlib import Path

import jsonschema
import pytest
import requests

from client_helpers import b64, random_pngs
from vfm_client import schemas
from vfm_client.errors import SchemaError

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"{api}.{kind}" for api in schemas.APIS for kind in schemas.KINDS] + ["error.response"]


@pytest.mark.parametrize("name", NAMES)
def test_schema_files_are_valid_and_published(name):
    published = ROOT / "schemas" / f"{name}.schema.json"
    schema = json.loads(published.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == schemas.load_schema(name)  # the package ships the published files


def test_readme_shows_the_midnight_request_schema_as_published():
    readme = (ROOT / "README.md").read_text()
    after = readme.split("`schemas/midnight.request.schema.json`:\n\n```json\n", 1)[1]
    assert json.loads(after.split("\n```", 1)[0]) == schemas.load_schema("midnight.request")


def test_manifest_examples_validate():
    from tools.manifest import load_manifest, resolve_example
    apis = {"midnight": "midnight", "derm": "derm", "safe_detector": "safe"}
    for truss, entry in load_manifest()["trusses"].items():
        for example in entry["examples"]:
            body = resolve_example(example["request"])
            if truss == "derm" and any(i.get("input_bytes") == "not base64!"
                                       for i in body["instances"]):
                continue  # a deliberately bad instance (per-instance error example)
            schemas.validate(apis[truss], "request", body)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
@pytest.mark.parametrize("encoding", [{}, {"encoding_format": "base64"},
                                      {"encoding_format": "base64", "embedding_dtype": "float16"}])
def test_midnight_responses_validate(midnight, task, encoding):
    body = {"image_base64_list": [b64(i) for i in random_pngs(2, seed=41)], "task": task,
            **encoding}
    schemas.validate("midnight", "request", body)
    reply = requests.post(midnight.predict_url, json=body, timeout=60)
    assert reply.status_code == 200
    schemas.validate("midnight", "response", reply.json())


MIDNIGHT_REFUSED = [
    {},
    {"image_base64": "eA==", "image_url": "http://example.com/a.png"},
    {"image_base64_list": []},
    {"image_base64": "eA==", "task": "detection"},
    {"image_base64": "eA==", "batch_size": 0},
    {"image_base64": "eA==", "unknown": 1},
    {"image_base64": "eA==", "encoding_format": "hex"},
    {"image_base64": "eA==", "embedding_dtype": "float64"},
    {"image_urls": ["ftp://example.com/a.png"]},
]


@pytest.mark.parametrize("body", MIDNIGHT_REFUSED)
def test_bodies_the_server_refuses_the_schema_refuses(midnight, body):
    reply = requests.post(midnight.predict_url, json=body, timeout=60)
    assert reply.status_code == 400
    schemas.validate("error", "response", reply.json())
    with pytest.raises(SchemaError):
        schemas.validate("midnight", "request", body)


def test_derm_and_safe_shapes():
    image = base64.b64encode(random_pngs(1)[0]).decode()
    schemas.validate("derm", "request", {"instances": [
        {"input_bytes": image}, {"gcs_uri": "gs://b/o.png", "bearer_token": "t"}],
        "parameters": {"encoding_format": "base64"}})
    for bad in ({"instances": []}, {"instances": [{"input_bytes": image, "gcs_uri": "gs://b/o.png"}]},
                {"instances": [{"gcs_uri": "gs://bucket-only"}]}, {"instances": [{}]}):
        with pytest.raises(SchemaError):
            schemas.validate("derm", "request", bad)
    schemas.validate("derm", "response", {
        "predictions": [{"embedding": [0.5] * 6144}, {"embedding": "AAAAAA=="},
                        {"error": {"description": "C", "code": "fetch_failed"}}],
        "deployedModelId": "d", "model": "m", "modelVersionId": "v", "modelDisplayName": "n",
        "metadata": {}})
    schemas.validate("safe", "request", {"image": {"mediaType": "IMAGE/JPG", "data": image}})
    with pytest.raises(SchemaError):
        schemas.validate("safe", "request", {"image": {"mediaType": "image/gif", "data": image}})
    schemas.validate("safe", "response", {"logprobs": [-1.0, -2.0, -3.0, -0.5],
                                          "localizationMask": {"mediaType": "image/png",
                                                               "data": image}})
    with pytest.raises(SchemaError):
        schemas.validate("safe", "response", {"logprobs": [0.0, 0.0, 0.0]})
