"""The order entry fast path stands outside the app's middleware: it must honour each one."""

from __future__ import annotations

from app.config import Settings
from app.http.order_entry import HONOURED_MIDDLEWARE
from app.main import create_app


def test_the_order_entry_fast_path_honours_every_middleware_the_app_has() -> None:
    """A middleware added to the app is skipped by the fast path for POST /v1/orders until
    the fast path honours its concern too, and says so in HONOURED_MIDDLEWARE."""
    app = create_app(Settings())
    assert {m.cls.__name__ for m in app.user_middleware} <= HONOURED_MIDDLEWARE
