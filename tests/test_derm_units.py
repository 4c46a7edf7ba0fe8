"""Derm pieces without a server: gs:// parsing, instance classification, error mapping, the
stand-in's signature, the Truss config's weights."""

from pathlib import Path

import pytest
import yaml

from vfm_serving.apis import vertex_derm as api
from vfm_serving.errors import (
    ConflictingInputs,
    FetchFailed,
    ImageDecodeError,
    ImageTooLarge,
    InternalError,
    InvalidBase64,
    InvalidGcsUri,
    InvalidRequest,
    MissingImage,
    ModelError,
    TooManyImages,
)
from vfm_serving.inputs.gcs import auth_headers, download_url, parse_gcs_uri
from vfm_serving.inputs.sources import BASE64, GCS, ImageSource, source_bytes
from vfm_serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("uri,expected", [
    ("gs://bucket/a.png", ("bucket", "a.png")),
    ("gs://my-bucket.example/dir/sub dir/x y.jpeg", ("my-bucket.example", "dir/sub dir/x y.jpeg")),
    ("gs://b_1/a/b/c.tar.gz", ("b_1", "a/b/c.tar.gz")),
])
def test_valid_gcs_uris(uri, expected):
    assert parse_gcs_uri(uri) == expected


@pytest.mark.parametrize("uri", [
    None, 3, "", "gs://bucket", "gs://bucket/", "gs://bucket/noext", "gs://bucket/dir/",
    "https://bucket/a.png", "gs://Upper/a.png", "gs://ab/a.png", "gs://-bucket/a.png",
    "gs://bucket-/a.png", "gs://bu..cket/a.png", "gs://bu!cket/a.png", "gs://b/a\n.png",
    "gs://" + "a" * 64 + "/x.png", "gs://bucket/" + "a" * 1030 + ".png",
])
def test_invalid_gcs_uris(uri):
    with pytest.raises(InvalidGcsUri):
        parse_gcs_uri(uri)


def test_download_url_percent_encodes_the_whole_object_name():
    url = download_url("bkt", "dir/sub dir/a+b?.png", "http://127.0.0.1:9/")
    assert url == "http://127.0.0.1:9/download/storage/v1/b/bkt/o/dir%2Fsub%20dir%2Fa%2Bb%3F.png" \
                  "?alt=media"


def test_auth_headers():
    assert auth_headers(None) == {} and auth_headers("") == {}
    assert auth_headers("abc") == {"Authorization": "Bearer abc"}
    for bad in (3, ["t"], "a\nb"):
        with pytest.raises(InvalidRequest) as info:
            auth_headers(bad)
        assert "a\nb" not in info.value.message


def _api(**settings) -> api.VertexDermApi:
    identity = api.VertexIdentity("d", "m", "v", "n", stand_in=True, max_batch_size=4)
    return api.VertexDermApi(ServingSettings(**settings), identity)


def test_instance_presence_semantics():
    sources = _api().parse({"instances": [
        {"input_bytes": "x", "bearer_token": "t"},
        {"gcs_uri": "gs://b/a.png", "bearer_token": "secret-t"},
        {"input_bytes": "x", "gcs_uri": None},  # null counts as present
        {}, {"extensions": {}}, {"bearer_token": "t"}, "abc", None, [1]]}).items
    assert sources[0] == ImageSource(BASE64, "x") and sources[0].bearer_token is None
    assert sources[1].kind == GCS and sources[1].bearer_token == "secret-t"
    assert "secret-t" not in repr(sources[1])
    assert isinstance(sources[2], ConflictingInputs)
    assert all(isinstance(s, MissingImage) for s in sources[3:])


def test_null_gcs_uri_is_a_retrieval_error():
    source = _api().parse({"instances": [{"gcs_uri": None}]}).items[0]
    with pytest.raises(InvalidGcsUri):
        source_bytes(source, ServingSettings())


def test_parse_instances():
    parsed = _api(max_images_per_request=2).parse({"instances": [{}, 1], "parameters": {}})
    assert len(parsed.items) == 2 and not parsed.fail_fast
    for body in ([], "x", None, {}, {"instances": None}, {"instances": {}}, {"instances": []},
                 {"instances": [{}], "parameters": 3},
                 {"instances": [{}], "parameters": {"encoding_format": "hex"}}):
        with pytest.raises(InvalidRequest):
            _api(max_images_per_request=2).parse(body)
    with pytest.raises(TooManyImages):
        _api(max_images_per_request=2).parse({"instances": [{}, {}, {}]})


@pytest.mark.parametrize("error,description", [
    (ConflictingInputs("m"), api.DESCRIPTION_CONFLICT),
    (MissingImage("m"), api.DESCRIPTION_MISSING),
    (InvalidBase64("m"), api.DESCRIPTION_RETRIEVE),
    (FetchFailed("m"), api.DESCRIPTION_RETRIEVE),
    (InvalidGcsUri("m"), api.DESCRIPTION_RETRIEVE),
    (ImageTooLarge("m"), api.DESCRIPTION_RETRIEVE),
    (InvalidRequest("m"), api.DESCRIPTION_RETRIEVE),
    (ImageDecodeError("m"), api.DESCRIPTION_INTERNAL),
    (ModelError("m"), api.DESCRIPTION_INTERNAL),
    (InternalError("m"), api.DESCRIPTION_INTERNAL),
])
def test_error_mapping(error, description):
    assert api.error_prediction(error) == {"error": {"description": description,
                                                     "code": error.code}}


def test_google_wording_is_exact():
    assert api.DESCRIPTION_MISSING == ("Failed to get prediction for instance. Reason: Missing "
                                       "required `input_bytes` or `gcs_uri` key in request "
                                       "instance.")
    assert api.DESCRIPTION_EXAMPLE == ("Failed to get prediction for instance. Reason: Failed to "
                                       "process image to TF example.")


def test_standin_has_the_real_signature():
    import tensorflow as tf

    from tools.manifest import prepare_standin

    loaded = tf.saved_model.load(prepare_standin("derm")["DERM_SAVEDMODEL_DIR"])
    signature = loaded.signatures["serving_default"]
    _, kwargs = signature.structured_input_signature
    assert set(kwargs) == {"inputs"}
    assert kwargs["inputs"].dtype == tf.string and kwargs["inputs"].shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert set(outputs) == {"embedding"}
    assert outputs["embedding"].dtype == tf.float32
    assert outputs["embedding"].shape.as_list() == [None, 6144]


def test_derm_config_weights_and_requirements():
    raw = yaml.safe_load((ROOT / "derm" / "config.yaml").read_text())
    weights = raw["weights"][0]
    assert weights["source"].startswith("hf://google/derm-foundation@")
    assert weights["auth_secret_name"] == "hf_access_token"
    assert weights["mount_location"] == raw["model_metadata"]["weights_dir"]
    assert raw["resources"]["accelerator"] == "T4"
    requirements = (ROOT / "derm" / "requirements.txt").read_text()
    assert "tensorflow[and-cuda]==" in requirements
    settings = ServingSettings.from_env(
        {k: v for k, v in raw["environment_variables"].items() if k.startswith("VFM_")})
    assert settings.max_images_per_request >= 1 and settings.max_batch_size >= 1
