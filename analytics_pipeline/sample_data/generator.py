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

Two options for benchmark-sized days, neither of which changes the default output:

* ``sdk_payloads=True`` gives every person the context and top-level fields a real
  library sends (analytics.js: userAgentData, screen, timezone, campaign, ``_metadata``;
  the mobile libraries: app, device, os, network, screen), about 1.1 KB a line instead
  of 0.65 KB. Those values come from a second random stream, so the events themselves
  (ids, people, times, faults) are the same as without the option.
* ``spool_dir`` keeps the lines waiting for their arrival folder in files there instead of
  in memory (an index of 16 bytes a line stays in memory), so a 10M-event day needs about
  0.5 GB instead of tens of GB. The files written are byte-identical.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import mmap
import random
import zlib
from array import array
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
    "wrong_field_type", "line_too_long", "schema_violation", "duplicate_key",
)  # fmt: skip
BOM = b"\xef\xbb\xbf"  # planted at the start of the first folder's first file (stripped, counted)
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
    boms_planted: int = 0  # files opened with a UTF-8 byte-order mark (not a fault: it is stripped)


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


# What real libraries send besides the fields the pipeline reads (``sdk_payloads=True``).
_TIMEZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Tokyo", "Europe/London",
              "America/Los_Angeles")  # fmt: skip
_CAMPAIGNS = (("spring_sale", "google", "cpc", "running shoes"), ("newsletter_42", "email", "email", ""),
              ("retargeting", "facebook", "paid_social", "sneakers"))  # fmt: skip
_CARRIERS = ("Vodafone", "T-Mobile", "AT&T", "Orange", "")
_WEB_SCREENS = ((1920, 1080, 1), (2560, 1440, 1), (1440, 900, 2), (1366, 768, 1))
_PHONES = {
    "analytics-ios": ("Apple", ("iPhone15,2", "iPhone14,5", "iPhone16,1"), "ios", "iOS", "17.2", (390, 844, 3)),
    "analytics-android": ("Google", ("Pixel 8", "Pixel 7a", "SM-S911B"), "android", "Android", "14",
                          (412, 915, 2.625)),
}  # fmt: skip


def _sdk_fields(rng: random.Random, library: str, agent: str, anon: str) -> tuple[dict[str, Any], str]:
    """A person's extra context fields and the extra top-level fields (pre-encoded JSON members)."""

    def uid() -> str:
        h = f"{(rng.getrandbits(128) & _UUID_KEEP) | _UUID_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    extra: dict[str, Any] = {}
    if library in _PHONES:
        maker, models, kind, os_name, os_version, (width, height, density) = _PHONES[library]
        model = rng.choice(models)
        extra["app"] = {"name": "Shop", "version": "3.2.0", "build": "320", "namespace": "com.example.shop"}
        extra["device"] = {"id": uid(), "manufacturer": maker, "model": model, "name": model.split(",")[0],
                           "type": kind, "adTrackingEnabled": False}  # fmt: skip
        extra["os"] = {"name": os_name, "version": os_version}
        wifi = rng.random() < 0.6
        extra["network"] = {"wifi": wifi, "cellular": not wifi, "bluetooth": False,
                            "carrier": rng.choice(_CARRIERS)}  # fmt: skip
        extra["screen"] = {"width": width, "height": height, "density": density}
        extra["traits"] = {"anonymousId": anon}
        channel = "mobile"
    else:
        chrome = "Chrome" in agent
        width, height, density = rng.choice(_WEB_SCREENS)
        extra["userAgentData"] = {
            "brands": [{"brand": "Not_A Brand", "version": "8"}, {"brand": "Chromium", "version": "120"},
                       {"brand": "Google Chrome", "version": "120"}] if chrome else [],
            "mobile": False, "platform": "Windows" if "Windows" in agent else "Linux",
        }  # fmt: skip
        extra["screen"] = {"width": width, "height": height, "density": density,
                           "innerWidth": width - 17, "innerHeight": height - 111}  # fmt: skip
        if rng.random() < 0.3:
            name, source, medium, term = rng.choice(_CAMPAIGNS)
            extra["campaign"] = {"name": name, "source": source, "medium": medium, "term": term,
                                 "content": f"variant_{rng.choice('abc')}"}  # fmt: skip
        channel = "client"
    extra["timezone"] = rng.choice(_TIMEZONES)
    extra["instanceId"] = uid()
    top = {"integrations": {}, "channel": channel, "version": 2}
    if library == "analytics.js":
        top["_metadata"] = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    return extra, "," + _encode(top)[1:-1]


class _Person:
    __slots__ = ("index", "anon", "user", "prospect", "name", "currency", "ctx", "ctx_head", "ctx_tail")

    def __init__(self, index: int, anon: str, user: str | None, prospect: bool, name: str,
                 currency: str, ctx: dict[str, Any],
                 sdk: tuple[dict[str, Any], str] | None = None) -> None:  # fmt: skip
        self.index, self.anon, self.user, self.prospect = index, anon, user, prospect
        self.name, self.currency, self.ctx = name, currency, ctx
        sent = {**ctx, **sdk[0]} if sdk else ctx
        self.ctx_head = _encode(sent)[:-1] + ',"page":'  # + page JSON + ctx_tail = context JSON
        # closes the context; with sdk payloads the top-level fields after it follow
        self.ctx_tail = "}" + sdk[1] if sdk else "}"


class _Spool:
    """The lines waiting for one arrival folder, in a file: the line bytes on disk, in memory
    only their sort keys and offsets (``spool_dir``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("wb", buffering=8 << 20)
        self.keys = array("q")
        self.offsets = array("q")
        self.size = 0

    def append(self, sort_key: int, line: bytes) -> None:
        self.keys.append(sort_key)
        self.offsets.append(self.size)
        self.handle.write(line)
        self.size += len(line)

    def __len__(self) -> int:
        return len(self.keys)

    def sorted_chunks(self, count: int) -> Any:
        """``count`` contiguous runs of the lines in (sort key, arrival) order, each as an
        iterator of byte blocks: what ``sorted()`` of the in-memory entries gives."""
        import numpy as np

        self.handle.close()
        n = len(self.keys)
        order = np.argsort(np.frombuffer(self.keys, dtype=np.int64), kind="stable")  # ties: put order
        starts = np.frombuffer(self.offsets, dtype=np.int64)
        ends = np.append(starts[1:], self.size)
        with self.path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for i in range(count):
                lo, hi = i * n // count, (i + 1) * n // count
                yield self._blocks(data, starts[order[lo:hi]].tolist(), ends[order[lo:hi]].tolist())
        self.path.unlink()

    @staticmethod
    def _blocks(data: mmap.mmap, starts: list[int], ends: list[int], per_block: int = 20_000) -> Any:
        for k in range(0, len(starts), per_block):
            yield b"".join([data[s:e] for s, e in zip(starts[k : k + per_block], ends[k : k + per_block],
                                                        strict=True)])  # fmt: skip


class _Generator:
    """Holds the one rng, the lines waiting per arrival folder and the counters."""

    def __init__(self, landing: Path, first_day: int, epd: int, seed: int, faults: FaultRates,
                 gzip_files: bool, files_per_day: int, sdk_payloads: bool = False,
                 spool_dir: Path | None = None) -> None:  # fmt: skip
        self.rng = random.Random(seed)
        self.landing, self.first_day, self.epd, self.f = landing, first_day, epd, faults
        self.gzip_files, self.files_per_day = gzip_files, files_per_day
        self.pending: dict[int, list[tuple[int, int, bytes]]] = {}
        self.spool_dir = spool_dir
        self.spools: dict[int, _Spool] = {}
        sdk_rng = random.Random(f"sdk-payloads-{seed}") if sdk_payloads else None  # its own stream
        self.seq = 0
        self.folders: set[int] = set()
        self.files = self.lines = self.events = self.dups = self.conflicts = self.late = 0
        self.malformed: dict[str, int] = {}
        self.malformed_today = 0
        self.cycle = 0
        self.long_line_done = False
        self.boms = 0
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
            anon = self.uid()
            sdk = _sdk_fields(sdk_rng, lib_name, agent, anon) if sdk_rng else None
            self.people.append(_Person(i, anon, user, kind >= 0.75,
                                       rng.choice(_NAMES), currency, ctx, sdk))  # fmt: skip

    def uid(self) -> str:
        """Same text as ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, faster."""
        n = (self.rng.getrandbits(128) & _UUID_KEEP) | _UUID_SET
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def between(self, low: int, high: int) -> int:
        """Like ``randint`` (both ends included) at a third of its cost."""
        return low + int(self.rng.random() * (high - low + 1))

    def put(self, folder: int, sort_key: int, line: bytes) -> None:
        if self.spool_dir is not None:
            if folder not in self.spools:
                self.spools[folder] = _Spool(self.spool_dir / f"{folder}.lines")
                self.pending[folder] = []  # marks the folder as waiting
            self.spools[folder].append(sort_key, line)
            return
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
        ctx = p.ctx_head + _page_json(page) + p.ctx_tail
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
                ctx = p.ctx_head + _page_json(page) + p.ctx_tail
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
            elif reason == "duplicate_key":  # the first messageId is the one DuckDB would read
                line = _line(msg)[:-2] + f',"messageId":"{msg["messageId"][::-1]}"}}\n'.encode()
            elif reason == "schema_violation":
                msg["event"] = "Order Completed"
                odd = self.cycle % 2 == 1  # alternate: negative revenue / unknown currency
                order = f"ord_{rng.getrandbits(48):012x}"
                msg["properties"] = {"order_id": order, "revenue": -5.0 if odd else 12.5,
                                     "currency": "USD" if odd else "XYZ"}  # fmt: skip
            if reason != "duplicate_key":
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
        if folder in self.spools:
            self.pending.pop(folder)
            self.flush_spool(folder, self.spools.pop(folder))
            return
        entries = sorted(self.pending.pop(folder, []))
        count = min(self.files_per_day, len(entries))
        for i in range(count):
            lo, hi = i * len(entries) // count, (i + 1) * len(entries) // count
            data = self.bom() + b"".join(entry[2] for entry in entries[lo:hi])
            if self.gzip_files:
                self.write(folder, f"part-{i:03d}.jsonl.gz", _gzip(data))
            else:
                self.write(folder, f"part-{i:03d}.jsonl", data)
        self.lines += len(entries)

    def flush_spool(self, folder: int, spool: _Spool) -> None:
        """``flush`` for a spooled folder: the same files, written block by block."""
        count = min(self.files_per_day, len(spool))
        out = self.landing / _day_str(folder)
        out.mkdir(parents=True, exist_ok=True)
        for i, chunk in enumerate(spool.sorted_chunks(count)):
            blocks = itertools.chain((self.bom(),), chunk)
            if self.gzip_files:
                with (
                    (out / f"part-{i:03d}.jsonl.gz").open("wb") as raw,
                    gzip.GzipFile(
                        fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL
                    ) as handle,
                ):
                    for block in blocks:
                        handle.write(block)
            else:
                with (out / f"part-{i:03d}.jsonl").open("wb") as handle:
                    for block in blocks:
                        handle.write(block)
            self.folders.add(folder)
            self.files += 1
        self.lines += len(spool)

    def bom(self) -> bytes:
        """A byte-order mark for the first file written when faults are planted, else nothing."""
        if self.f.malformed > 0 and not self.boms:
            self.boms = 1
            return BOM
        return b""

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
             files_per_day: int = 3, sdk_payloads: bool = False,
             spool_dir: Path | None = None) -> GeneratedSummary:  # fmt: skip
    """Write ``days`` days of events into ``landing_dir`` and return exact counts.

    ``sdk_payloads`` and ``spool_dir``: see the module docstring (benchmark-sized days).
    """
    if days < 1 or events_per_day < 0 or files_per_day < 1:
        raise ValueError("need days >= 1, events_per_day >= 0 and files_per_day >= 1")
    first = start_date.toordinal() - _EPOCH_ORDINAL
    if spool_dir is not None:
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
    gen = _Generator(Path(landing_dir), first, events_per_day, seed, faults, gzip_files, files_per_day,
                     sdk_payloads, Path(spool_dir) if spool_dir is not None else None)  # fmt: skip
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
        boms_planted=gen.boms,
    )
