"""Where experiments live: local folders, file:// and URIs, the query riding along every join (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tune_norm import storage
from tune_norm.errors import UserError

URI = "s3://bucket/tune-norm/full-1?endpoint_override=127.0.0.1:9000&scheme=http"


def test_local_folders_and_file_uris_are_paths(tmp_path):
    assert storage.path(tmp_path / "x") == tmp_path / "x"
    assert storage.path(f"file://{tmp_path}/x") == tmp_path / "x"
    assert storage.normalized(f"file://{tmp_path}/x/") == str(tmp_path / "x")
    assert not storage.is_uri(f"file://{tmp_path}") and storage.is_file_uri(f"file://{tmp_path}")
    assert storage.split(str(tmp_path / "exp")) == (str(tmp_path), "exp")


def test_uris_keep_their_query_through_joins():
    p = storage.path(URI.replace("?", "/?"))  # a trailing '/' on the key
    assert isinstance(p, storage.UriPath) and str(p) == URI
    assert str(p / "trial_1" / "result.json") == ("s3://bucket/tune-norm/full-1/trial_1/result.json"
                                                  "?endpoint_override=127.0.0.1:9000&scheme=http")
    assert (p / "trial_1").parent == p and (p / "trial_1").name == "trial_1"
    assert storage.split(URI) == ("s3://bucket/tune-norm?endpoint_override=127.0.0.1:9000&scheme=http", "full-1")
    assert storage.normalized(URI.replace("?", "/?")) == URI and storage.is_uri(URI) and storage.is_uri("gs://b/k")


def test_bad_uris_get_one_sentence():
    with pytest.raises(UserError, match="lost a '/' after its scheme"):
        storage.path(str(Path("s3://bucket/key")))  # what pathlib makes of a URI
    with pytest.raises(UserError, match="keep credentials out of it"):
        storage.path(URI + "&secret_key=abc")
    storage.check(URI)  # an endpoint is no secret
