"""The JSON router: routing on raw paths, errors, async handlers, filters and observers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._newclient import ResponseNeverReceived
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface.verify import verifyObject

from stubserver.server.router import (
    CLIENT_CLOSED_REQUEST,
    FederationRouter,
    JsonResponse,
    MatrixError,
    Route,
    query_arg,
    read_json_body,
    request_annotations,
)
from tests.support import (
    failure_now,
    flush_logged_errors,
    has_fired,
    result_now,
    stub_treq,
)

BASE = "https://stub.test"


def echo_params(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
    """A handler answering with its parameters and the raw path it saw."""
    return JsonResponse(200, {"params": dict(params), "path": request.path.decode("ascii")})


class Recorder:
    """An observer recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def __call__(self, request: IRequest, status: int, body: Any) -> None:
        self.calls.append((request.path.decode("ascii"), status, body))


def get_json(stub: Any, url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any]:
    """Status and JSON body of one request through ``stub`` (which must answer now)."""
    response = result_now(stub.request(method, url, **kwargs))
    body = result_now(stub.json_content(response))
    return response.code, body


class RouterInterfaceTests(SynchronousTestCase):
    def test_provides_iresource(self) -> None:
        """FederationRouter provides IResource."""
        assert verifyObject(IResource, FederationRouter([]))

    def test_put_child_is_refused(self) -> None:
        """Children cannot be added: routes are passed to the constructor."""
        router = FederationRouter([])
        with pytest.raises(NotImplementedError):
            router.putChild(b"x", router)


class RoutePatternTests(SynchronousTestCase):
    def test_bad_patterns_are_refused(self) -> None:
        """Patterns must start with '/', and params must be whole, unrepeated segments."""
        for pattern in ("x/y", "/a/{b}{c}", "/a/{b", "/a/{b}/{b}", "/a/x{b}"):
            with self.subTest(pattern=pattern), pytest.raises(ValueError, match="pattern"):
                Route("GET", pattern, echo_params)

    def test_match_keeps_raw_segments(self) -> None:
        """Route.match returns parameters still percent-encoded."""
        route = Route("GET", "/a/{name}/c", echo_params)
        assert route.match([b"a", b"x%2Fy", b"c"]) == {"name": b"x%2Fy"}
        assert route.match([b"a", b"", b"c"]) is None
        assert route.match([b"a", b"b"]) is None


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.router = FederationRouter(
            [
                Route("GET", "/_matrix/key/v2/query/{serverName}", echo_params),
                Route("POST", "/_matrix/key/v2/query", echo_params),
            ]
        )
        self.stub = stub_treq(self.router)

    def test_params_are_percent_decoded(self) -> None:
        """A parameter is decoded as UTF-8 before the handler sees it."""
        status, body = get_json(self.stub, f"{BASE}/_matrix/key/v2/query/b%C3%A9ta.test%3A8448")
        assert status == 200
        assert body["params"] == {"serverName": "béta.test:8448"}

    def test_handler_sees_the_raw_path(self) -> None:
        """request.path stays as received, percent-encoding included."""
        _, body = get_json(self.stub, f"{BASE}/_matrix/key/v2/query/a%2Fb")
        assert body["path"] == "/_matrix/key/v2/query/a%2Fb"
        assert body["params"] == {"serverName": "a/b"}

    def test_literal_segments_match_raw_bytes(self) -> None:
        """An encoded literal segment does not match (as Synapse, which matches raw paths)."""
        status, body = get_json(self.stub, f"{BASE}/_matrix/key/v2/%71uery/x")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")

    def test_bad_utf8_parameter_is_400(self) -> None:
        """A parameter that is not UTF-8 once decoded is 400 M_INVALID_PARAM."""
        status, body = get_json(self.stub, f"{BASE}/_matrix/key/v2/query/%FF")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    def test_unknown_path_is_404_unrecognized(self) -> None:
        """An unknown path under /_matrix answers 404 M_UNRECOGNIZED as JSON."""
        response = self.successResultOf(self.stub.get(f"{BASE}/_matrix/nothing/here"))
        assert response.code == 404
        assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
        body = self.successResultOf(self.stub.json_content(response))
        assert body == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}

    def test_unknown_path_outside_matrix_is_json_404(self) -> None:
        """Paths outside /_matrix answer JSON 404 too."""
        status, body = get_json(self.stub, f"{BASE}/index.html")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")

    def test_trailing_slash_is_another_path(self) -> None:
        """A trailing slash does not match the route without it."""
        status, _ = get_json(self.stub, f"{BASE}/_matrix/key/v2/query/", method="POST")
        assert status == 404

    def test_wrong_method_is_405_with_allow(self) -> None:
        """A known path with the wrong method answers 405 M_UNRECOGNIZED and Allow."""
        response = self.successResultOf(self.stub.put(f"{BASE}/_matrix/key/v2/query/x"))
        assert response.code == 405
        assert response.headers.getRawHeaders(b"allow") == [b"GET, HEAD"]
        body = self.successResultOf(self.stub.json_content(response))
        assert body["errcode"] == "M_UNRECOGNIZED"

    def test_head_uses_the_get_route(self) -> None:
        """HEAD is answered by the GET route, without a body."""
        response = self.successResultOf(self.stub.head(f"{BASE}/_matrix/key/v2/query/x"))
        assert response.code == 200
        assert self.successResultOf(self.stub.content(response)) == b""

    def test_post_routes(self) -> None:
        """A POST route answers POST."""
        status, body = get_json(self.stub, f"{BASE}/_matrix/key/v2/query", method="POST")
        assert (status, body["params"]) == (200, {})


class ExactPathTests(SynchronousTestCase):
    """Routes without parameters are found by their exact path (issue 22, the key
    endpoint's hot path), with the table's answers unchanged."""

    def setUp(self) -> None:
        def named(name: str) -> Any:
            return lambda request, params: JsonResponse(200, {"route": name})

        self.router = FederationRouter(
            [
                Route("GET", "/a/{x}", named("param first")),
                Route("GET", "/a/b", named("literal after a parameter")),
                Route("GET", "/c/d", named("literal")),
                Route("PUT", "/c/d", named("literal put")),
                Route("GET", "/c/d", named("a second literal")),
            ]
        )
        self.stub = stub_treq(self.router)

    def test_the_first_matching_route_answers(self) -> None:
        """An earlier route with a parameter still wins over a later literal one, and of
        two identical literal routes the first answers."""
        assert get_json(self.stub, f"{BASE}/a/b") == (200, {"route": "param first"})
        assert get_json(self.stub, f"{BASE}/c/d") == (200, {"route": "literal"})

    def test_a_literal_path_is_found_without_walking_the_table(self) -> None:
        """Behind 50 routes with parameters, a literal route is answered without trying
        any route's pattern (it tried all 50)."""
        tried: list[str] = []

        @dataclass(frozen=True)
        class CountingRoute(Route):
            def match(self, raw_segments: Sequence[bytes]) -> dict[str, bytes] | None:
                tried.append(self.pattern)
                return super().match(raw_segments)

        routes = [CountingRoute("GET", f"/p{i}/{{x}}", echo_params) for i in range(50)]
        router = FederationRouter([*routes, CountingRoute("GET", "/key", echo_params)])
        tried.clear()
        status, body = get_json(stub_treq(router), f"{BASE}/key")
        assert (status, body["path"]) == (200, "/key")
        assert tried == []

    def test_methods_head_and_405_as_before(self) -> None:
        """Each method finds its own literal route; HEAD takes GET's; another method is
        405 with Allow."""
        assert get_json(self.stub, f"{BASE}/c/d", method="PUT") == (200, {"route": "literal put"})
        response = self.successResultOf(self.stub.head(f"{BASE}/c/d"))
        assert response.code == 200
        response = self.successResultOf(self.stub.post(f"{BASE}/c/d"))
        assert response.code == 405
        assert response.headers.getRawHeaders(b"allow") == [b"GET, HEAD, PUT"]

    def test_statuses_and_head_routes_as_before(self) -> None:
        """The fast path sends a handler's own status (not twisted.web's default 200), and
        a route declared for HEAD is never chosen for a HEAD request (GET's route serves
        HEAD; a HEAD-only path answers 405)."""
        router = FederationRouter(
            [
                Route("GET", "/made", lambda r, p: JsonResponse(201, {"made": True})),
                Route("HEAD", "/h", lambda r, p: JsonResponse(200, {})),
            ]
        )
        stub = stub_treq(router)
        assert get_json(stub, f"{BASE}/made") == (201, {"made": True})
        response = self.successResultOf(stub.head(f"{BASE}/h"))
        assert response.code == 405


class ErrorTests(SynchronousTestCase):
    def test_matrix_error_becomes_json(self) -> None:
        """A MatrixError raised by a handler answers with its status, errcode and message."""

        def forbidden(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            raise MatrixError(403, "M_FORBIDDEN", "no", {"X-Why": "test"})

        stub = stub_treq(FederationRouter([Route("GET", "/x", forbidden)]))
        response = self.successResultOf(stub.get(f"{BASE}/x"))
        assert response.code == 403
        assert response.headers.getRawHeaders(b"x-why") == [b"test"]
        body = self.successResultOf(stub.json_content(response))
        assert body == {"errcode": "M_FORBIDDEN", "error": "no"}

    def test_unexpected_exception_is_logged_500(self) -> None:
        """An unexpected exception answers 500 M_UNKNOWN and is logged."""

        def broken(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            raise ZeroDivisionError("boom")

        stub = stub_treq(FederationRouter([Route("GET", "/x", broken)]))
        status, body = get_json(stub, f"{BASE}/x")
        assert (status, body["errcode"]) == (500, "M_UNKNOWN")
        assert "boom" not in body["error"]
        assert len(flush_logged_errors(self, ZeroDivisionError)) == 1

    def test_extra_headers_are_sent(self) -> None:
        """JsonResponse headers reach the client; Content-Type is always JSON."""

        def cached(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(200, {}, {"Cache-Control": "max-age=5"})

        stub = stub_treq(FederationRouter([Route("GET", "/x", cached)]))
        response = self.successResultOf(stub.get(f"{BASE}/x"))
        assert response.headers.getRawHeaders(b"cache-control") == [b"max-age=5"]
        assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]


class AsyncHandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pending: list[Deferred[JsonResponse]] = []
        self.cancelled: list[bool] = []

        def later(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
            d: Deferred[JsonResponse] = Deferred(lambda _: self.cancelled.append(True))
            self.pending.append(d)
            return d

        self.observer = Recorder()
        self.stub = stub_treq(
            FederationRouter([Route("GET", "/later", later)], observers=[self.observer])
        )

    def test_response_waits_for_the_deferred(self) -> None:
        """The response is sent when the handler's Deferred fires."""
        d = self.stub.get(f"{BASE}/later")
        assert not has_fired(d)
        self.pending[0].callback(JsonResponse(202, {"done": True}))
        self.stub.flush()
        response = self.successResultOf(d)
        assert response.code == 202
        assert self.successResultOf(self.stub.json_content(response)) == {"done": True}

    def test_failed_deferred_with_matrix_error(self) -> None:
        """A Deferred failing with MatrixError answers that error."""
        d = self.stub.get(f"{BASE}/later")
        self.pending[0].errback(MatrixError(502, "M_UNKNOWN", "upstream"))
        self.stub.flush()
        response = self.successResultOf(d)
        assert response.code == 502

    def test_client_disconnect_cancels_the_handler(self) -> None:
        """When the client goes away the handler's Deferred is cancelled; observers see 499."""
        d = self.stub.get(f"{BASE}/later")
        assert len(self.pending) == 1
        d.cancel()
        self.stub.flush()
        assert isinstance(failure_now(d).value, ResponseNeverReceived)
        assert self.cancelled == [True]
        assert self.observer.calls == [("/later", CLIENT_CLOSED_REQUEST, None)]


class FilterAndObserverTests(SynchronousTestCase):
    def test_observers_see_status_and_body(self) -> None:
        """Every observer is called once per response with the status and body sent."""
        first, second = Recorder(), Recorder()
        stub = stub_treq(
            FederationRouter([Route("GET", "/a/{x}", echo_params)], observers=[first, second])
        )
        get_json(stub, f"{BASE}/a/1")
        get_json(stub, f"{BASE}/missing")
        expected = [
            ("/a/1", 200, {"params": {"x": "1"}, "path": "/a/1"}),
            ("/missing", 404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        ]
        assert first.calls == expected
        assert second.calls == expected

    def test_failing_observer_is_logged_and_ignored(self) -> None:
        """An observer that raises does not change the response or stop other observers."""

        def broken(request: IRequest, status: int, body: Any) -> None:
            raise ZeroDivisionError

        after = Recorder()
        stub = stub_treq(
            FederationRouter([Route("GET", "/a/{x}", echo_params)], observers=[broken, after])
        )
        status, _ = get_json(stub, f"{BASE}/a/1")
        assert status == 200
        assert len(after.calls) == 1
        assert len(flush_logged_errors(self, ZeroDivisionError)) == 1

    def test_filter_runs_on_unknown_paths_and_annotates(self) -> None:
        """Filters run before routing, even for unknown paths; annotations reach observers."""
        seen: list[Any] = []

        def tag(request: IRequest) -> None:
            request_annotations(request)["origin"] = "origin.test"

        def observe(request: IRequest, status: int, body: Any) -> None:
            seen.append((status, request_annotations(request).get("origin")))

        stub = stub_treq(FederationRouter([], filters=[tag], observers=[observe]))
        get_json(stub, f"{BASE}/_matrix/federation/v1/nothing")
        assert seen == [(404, "origin.test")]

    def test_filter_can_reject(self) -> None:
        """A filter raising MatrixError answers that error and the handler never runs."""

        def reject(request: IRequest) -> Deferred[None]:
            d: Deferred[None] = Deferred()
            d.errback(MatrixError(401, "M_UNAUTHORIZED", "sign it"))
            return d

        def never(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            raise AssertionError("handler ran")

        stub = stub_treq(FederationRouter([Route("GET", "/x", never)], filters=[reject]))
        status, body = get_json(stub, f"{BASE}/x")
        assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")

    def test_async_filter_passes(self) -> None:
        """A filter returning a fired Deferred lets the request through."""
        stub = stub_treq(
            FederationRouter(
                [Route("GET", "/a/{x}", echo_params)], filters=[lambda r: succeed(None)]
            )
        )
        status, _ = get_json(stub, f"{BASE}/a/1")
        assert status == 200

    def test_filters_after_a_waiting_filter_run_in_order(self) -> None:
        """Filters after one that waits still run, in order, once it has fired."""
        order: list[str] = []
        gate: Deferred[None] = Deferred()

        def waits(request: IRequest) -> Deferred[None]:
            order.append("first")
            return gate

        def then(request: IRequest) -> None:
            order.append("second")

        stub = stub_treq(
            FederationRouter([Route("GET", "/a/{x}", echo_params)], filters=[waits, then])
        )
        d = stub.get(f"{BASE}/a/1")
        assert order == ["first"]
        gate.callback(None)
        stub.flush()
        assert order == ["first", "second"]
        assert self.successResultOf(d).code == 200


class HelperTests(SynchronousTestCase):
    def setUp(self) -> None:
        def body_and_query(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(
                200, {"body": read_json_body(request, limit=64), "q": query_arg(request, "q")}
            )

        self.stub = stub_treq(FederationRouter([Route("POST", "/x", body_and_query)]))

    def test_json_body_and_query(self) -> None:
        """read_json_body parses the body; query_arg decodes a query parameter."""
        status, body = get_json(
            self.stub, f"{BASE}/x?q=%C3%A9", method="POST", data=b'{"a": [1, 2]}'
        )
        assert (status, body) == (200, {"body": {"a": [1, 2]}, "q": "é"})

    def test_missing_query_is_none(self) -> None:
        """An absent query parameter is None."""
        _, body = get_json(self.stub, f"{BASE}/x", method="POST", data=b"{}")
        assert body["q"] is None

    def test_not_json(self) -> None:
        """A body that is not JSON is 400 M_NOT_JSON."""
        status, body = get_json(self.stub, f"{BASE}/x", method="POST", data=b"{nope")
        assert (status, body["errcode"]) == (400, "M_NOT_JSON")

    def test_bad_json(self) -> None:
        """JSON we refuse (duplicate keys) is 400 M_BAD_JSON."""
        status, body = get_json(self.stub, f"{BASE}/x", method="POST", data=b'{"a":1,"a":2}')
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")

    def test_too_large(self) -> None:
        """A body over the limit is 413 M_TOO_LARGE."""
        status, body = get_json(
            self.stub, f"{BASE}/x", method="POST", data=b'{"a":"' + b"x" * 100 + b'"}'
        )
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")

    def test_bad_utf8_query(self) -> None:
        """A query parameter that is not UTF-8 is 400 M_INVALID_PARAM."""
        status, body = get_json(self.stub, f"{BASE}/x?q=%FF", method="POST", data=b"{}")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
