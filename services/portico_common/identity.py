from .exceptions import UserIdRequired


def require_user_id(request) -> int:
    """The caller's id from `X-User-Id`, set by the gateway from the token's `sub`.

    Missing, non-integer or non-positive values are all "not authenticated".
    """
    raw = request.headers.get("X-User-Id", "").strip()
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise UserIdRequired()
    return int(raw)
