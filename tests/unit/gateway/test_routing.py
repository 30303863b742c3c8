"""The routing table built from the protos' google.api.http annotations."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from gateway.routing import RoutingError, UpstreamService, build_routes
from gateway.upstreams import GRPC_SERVICES
from tests.unit.gateway.bookshelf import BOOKSHELF, SERVICE


def test_every_annotated_method_of_the_real_protos_is_routed() -> None:
    routes = build_routes(GRPC_SERVICES)
    annotated = {
        f"{s.descriptor.full_name}.{m.name}"
        for s in GRPC_SERVICES
        for m in s.descriptor.methods
        if m.GetOptions().ListFields()
        and any(f.full_name == "google.api.http" for f, _ in m.GetOptions().ListFields())
    }
    assert annotated  # the protos do declare routes
    assert {r.operation_id.rsplit(".", 1)[0] if r.binding else r.operation_id for r in routes} == (
        annotated
    )
    upstream_of = {s.descriptor.full_name: s.upstream for s in GRPC_SERVICES}
    for route in routes:
        assert route.upstream == upstream_of[route.method.containing_service.full_name]
        assert route.grpc_path == (
            f"/{route.method.containing_service.full_name}/{route.method.name}"
        )


def test_known_routes_of_the_real_protos() -> None:
    by_path = {(r.http_method, r.template.template): r for r in build_routes(GRPC_SERVICES)}
    get_product = by_path[("GET", "/api/v1/products/{id}")]
    assert get_product.upstream == "catalog"
    assert get_product.body == ""
    ingest = by_path[("POST", "/api/v1/analytics/events:batch")]
    assert (ingest.upstream, ingest.body, ingest.template.verb) == ("analytics", "*", "batch")


def test_bookshelf_rules_become_routes() -> None:
    routes = {r.operation_id: r for r in build_routes([BOOKSHELF])}
    assert set(routes) == {
        "gwtest.v1.ShelfService.GetShelf",
        "gwtest.v1.ShelfService.ListBooks",
        "gwtest.v1.ShelfService.GetBook",
        "gwtest.v1.ShelfService.GetBook.1",  # the additional binding
        "gwtest.v1.ShelfService.GetBookTitle",
        "gwtest.v1.ShelfService.UpdateBook",
        "gwtest.v1.ShelfService.ReserveBook",
        "gwtest.v1.ShelfService.DeleteBook",
        "gwtest.v1.ShelfService.ArchiveAll",
    }
    update = routes["gwtest.v1.ShelfService.UpdateBook"]
    assert (update.http_method, update.body) == ("PATCH", "book")
    assert update.template.template == "/v1/{book.name=shelves/*/books/*}"
    assert routes["gwtest.v1.ShelfService.GetBookTitle"].response_body == "title"
    binding = routes["gwtest.v1.ShelfService.GetBook.1"]
    assert (binding.binding, binding.template.template) == (1, "/v1/{shelf=shelves/*}/books/{id}")
    assert routes["gwtest.v1.ShelfService.GetBook"].request_class.DESCRIPTOR.name == (
        "GetBookRequest"
    )
    assert routes["gwtest.v1.ShelfService.GetBook"].response_class.DESCRIPTOR.name == "Book"


def test_the_same_binding_twice_is_an_error() -> None:
    with pytest.raises(RoutingError, match="already bound"):
        build_routes([BOOKSHELF, UpstreamService("users", SERVICE)])


def broken(index: int, **rule: str) -> UpstreamService:
    """The bookshelf service re-declared in its own package with GetShelf's rule replaced."""
    proto = descriptor_pb2.FileDescriptorProto()
    SERVICE.file.CopyToProto(proto)
    proto.name = f"broken_{index}.proto"
    proto.package = f"gwbroken{index}.v1"
    for method in proto.service[0].method:
        if method.name != "GetShelf":
            method.options.ClearExtension(annotations_pb2.http)
            continue
        http = method.options.Extensions[annotations_pb2.http]
        http.Clear()
        for key, value in rule.items():
            setattr(http, key, value)
    file = descriptor_pool.Default().AddSerializedFile(proto.SerializeToString())
    return UpstreamService("catalog", file.services_by_name["ShelfService"])


@pytest.mark.parametrize(
    ("index", "rule", "message"),
    [
        (1, {"get": "/v1/{nope}"}, "path variable 'nope': no field 'nope'"),
        (2, {"get": "/v1/{name=shelves/*"}, "unclosed variable"),
        (3, {"get": "/v1/{name}", "response_body": "nope"}, "response_body 'nope'"),
        (4, {"post": "/v1/{name}", "body": "nope"}, "body field 'nope'"),
        (5, {"get": "/v1/{name}", "body": "*"}, "GET cannot have a body"),
        (6, {"body": "*"}, "without a pattern"),
    ],
)
def test_bad_annotations_fail_at_start_naming_the_method(
    index: int, rule: dict[str, str], message: str
) -> None:
    with pytest.raises(RoutingError) as raised:
        build_routes([broken(index, **rule)])
    assert f"gwbroken{index}.v1.ShelfService.GetShelf" in str(raised.value)
    assert message in str(raised.value)
