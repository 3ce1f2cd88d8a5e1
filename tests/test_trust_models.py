"""Tampered model files are refused with a ModelFileError naming the field (#23)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import tiny_cnn
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.checkpoint import ModelFileError, read_header
from napari_brainfeatures.models.cnn import CNNConfig, load_cnn, save_cnn
from napari_brainfeatures.models.schema import MAX_PARAMETERS
from napari_brainfeatures.models.vae import BetaVAE, VAEConfig, load_vae, save_vae


@pytest.fixture
def cnn_file(tmp_path):
    return save_cnn(tmp_path / "m", tiny_cnn(), classes=ClassTable.from_names(["a", "b", "c"]))


def _split(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _write(path, header, body):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)
    return path


def _with_config(path, out, **changes):
    header, body = _split(path)
    config = json.loads(header["__metadata__"]["config"]) | changes
    header["__metadata__"]["config"] = json.dumps(config)
    return _write(out, header, body)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda h: [1, 2], "JSON list, not an object"),
        (lambda h: {**h, "__metadata__": [1]}, "'__metadata__' is a list"),
        (lambda h: {**h, "__metadata__": {**h["__metadata__"], "meta": '"abc"'}}, "'meta'"),
        (lambda h: {**h, "__metadata__": {**h["__metadata__"], "meta": 5}}, "'meta'"),
        (lambda h: {**h, "__metadata__": {**h["__metadata__"], "config": "[1]"}}, "'config'"),
        (lambda h: {**h, "__metadata__": {**h["__metadata__"], "kind": ["x"]}}, "'kind'"),
        (lambda h: {k: v for k, v in h.items() if k != "convs.0.weight"}, "missing"),
        (lambda h: {**h, "convs.0.bias": {**h["convs.0.bias"], "dtype": "F64"}}, "is 'F64'"),
        (lambda h: {**h, "convs.0.bias": {**h["convs.0.bias"], "shape": [3]}}, "has shape"),
        (lambda h: {**h, "fcs.0.bias": {**h["fcs.0.bias"], "data_offsets": [0, 10**9]}}, "byte"),
    ],
)
def test_tampered_header_is_a_model_file_error(cnn_file, tmp_path, mutate, match):
    header, body = _split(cnn_file)
    bad = _write(tmp_path / "bad.safetensors", mutate(header), body)
    with pytest.raises(ModelFileError, match=match):
        load_cnn(bad)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("channels", [-4, 8, 8], r"'channels\[0\]' must be in \[1, 4096\], got -4"),
        ("fc", [10**6, 8], r"'fc\[0\]' must be in"),
        ("patch_size", "32", "'patch_size' must be an integer"),
        ("n_classes", True, "'n_classes' must be an integer"),
        ("dropout", float("nan"), "'dropout' must be"),
        ("kernels", [5, 3], "one entry per conv layer"),
        ("extra", [], "'extra' must be a JSON object"),
        ("bogus", 1, "unknown CNN config keys"),
    ],
)
def test_bad_config_field_is_named(cnn_file, tmp_path, field, value, match):
    bad = _with_config(cnn_file, tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(ModelFileError, match=match):
        load_cnn(bad)


def test_huge_network_refused_before_allocating(cnn_file, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: built.append(self))
    bad = _with_config(cnn_file, tmp_path / "bad.safetensors", fc=[60000, 60000])
    with pytest.raises(ModelFileError, match=f"more than the {MAX_PARAMETERS:,}"):
        load_cnn(bad)
    assert all(m.weight.is_meta for m in built)  # counted on the meta device only


def test_truncated_and_length_tampered_files(cnn_file, tmp_path):
    data = cnn_file.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for cut in (0, 7, 8, 12, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_cnn(bad)
    bad.write_bytes((2**62).to_bytes(8, "little") + data[8:])
    with pytest.raises(ModelFileError):
        read_header(bad)


def test_payloads_are_never_executed(cnn_file, tmp_path):
    sentinel = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    header, body = _split(cnn_file)
    md = header["__metadata__"]
    evil = f"c__builtin__\nopen\n(S{str(sentinel)!r}\nS'w'\ntR.".encode()
    files = {
        "pickle": evil,
        "body": None,
        "kind": {**header, "__metadata__": {**md, "kind": code}},
        "meta": {**header, "__metadata__": {**md, "meta": json.dumps({"classes": code})}},
        "config": {**header, "__metadata__": {**md, "config": code}},
    }
    for name, content in files.items():
        path = tmp_path / f"{name}.safetensors"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is None:
            _write(path, header, evil + body[len(evil) :])
        else:
            _write(path, content, body)
        try:
            load_cnn(path)
        except ModelFileError:
            pass
    assert not sentinel.exists()


def test_vae_header_checked_too(tmp_path):
    cfg = VAEConfig(image_shape=(32, 32), n_down=2, channels=4, latent_dim=2, fc=(8,))
    path = save_vae(tmp_path / "v", BetaVAE(cfg))
    for field, value in (("latent_dim", 0), ("channels", -1), ("beta", "x"), ("fc", [])):
        bad = _with_config(path, tmp_path / "bad.safetensors", **{field: value})
        with pytest.raises(ModelFileError, match=f"'{field}"):
            load_vae(bad)


def test_configs_check_their_fields_from_python():
    with pytest.raises(ValueError, match=r"'channels\[0\]' must be in \[1, 4096\], got -1"):
        CNNConfig(channels=(-1, 8, 8, 8))
    with pytest.raises(ValueError, match="'n_down' must be in"):
        VAEConfig(n_down=40)
    import numpy as np

    assert CNNConfig(patch_size=np.int64(64)).patch_size == 64  # numpy integers are fine


def test_pca_fields_describe_a_saved_baseline(tmp_path):
    from napari_brainfeatures.latent.pca import PCABaseline
    from napari_brainfeatures.models.schema import PCA_FIELDS, check_fields

    images = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    path = PCABaseline(2).fit(images).save(tmp_path / "p")
    config = read_header(path)["config"]
    check_fields(config, PCA_FIELDS, "PCA")  # what latent.pca writes passes
    for field, value in (("image_shape", [-1, 8]), ("whiten", "yes"), ("latent_dim", 10**9)):
        with pytest.raises(ValueError, match=f"'{field}"):
            check_fields({**config, field: value}, PCA_FIELDS, "PCA")
