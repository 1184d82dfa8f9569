from app import app
from chalicelib import openapi


def test_openapi_documents_every_route() -> None:
    paths = openapi.document("http://x", "0")["paths"]
    for path, methods in app.routes.items():
        for method in methods:
            assert method.lower() in paths.get(path, {}), f"{method} {path} missing from openapi"


def test_openapi_lists_no_route_the_app_lacks() -> None:
    paths = openapi.document("http://x", "0")["paths"]
    assert set(paths) == set(app.routes)


def test_app_treats_multipart_as_binary() -> None:
    assert "multipart/form-data" in app.api.binary_types
