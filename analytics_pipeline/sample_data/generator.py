"""Deterministic sample Segment-Spec event files with *known* faults.

Why: the pipeline's tests need realistic input whose flaws are counted exactly, and
the same arguments must give byte-identical files (one ``random.Random(seed)``, no
wall clock, gzip mtime 0, sorted iteration).

Layout: ``landing_dir/YYYY-MM-DD/part-NNN.jsonl[.gz]``, one folder per *arrival* day
(the UTC date of ``receivedAt``). Late events land 1..5 days after their event date,
so folders may extend past the last event day.

Counting rules (what ``GeneratedSummary`` means):

* ``events_planted``: unique valid events (``days * events_per_day``).
* ``duplicates_planted``: extra copies with the same messageId and content. Most are
  byte-identical lines in the same folder; some arrive 1-2 days later with
  ``receivedAt`` and ``sentAt`` shifted by the same amount (event time unchanged).
* ``id_conflicts_planted``: extra copies with the same messageId and time fields but
  different ``properties``/``traits``, delivered 1 s..10 min later.
* ``late_planted``: originals whose arrival folder is after their event date.
* ``malformed_planted``: bad lines by reason code, plus ``empty_file`` (``empty.jsonl``
  in the first folder, 0 bytes) and ``corrupt_gzip`` (``truncated.jsonl.gz`` in the
  second folder). The truncated gzip holds up to 50 byte-identical copies of lines
  already delivered in the first folder and is cut on a line boundary: the first
  ``corrupt_gzip_readable_lines`` lines decompress, then the stream ends. Those
  copies are *not* in ``duplicates_planted`` nor ``lines_written``.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import zlib
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

DAY_MS = 86_400_000
GZIP_LEVEL = 3  # fixed: the compressed bytes must not depend on defaults
MAX_SESSIONS_PER_DAY = 12  # keeps > 30 min between one person's sessions
MALFORMED_REASONS = (
    "invalid_json", "truncated_line", "invalid_utf8", "not_an_object", "missing_message_id",
    "missing_received_at", "missing_identity", "unknown_type", "invalid_timestamp",
    "wrong_field_type", "line_too_long", "schema_violation",
)  # fmt: skip
FILE_REASONS = ("empty_file", "corrupt_gzip")

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_OFFSETS = (120, -300, 330, 540)  # minutes: +02:00, -05:00, +05:30, +09:00
_PRODUCTS = [(f"prod_{i:04d}", round(4.99 + (i * 37) % 190 + (i % 10) / 10, 2)) for i in range(1, 201)]
_STATIC_PAGES = {"/": "Home", "/pricing": "Pricing", "/about": "About us", "/blog": "Blog",
                 "/search": "Search", "/cart": "Your cart", "/checkout": "Checkout"}  # fmt: skip
_STATIC_PATHS = tuple(_STATIC_PAGES)
_REFERRERS = ("", "https://www.google.com/", "https://twitter.com/", "https://duckduckgo.com/",
              "https://news.ycombinator.com/")  # fmt: skip
_LIBRARIES = (
    ("analytics.js", "4.1.0", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
     "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
    ("analytics.js", "4.1.0", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("analytics-ios", "4.1.8", "Shop/3.2 (iPhone; iOS 17.2; Scale/3.00)"),
    ("analytics-android", "4.10.4", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)"),
)  # fmt: skip
_LOCALES = (("en-US", "USD"), ("en-GB", "GBP"), ("de-DE", "EUR"), ("fr-FR", "EUR"), ("es-ES", "EUR"))
_NAMES = ("Ada", "Grace", "Alan", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances", "Edsger")
_PLANS = ("free", "pro", "enterprise")
_METHODS = ("email", "google", "github")
_UUID_KEEP = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID_SET = (0x8000 << 48) | (0x4000 << 64)
_encode = json.JSONEncoder(separators=(",", ":"), sort_keys=False).encode


@dataclass(frozen=True)
class FaultRates:
    """Per-event probabilities of each planted fault."""

    duplicate: float = 0.02
    id_conflict: float = 0.003
    late: float = 0.03
    malformed: float = 0.002


@dataclass(frozen=True)
class GeneratedSummary:
    """Exact counts of what was written, for tests to compare against (see module doc)."""

    days: list[str]  # every folder written (arrival days), sorted
    files_written: int
    lines_written: int  # lines in all files except the truncated gzip
    events_planted: int
    duplicates_planted: int
    id_conflicts_planted: int
    late_planted: int
    malformed_planted: dict[str, int]  # reason code -> count, only codes that occur
    corrupt_gzip_readable_lines: int = 0  # complete lines before the truncated gzip breaks


@cache
def _day_str(day: int) -> str:
    return date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


_HMS = [f"{h:02d}:{m:02d}:{sec:02d}" for h in range(24) for m in range(60) for sec in range(60)]


def _iso(ms: int, offset_min: int = 0) -> str:
    """Epoch ms as ISO 8601 with milliseconds: 'Z', or the same instant at an offset."""
    day, rem = divmod(ms + offset_min * 60_000, DAY_MS)
    second, milli = divmod(rem, 1000)
    if offset_min:
        off_h, off_m = divmod(abs(offset_min), 60)
        suffix = f"{'+' if offset_min > 0 else '-'}{off_h:02d}:{off_m:02d}"
    else:
        suffix = "Z"
    return f"{_day_str(day)}T{_HMS[second]}.{milli:03d}{suffix}"


def _line(msg: Any, context: str = "") -> bytes:
    """Compact JSON line; ``context`` (pre-encoded, shared by many events) is spliced last."""
    if context:
        return (_encode(msg)[:-1] + ',"context":' + context + "}\n").encode()
    return (_encode(msg) + "\n").encode()


def _page_json(page: dict[str, str]) -> str:
    """``_encode(page)`` without the encoder's per-call cost: our values need no escaping."""
    return (
        f'{{"path":"{page["path"]}","url":"{page["url"]}",'
        f'"title":"{page["title"]}","referrer":"{page["referrer"]}"}}'
    )


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz:
        gz.write(data)
    return buf.getvalue()


def _altered(typ: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Same event, different content: what an id conflict looks like."""
    new = dict(body)
    if typ == "page":
        new["title"] = body["title"] + " (v2)"
    elif typ == "identify":
        new["plan"] = _PLANS[(_PLANS.index(body["plan"]) + 1) % len(_PLANS)]
    elif name == "Signed Up":
        new["method"] = _METHODS[(_METHODS.index(body["method"]) + 1) % len(_METHODS)]
    else:
        key = next(k for k in ("price", "value", "revenue") if k in body)
        new[key] = round(body[key] + 1.0, 2)
    return new


class _Person:
    __slots__ = ("index", "anon", "user", "prospect", "name", "currency", "ctx", "ctx_head")

    def __init__(self, index: int, anon: str, user: str | None, prospect: bool, name: str,
                 currency: str, ctx: dict[str, Any]) -> None:  # fmt: skip
        self.index, self.anon, self.user, self.prospect = index, anon, user, prospect
        self.name, self.currency, self.ctx = name, currency, ctx
        self.ctx_head = _encode(ctx)[:-1] + ',"page":'  # + page JSON + "}" = context JSON


class _Generator:
    """Holds the one rng, the lines waiting per arrival folder and the counters."""

    def __init__(self, landing: Path, first_day: int, epd: int, seed: int, faults: FaultRates,
                 gzip_files: bool, files_per_day: int) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.landing, self.first_day, self.epd, self.f = landing, first_day, epd, faults
        self.gzip_files, self.files_per_day = gzip_files, files_per_day
        self.pending: dict[int, list[tuple[int, int, bytes]]] = {}
        self.seq = 0
        self.folders: set[int] = set()
        self.files = self.lines = self.events = self.dups = self.conflicts = self.late = 0
        self.malformed: dict[str, int] = {}
        self.malformed_today = 0
        self.cycle = 0
        self.long_line_done = False
        self.gz_sample: list[bytes] = []
        rng = self.rng
        self.people: list[_Person] = []
        for i in range(max(3, epd // 8)):
            kind = rng.random()  # 40% known users, 35% anonymous only, 25% will sign up
            lib_name, version, agent = rng.choice(_LIBRARIES)
            locale, currency = rng.choice(_LOCALES)
            ip = f"{rng.randint(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"
            ctx = {"library": {"name": lib_name, "version": version}, "userAgent": agent,
                   "ip": ip, "locale": locale}  # fmt: skip
            user = f"user_{i:06d}" if kind < 0.4 else None
            self.people.append(_Person(i, self.uid(), user, kind >= 0.75,
                                       rng.choice(_NAMES), currency, ctx))  # fmt: skip

    def uid(self) -> str:
        """Same text as ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, faster."""
        n = (self.rng.getrandbits(128) & _UUID_KEEP) | _UUID_SET
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def between(self, low: int, high: int) -> int:
        """Like ``randint`` (both ends included) at a third of its cost."""
        return low + int(self.rng.random() * (high - low + 1))

    def put(self, folder: int, sort_key: int, line: bytes) -> None:
        self.pending.setdefault(folder, []).append((sort_key, self.seq, line))
        self.seq += 1

    def ts(self, ms: int, allow_epoch: bool) -> str | int:
        """Mostly ISO 'Z'; some at a non-UTC offset; a few epoch milliseconds."""
        r = self.rng.random()
        if r < 0.9:
            return _iso(ms)
        if r < 0.97 or not allow_epoch:
            return _iso(ms, _OFFSETS[int(r * 1000) % len(_OFFSETS)])
        return ms

    def page(self, path: str, referrer: str) -> dict[str, str]:
        title = _STATIC_PAGES.get(path) or f"Product {path.rsplit('/', 1)[-1]}"
        return {"path": path, "url": "https://shop.example.com" + path, "title": title, "referrer": referrer}

    def day(self, d: int) -> None:
        """One event day: sessions per person, laid out in disjoint time slots."""
        rng, n = self.rng, len(self.people)
        sessions: dict[int, list[int]] = {}
        left = self.epd
        while left > 0:
            size = min(rng.randint(3, 15), left)
            i = rng.randrange(n)
            while len(sessions.get(i, ())) >= MAX_SESSIONS_PER_DAY:
                i = (i + 1) % n
            sessions.setdefault(i, []).append(size)
            left -= size
        for i in sorted(sessions):
            sizes = sessions[i]
            slot = DAY_MS // len(sizes)
            for k, size in enumerate(sizes):
                gaps = [self.between(1_000, 240_000) for _ in range(size - 1)]
                # ends >= 31 min before the next slot (and before midnight + receive delay)
                latest = slot - sum(gaps) - 31 * 60_000 - 10_000
                start = d * DAY_MS + k * slot + rng.randint(0, latest)
                self.session(self.people[i], d, start, gaps)
        if self.f.malformed > 0 and d == self.first_day and self.epd >= 200:
            self.malformed_today = max(self.malformed_today, len(MALFORMED_REASONS))
        for _ in range(self.malformed_today):
            self.plant_malformed(d)
        self.malformed_today = 0

    def session(self, p: _Person, d: int, t: int, gaps: list[int]) -> None:
        rng, size = self.rng, len(gaps) + 1
        convert_at = rng.randint(1, size - 2) if p.prospect and size >= 3 and rng.random() < 0.3 else -1
        identify_at = 0 if p.user is not None and rng.random() < 0.1 else -1
        page = self.page(rng.choice(_STATIC_PATHS[:4]), rng.choice(_REFERRERS))
        ctx = p.ctx_head + _page_json(page) + "}"
        pid, price = rng.choice(_PRODUCTS)
        cart, order_id = 0.0, ""
        props: dict[str, Any]
        for j in range(size):
            t += gaps[j - 1] if j else 0
            if j == convert_at:  # sign-up: identify links the anonymousId to a new userId
                p.user, p.prospect = f"user_{p.index:06d}", False
            if j in (convert_at, identify_at):
                traits = {"email": f"{p.user}@example.com", "plan": rng.choice(_PLANS), "name": p.name}
                self.emit(p, d, t, "identify", "", "traits", traits, ctx)
                continue
            if convert_at >= 0 and j == convert_at + 1:
                self.emit(p, d, t, "track", "Signed Up", "properties", {"method": rng.choice(_METHODS)}, ctx)
                continue
            r = rng.random()
            if r < 0.4:
                if rng.random() < 0.5:
                    pid, price = rng.choice(_PRODUCTS)
                    path = "/products/" + pid
                else:
                    path = rng.choice(_STATIC_PATHS)
                page = self.page(path, page["url"])
                ctx = p.ctx_head + _page_json(page) + "}"
                self.emit(p, d, t, "page", "", "properties", page, ctx)
            elif r < 0.7:
                props = {"product_id": pid, "price": price, "currency": p.currency}
                self.emit(p, d, t, "track", "Product Viewed", "properties", props, ctx)
            elif r < 0.85:
                qty = rng.randint(1, 3)
                cart += qty * price
                props = {"product_id": pid, "quantity": qty, "price": price}
                self.emit(p, d, t, "track", "Product Added", "properties", props, ctx)
            elif r < 0.93 or not order_id:
                order_id = f"ord_{rng.getrandbits(48):012x}"
                props = {"order_id": order_id, "value": round(cart, 2)}
                self.emit(p, d, t, "track", "Checkout Started", "properties", props, ctx)
            else:
                props = {"order_id": order_id, "revenue": round(cart, 2), "currency": p.currency}
                self.emit(p, d, t, "track", "Order Completed", "properties", props, ctx)
                cart, order_id = 0.0, ""

    def emit(self, p: _Person, d: int, t: int, typ: str, name: str, body_key: str,
             body: dict[str, Any], ctx: str) -> None:  # fmt: skip
        """One original event at true time ``t`` (epoch ms), plus its planted copies."""
        rng, f = self.rng, self.f
        msg: dict[str, Any] = {"messageId": self.uid(), "type": typ}
        if name:
            msg["event"] = name
        if p.user is not None:
            msg["userId"] = p.user
        if p.user is None or typ == "identify" or rng.random() < 0.7:
            msg["anonymousId"] = p.anon
        late = rng.random() < f.late
        if late:
            folder = d + rng.randint(1, 5)
            received = folder * DAY_MS + rng.randrange(DAY_MS)
        else:
            folder, received = d, t + self.between(5, 5_000)
        sent = None
        if rng.random() < 0.7:
            msg["timestamp"] = self.ts(t, True)
        else:  # client clock off by `skew`: receivedAt - (sentAt - originalTimestamp) == t
            skew = self.between(-180_000, 180_000)
            sent = received + skew
            msg["originalTimestamp"] = self.ts(t + skew, True)
            msg["sentAt"] = self.ts(sent, False)
        msg["receivedAt"] = _iso(received)
        msg[body_key] = body
        line = _line(msg, ctx)
        self.put(folder, received, line)
        self.events += 1
        self.late += late
        if folder == self.first_day and len(self.gz_sample) < 50:
            self.gz_sample.append(line)
        r = rng.random()
        if r < f.duplicate:
            self.dups += 1
            if rng.random() < 0.8:  # same line, same folder, maybe another file
                self.put(folder, received + rng.randint(0, 300_000), line)
            else:
                self.redeliver(msg, ctx, received, sent, rng.randint(1, 2) * DAY_MS)
        elif r < f.duplicate + f.id_conflict:
            self.conflicts += 1
            self.redeliver({**msg, body_key: _altered(typ, name, body)}, ctx, received, sent,
                           rng.randint(1_000, 600_000))  # fmt: skip
        if rng.random() < f.malformed:
            self.malformed_today += 1

    def redeliver(self, msg: dict[str, Any], ctx: str, received: int, sent: int | None, shift: int) -> None:
        """A later copy: receivedAt and sentAt move together, so the event time stays."""
        again = dict(msg)
        again["receivedAt"] = _iso(received + shift)
        if sent is not None:
            again["sentAt"] = _iso(sent + shift)
        self.put((received + shift) // DAY_MS, received + shift, _line(again, ctx))

    def plant_malformed(self, d: int) -> None:
        reason = MALFORMED_REASONS[self.cycle % len(MALFORMED_REASONS)]
        self.cycle += 1
        if reason == "line_too_long" and (self.long_line_done or self.epd < 1000):
            reason = MALFORMED_REASONS[self.cycle % len(MALFORMED_REASONS)]
            self.cycle += 1
        rng = self.rng
        t = d * DAY_MS + rng.randrange(DAY_MS - 10_000)
        p = rng.choice(self.people)
        pid, price = rng.choice(_PRODUCTS)
        props: dict[str, Any] = {"product_id": pid, "price": price, "currency": "USD"}
        msg: dict[str, Any] = {"messageId": self.uid(), "type": "track", "event": "Product Viewed",
                               "anonymousId": p.anon, "timestamp": _iso(t),
                               "receivedAt": _iso(t + rng.randint(5, 5_000)), "properties": props,
                               "context": {**p.ctx, "page": self.page("/products/" + pid, "")}}  # fmt: skip
        if reason == "invalid_json":
            line = f'{{"messageId":"{msg["messageId"]}","type":"track",oops}}\n'.encode()
        elif reason == "truncated_line":
            whole = _line(msg)
            line = whole[: len(whole) // 2].rstrip(b"} ") + b"\n"  # must not look closed
        elif reason == "invalid_utf8":
            props["note"] = "@@BAD@@"
            line = _line(msg).replace(b"@@BAD@@", b"caf\xff\xfe")
        elif reason == "not_an_object":
            line = (b"[1,2,3]", b'"hello"', b"42")[self.cycle % 3] + b"\n"
        else:
            if reason == "missing_message_id":
                del msg["messageId"]
            elif reason == "missing_received_at":
                del msg["receivedAt"]
            elif reason == "missing_identity":
                del msg["anonymousId"]
            elif reason == "unknown_type":
                msg["type"] = "bogus"
            elif reason == "invalid_timestamp":
                msg["timestamp"] = ("2024-02-30T10:00:00Z", "not a time")[self.cycle % 2]
            elif reason == "wrong_field_type":
                msg["properties"] = "oops"
            elif reason == "line_too_long":
                self.long_line_done = True
                props["blob"] = "x" * ((1 << 20) + 1024)
            elif reason == "schema_violation":
                msg["event"] = "Order Completed"
                odd = self.cycle % 2 == 1  # alternate: negative revenue / unknown currency
                order = f"ord_{rng.getrandbits(48):012x}"
                msg["properties"] = {"order_id": order, "revenue": -5.0 if odd else 12.5,
                                     "currency": "USD" if odd else "XYZ"}  # fmt: skip
            line = _line(msg)
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        self.put(d, t, line)

    def write(self, folder: int, name: str, data: bytes) -> None:
        out = self.landing / _day_str(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        self.folders.add(folder)
        self.files += 1

    def flush(self, folder: int) -> None:
        """Write a complete arrival folder as contiguous receivedAt-ordered chunks."""
        entries = sorted(self.pending.pop(folder, []))
        count = min(self.files_per_day, len(entries))
        for i in range(count):
            lo, hi = i * len(entries) // count, (i + 1) * len(entries) // count
            data = b"".join(entry[2] for entry in entries[lo:hi])
            if self.gzip_files:
                self.write(folder, f"part-{i:03d}.jsonl.gz", _gzip(data))
            else:
                self.write(folder, f"part-{i:03d}.jsonl", data)
        self.lines += len(entries)

    def corrupt_gzip(self) -> tuple[bytes, int]:
        """The sample gzipped with a sync flush per line, cut at the line end nearest 60%."""
        buf, ends = io.BytesIO(), []
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz:
            for line in self.gz_sample:
                gz.write(line)
                gz.flush(zlib.Z_SYNC_FLUSH)  # everything so far decodes from the bytes so far
                ends.append(buf.tell())
        full = buf.getvalue()
        k = min(range(len(ends)), key=lambda i: abs(ends[i] - 0.6 * len(full)))
        return full[: ends[k]], k + 1


def generate(landing_dir: Path, start_date: date, days: int, events_per_day: int, seed: int = 7,
             faults: FaultRates = FaultRates(), gzip_files: bool = True,
             files_per_day: int = 3) -> GeneratedSummary:  # fmt: skip
    """Write ``days`` days of events into ``landing_dir`` and return exact counts."""
    if days < 1 or events_per_day < 0 or files_per_day < 1:
        raise ValueError("need days >= 1, events_per_day >= 0 and files_per_day >= 1")
    first = start_date.toordinal() - _EPOCH_ORDINAL
    gen = _Generator(Path(landing_dir), first, events_per_day, seed, faults, gzip_files, files_per_day)
    for d in range(first, first + days):
        gen.day(d)
        for folder in sorted(k for k in gen.pending if k <= d):
            gen.flush(folder)
    for folder in sorted(gen.pending):
        gen.flush(folder)
    readable = 0
    if faults.malformed > 0:
        gen.write(first, "empty.jsonl", b"")
        gen.malformed["empty_file"] = 1
        if gzip_files and gen.gz_sample:
            data, readable = gen.corrupt_gzip()
            gen.write(first + 1, "truncated.jsonl.gz", data)
            gen.malformed["corrupt_gzip"] = 1
    return GeneratedSummary(
        days=[_day_str(f) for f in sorted(gen.folders)],
        files_written=gen.files,
        lines_written=gen.lines,
        events_planted=gen.events,
        duplicates_planted=gen.dups,
        id_conflicts_planted=gen.conflicts,
        late_planted=gen.late,
        malformed_planted=dict(sorted(gen.malformed.items())),
        corrupt_gzip_readable_lines=readable,
    )
