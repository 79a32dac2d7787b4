"""Limits on what the platform accepts from outside, shared by the raw-data contract
(``data/contract.py``) and the scoring API (``serving/schemas.py``), so a customer id the
warehouse can hold is also one the API will look up; and the scorer's connection deadline.

Each limit is far above any real value and far below what breaks a downstream type, so a
value beyond it is a data error (a sentinel, a unit mix-up, a column shifted by one), not a
big customer. docs/own-data.md lists them; change both together.
"""

from __future__ import annotations

from datetime import date, timedelta

# Customer and order ids: text in the warehouse; longer ids are refused at both edges.
MAX_ID_LENGTH = 256
# Characters no id may hold, at both edges: C0 and C1 controls (NUL included: Postgres text
# cannot hold it, and the driver raises on it) and lone surrogates (not encodable as UTF-8).
ID_FORBIDDEN_CHARACTERS = r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]"

# RFC 5321 caps a deliverable address (path) at 256 octets including the angle brackets,
# so no real address is longer than 254 characters.
MAX_EMAIL_LENGTH = 254

# Every other text cell: category, and dates and numbers written as text (the longest valid
# ISO 8601 timestamp is ~35 characters). Without a cap a single 50 MB cell is stored as is.
MAX_TEXT_LENGTH = 256

# One order's amount, in currency units. 10^12 covers any real order in any currency (even
# ones with ~10^4 units per dollar), keeps cents exact in float64 (2^53 cents ~ 9 * 10^13
# units), and keeps revenue features finite: even 10^7 orders at the cap sum to 10^19, far
# below float32's 3.4 * 10^38, the model's input type.
MAX_AMOUNT = 1_000_000_000_000

# Items in one order. A million is beyond any real basket yet leaves sums over a customer's
# orders far inside Postgres ``integer`` (2,147,483,647), the raw column's type.
MAX_ITEM_COUNT = 1_000_000

# Dates (ordered_at, signup_at) must lie in [MIN_DATE, validation time + FUTURE_TOLERANCE].
# Earlier dates are sentinels (0001-01-01) or typos; the bound also keeps every accepted date
# inside pandas' nanosecond range (1677-2262), so none is silently lost in a conversion.
MIN_DATE = date(1900, 1, 1)
# Files are stamped in the shop's local time but checked against UTC; a day covers every
# time zone (UTC-12 to UTC+14), so a file written "today" anywhere is never in the future.
FUTURE_TOLERANCE = timedelta(days=1)

# Seconds a connection to the scorer may take to send a complete request line and headers,
# counted from when it opens and from each response on it; then it is closed (a client that
# sends nothing, or half a header, would otherwise hold a socket for good). A real client
# sends its headers (< 1 KiB) at once; 10 s still covers three lost packets (TCP resends
# after 1 + 2 + 4 s). The default of `churn serve --header-timeout`.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
