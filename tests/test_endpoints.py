"""The SDK's endpoints are declared once (``tinkex_actors/_endpoints.py``) and nowhere else.

* every declared endpoint is served by the embedded server (its route table, and the pure-ASGI
  ``retrieve_future(s)`` layer in front of it), and every server route under ``/api/v1`` is
  either declared or tagged ``SERVER_ONLY`` (exactly one of the two);
* every declared path is one the official SDK (tinker 0.38, the wire oracle) calls, but for
  the listed ones it no longer calls;
* request and answer types are wire types from ``tinkex_actors.types``;
* no SDK module spells out an ``/api/v1`` path or uses ``API_PREFIX``: paths come from the
  declarations.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import tinker
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

import tinkex_actors
from tinkex_actors import _endpoints as ep
from tinkex_actors import types
from tinkex_actors._constants import API_PREFIX
from tinkex_actors._endpoints import ENDPOINTS, Endpoint, NoAnswer, QueuedEndpoint
from tinkex_actors.server import routes
from tinkex_actors.server.app import create_app
from tinkex_actors.server.routes import results
from tinkex_actors.server.routes._common import SERVER_ONLY
from tinkex_actors.server.settings import ServerSettings

PACKAGE = Path(tinkex_actors.__file__).parent
OFFICIAL = Path(tinker.__file__).parent

#: Declared, not served by the embedded server (and why).
NOT_SERVED = {
    # The hosted service's; the SDK calls it only when client/config announces
    # sample_join_sampling_session, which the embedded server does not.
    "JOIN_SAMPLING_SESSION",
}
#: Declared, no longer called by the official 0.38 SDK (older SDKs and servers use them).
NOT_IN_OFFICIAL = {"CHECKPOINT_ARCHIVE_URL", "UNLOAD_MODEL"}
#: The SDK side that is not a module of tinkex_actors.server's implementation.
CLIENT_MODULES_IN_SERVER = {"server/embedded.py"}


def _sample_path(endpoint: Endpoint[Any]) -> str:
    values = {name: "weights" if name == "kind" else f"x-{name}" for name in endpoint.params}
    return endpoint.path(**values)


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": ""}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # Built, not started: the route table exists without the lifespan (no engine, no threads).
    data_dir = tmp_path_factory.mktemp("endpoints")
    return create_app(ServerSettings(data_dir=data_dir, api_keys=("tml-endpoints",)))


def _served(app: FastAPI, endpoint: Endpoint[Any]) -> bool:
    path = _sample_path(endpoint)
    if path in results.PATHS:  # answered ahead of the router
        return endpoint.method == "POST"
    scope = _scope(endpoint.method, path)
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_declared_endpoint_is_served_by_the_embedded_server(app: FastAPI, name: str) -> None:
    endpoint = ENDPOINTS[name]
    assert _served(app, endpoint) is (name not in NOT_SERVED), str(endpoint)


def _route_modules_routes() -> dict[tuple[str, str], APIRoute]:
    """Every route of the server's route modules, by (method, path as OpenAPI writes it)."""
    table = {}
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        router = getattr(module, "router", None)
        for route in getattr(router, "routes", ()):
            if isinstance(route, APIRoute):
                table.update({(m, route.path_format): route for m in route.methods})
    return table


def test_every_server_route_is_declared_or_tagged_server_only(app: FastAPI) -> None:
    table = _route_modules_routes()
    served = [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]
    assert len(served) > 30
    wrong = []
    for method, path in served:
        route = table[(method, path)]
        declared = any(
            e.method == method and route.matches(_scope(method, _sample_path(e)))[0] is Match.FULL
            for e in ENDPOINTS.values()
        )
        server_only = set(SERVER_ONLY) <= set(route.tags)
        if declared is server_only:  # neither, or both
            wrong.append(f"{method} {path} (declared: {declared}, server-only: {server_only})")
    assert wrong == [], "declare it in tinkex_actors/_endpoints.py, or tag it tags=SERVER_ONLY"
    only = [(m, p) for m, p in served if set(SERVER_ONLY) <= set(table[(m, p)].tags)]
    assert ("POST", "/api/v1/forward") in only
    assert len(only) == 4
    for path in results.PATHS:
        assert any(e.route == path and e.method == "POST" for e in ENDPOINTS.values()), path


_PLACEHOLDER = "[^/]+(?:/[^/]+)?"


def _official_templates() -> list[re.Pattern[str]]:
    """The paths the official SDK calls, as regular expressions."""
    found = set()
    for file in OFFICIAL.rglob("*.py"):
        if file.name.endswith("_test.py"):
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.JoinedStr):
                # A placeholder spans one segment, or two: a checkpoint id is <kind>/<name>.
                parts = [
                    re.escape(v.value) if isinstance(v, ast.Constant) else _PLACEHOLDER
                    for v in node.values
                ]
                text = "".join(parts)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = re.escape(node.value)
            else:
                continue
            if text.startswith(re.escape(API_PREFIX + "/")):
                found.add(text)
    return [re.compile(text) for text in found]


def test_declared_paths_are_the_official_sdks() -> None:
    templates = _official_templates()
    assert len(templates) > 20  # the oracle was read
    unknown = [
        name
        for name, endpoint in ENDPOINTS.items()
        if not any(t.fullmatch(_sample_path(endpoint)) for t in templates)
    ]
    assert sorted(unknown) == sorted(NOT_IN_OFFICIAL)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_request_and_answer_types_are_wire_types(name: str) -> None:
    endpoint = ENDPOINTS[name]
    wire = {getattr(types, n) for n in types.__all__}
    assert endpoint.request is None or endpoint.request in wire
    assert endpoint.response is NoAnswer or endpoint.response in wire
    if isinstance(endpoint, QueuedEndpoint):
        assert endpoint.method == "POST"
        assert endpoint.response is not NoAnswer
        assert re.fullmatch(r"[A-Z][A-Za-z]+", endpoint.request_type)


def test_queued_request_types_are_distinct() -> None:
    queued = [e for e in ENDPOINTS.values() if isinstance(e, QueuedEndpoint)]
    assert len({e.request_type for e in queued}) == len(queued)
    assert {e.request_type for e in queued} >= {"ForwardBackward", "Forward", "Sample"}


def test_path_quotes_each_placeholder_as_one_segment() -> None:
    path = ep.CHECKPOINT_ARCHIVE_URL.path(
        training_run_id="sess:train:0", kind="weights", name="a b/c?d"
    )
    assert path == "/api/v1/training_runs/sess:train:0/checkpoints/weights/a%20b%2Fc%3Fd/archive"
    assert ep.OPTIM_STEP.path() == "/api/v1/optim_step"
    assert ep.GET_SESSION.params == ("session_id",)
    assert str(ep.GET_SESSION) == "GET /api/v1/sessions/{session_id}"
    with pytest.raises(TypeError, match="session_id"):
        ep.GET_SESSION.path()
    with pytest.raises(TypeError, match="sampler_id"):
        ep.GET_SESSION.path(session_id="s", sampler_id="x")


# ---------------------------------------------------------------------------- no hand-made paths
def _sdk_modules() -> list[Path]:
    keep = []
    for file in sorted(PACKAGE.rglob("*.py")):
        relative = file.relative_to(PACKAGE).as_posix()
        if relative in ("_endpoints.py", "_constants.py"):
            continue  # the declarations, and the prefix they use
        if relative.startswith("server/") and relative not in CLIENT_MODULES_IN_SERVER:
            continue  # the server serves the routes: it spells them out
        keep.append(file)
    return keep


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of string statements (docstrings, attribute docs): prose, not code."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _hand_made_paths(file: Path) -> list[str]:
    tree = ast.parse(file.read_text())
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            # A path or URL (no whitespace); prose such as an error message may name one.
            if API_PREFIX in node.value and not re.search(r"\s", node.value):
                found.append(f"{file.name}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Name | ast.Attribute | ast.alias):
            name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            name = node.name if isinstance(node, ast.alias) else name
            if name == "API_PREFIX":
                found.append(f"{file.name}:{getattr(node, 'lineno', '?')}: API_PREFIX")
    return found


def test_no_sdk_module_builds_an_api_path_by_hand() -> None:
    modules = _sdk_modules()
    assert any(m.name == "_rest_requests.py" for m in modules)
    found = [hit for module in modules for hit in _hand_made_paths(module)]
    assert found == [], "build paths from tinkex_actors/_endpoints.py declarations"


def test_the_scan_finds_hand_made_paths(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docstrings may name /api/v1/x."""\n'
        "from tinkex_actors._constants import API_PREFIX\n"
        'A = "/api/v1/create_model"\n'
        'E = "expected a path like /api/v1/..., got"\n'
        'B = f"{API_PREFIX}/samplers/{id}"\n'
        "def f():\n"
        '    """``GET /api/v1/y``."""\n'
        "    return c.API_PREFIX\n"
    )
    hits = _hand_made_paths(sample)
    assert len(hits) == 4, hits
    assert not any("/api/v1/x" in hit or "/api/v1/y" in hit for hit in hits)
