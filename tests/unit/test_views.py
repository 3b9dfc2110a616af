from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import GatewayError, HttpProblem, RiskDenied
from app.domain.orders import Order, OrderType, Side, TimeInForce
from app.domain.status import OrderStatus
from app.domain.views import OrderView, problem_body, render_order

decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
texts = st.text(max_size=30)


@given(
    ids=st.tuples(texts, texts, texts, texts),
    side=st.sampled_from(Side),
    order_type=st.sampled_from(OrderType),
    tif=st.sampled_from(TimeInForce),
    status=st.sampled_from(OrderStatus),
    qty=decimals,
    filled=decimals,
    prices=st.tuples(st.none() | decimals, st.none() | decimals),
    times=st.tuples(timestamps, timestamps),
    reason=st.none() | texts,
)
def test_render_order_is_the_views_json_byte_for_byte(
    ids: tuple[str, str, str, str],
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    status: OrderStatus,
    qty: object,
    filled: object,
    prices: tuple[object, object],
    times: tuple[datetime, datetime],
    reason: str | None,
) -> None:
    order = Order(
        id=ids[0],
        client_order_id=ids[1],
        account=ids[2],
        symbol=ids[3],
        side=side,
        qty=qty,  # type: ignore[arg-type]
        type=order_type,
        limit_price=prices[0],  # type: ignore[arg-type]
        time_in_force=tif,
        status=status,
        created_at=times[0],
        updated_at=times[1],
        filled_qty=filled,  # type: ignore[arg-type]
        avg_fill_price=prices[1],  # type: ignore[arg-type]
        reject_reason=reason,
    )
    assert render_order(order) == OrderView.of(order).model_dump_json()


def _every_error_class(root: type[GatewayError] = GatewayError) -> list[type[GatewayError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _every_error_class(sub)
    return found


def _an_instance_of(cls: type[GatewayError]) -> GatewayError:
    if cls is HttpProblem:
        return HttpProblem(409, "x")
    if cls is RiskDenied:
        return RiskDenied("risk.position_limit", "x")
    return cls("x")


def test_no_extension_member_replaces_a_problems_own_members() -> None:
    """``status`` is the HTTP status: an order's status travels as ``order_status``."""
    for cls in _every_error_class():
        error = _an_instance_of(cls)
        body = problem_body(error, status="filled", code="c", type="t", title="t", detail="d")
        assert (body["status"], body["code"], body["detail"]) == (
            error.status,
            error.code,
            error.detail,
        ), cls
        assert body["type"].endswith(f"/problems/{error.code}")
