"""A seeded fuzz run over every webhook route, headers included (issue 20, item 5).

5,600 requests through the ASGI app: hostile ``Content-Length`` and timestamp headers (Unicode
digits such as "²" that ``str.isdigit()`` accepts and ``int()`` refuses, huge, negative, blank),
wrong or missing secrets and signatures, random and near-valid bodies. Unauthenticated requests
come first and must write nothing at all; then authenticated ones with fuzzed bodies. None may
answer 5xx. The seed and the counts are printed so a failure can be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections import Counter
from urllib.parse import quote, urlencode

import httpx

from tests.test_consent_webhook import BASE, HUBSPOT_SECRET, OTHER_SECRET, SECRET, Env

SEED = 20261201
UNAUTHENTICATED, AUTHENTICATED = 4000, 1600

# Header values as raw bytes (Starlette decodes them as latin-1): b"\xb2" arrives as "²".
HOSTILE_NUMBERS = [b"\xb2", b"\xb9\xb2\xb3", "\u0661\u0662".encode(), b"-1", b"+5", b" 12", b"1e3", b"0x10",
                   b"99999999999999999999999", b"", b"12 ", b"\x00", b"1_000", b"\xbd", b"NaN"]
EMAILS = ["ann@example.com", "bob@example.com", "a\x00@b.c", "no-at-sign", "x" * 400 + "@a.b", "\ud800@x.y"]


def _hubspot_sig(secret: str, url: str, body: bytes, stamp: str) -> str:
    raw = body.decode("utf-8", "surrogateescape")
    message = f"POST{url}{raw}{stamp}".encode("utf-8", "surrogateescape")
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def _pref_sig(secret: str, stamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Fuzzer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def text(self, n: int = 30) -> str:
        return "".join(chr(self.rng.choice([self.rng.randrange(32, 127), self.rng.randrange(0x80, 0x3000)]))
                       for _ in range(self.rng.randrange(n)))

    def body(self, route: str) -> bytes:
        r = self.rng.random()
        if r < 0.25:
            return self.rng.randbytes(self.rng.randrange(300))
        if route == "mailchimp":
            fields = [(self.pick(["type", "fired_at", "data[email]", "data[list_id]", "data[old_email]",
                                  "data[new_email]", "x"]),
                       self.pick(["unsubscribe", "subscribe", "upemail", "cleaned", "2026-01-01 00:00:00",
                                  "2099-12-31 23:59:59", "L1", self.text(), *EMAILS]))
                      for _ in range(self.rng.randrange(7))]
            return urlencode(fields, errors="surrogatepass").encode()
        if route == "hubspot":
            events = [{k: self.pick([1, -1, 2**64, "1", None, 1764000000000, 4102444800001, self.text(5),
                                     "contact.deletion", "contact.propertyChange", "hs_email_optout", "true"])
                       for k in self.rng.sample(["eventId", "objectId", "occurredAt", "subscriptionType",
                                                 "propertyName", "propertyValue", "portalId"], self.rng.randrange(8))}
                      for _ in range(self.rng.randrange(4))]
            return json.dumps(self.pick([events, events, {}, "x", 1, None])).encode()
        doc = {k: self.pick([*EMAILS, {"email_marketing": False}, {"profiling": True}, {"x": 1}, True, 5,
                             "2026-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "n1", None, self.text()])
               for k in self.rng.sample(["email", "purposes", "occurred_at", "notice_version", "ip", "x"],
                                        self.rng.randrange(7))}
        return json.dumps(doc, ensure_ascii=self.rng.random() < 0.5).encode("utf-8", "surrogatepass")

    def common_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", self.pick([b"application/json", b"application/x-www-form-urlencoded",
                                                b"text/plain", b"\xff"]))]
        if self.rng.random() < 0.4:
            headers.append((b"content-length", self.pick(HOSTILE_NUMBERS)))
        return headers

    def unauthenticated(self) -> tuple[str, str, bytes, list[tuple[bytes, bytes]]]:
        route = self.pick(["mailchimp", "hubspot", "preferences", "other"])
        tenant = self.pick(["harbor"] * 8 + ["other", "nobody", "%00", "a" * 300])
        body, headers = self.body(route), self.common_headers()
        wrong = "not-" + SECRET if tenant == "other" else OTHER_SECRET  # OTHER_SECRET is right for "other"
        if route == "mailchimp":
            secret = self.pick([wrong, SECRET[:-1], SECRET + "x", self.text(40) or "x", "%F0%9F"])
            return self.pick(["POST", "GET"]), f"/hooks/{tenant}/mailchimp/{quote(secret, safe='%')}", body, headers
        if route == "hubspot":
            stamp = self.pick([str(int(time.time() * 1000)).encode(), *HOSTILE_NUMBERS])
            headers.append((b"x-hubspot-request-timestamp", stamp))
            if self.rng.random() < 0.8:
                headers.append((b"x-hubspot-signature-v3", self.pick([b"x", base64.b64encode(self.rng.randbytes(32)),
                                                                     b"\xb2\xb2"])))
            return "POST", f"{BASE}/hooks/{tenant}/hubspot", body, headers
        if route == "preferences":
            stamp = self.pick([str(int(time.time())).encode(), *HOSTILE_NUMBERS])
            headers.append((b"x-segsync-timestamp", stamp))
            signature = _pref_sig(wrong, stamp.decode("latin-1"), body).encode()
            headers.append((b"x-segsync-signature", self.pick([signature, b"sha256=", b"\xb2", b"md5=1"])))
            return "POST", f"/hooks/{tenant}/preferences", body, headers
        method = self.pick(["GET", "PUT", "DELETE", "POST", "PATCH"])
        path = self.pick(["/hooks/harbor/hubspot", "/hooks/harbor/preferences", "/hooks", "/", "/hooks/harbor"])
        return method, path, body, headers

    def near_valid(self, route: str) -> bytes:
        """A valid body with one field maybe swapped for a hostile value."""
        email = self.pick(["ann@example.com", "bob@example.com", f"p{self.rng.randrange(50)}@example.com"])
        if route == "mailchimp":
            fields = {"type": self.pick(["unsubscribe", "subscribe", "cleaned"]), "data[list_id]": "L1",
                      "fired_at": self.pick(["2026-01-01 00:00:00", "2099-12-31 23:59:59"]), "data[email]": email}
            if self.rng.random() < 0.5:
                fields[self.pick(list(fields))] = self.pick([self.text(10), *EMAILS])
            return urlencode(fields, errors="surrogatepass").encode()
        if route == "hubspot":
            event = {"eventId": self.rng.randrange(10**6), "objectId": self.pick([101, 102, 7]),
                     "occurredAt": self.pick([1764000000000, 4102444800000, int(time.time() * 1000)]),
                     "subscriptionType": "contact.deletion"}
            if self.rng.random() < 0.5:
                event[self.pick(list(event))] = self.pick([-1, 2**64, "1", None, self.text(5)])
            return json.dumps([event]).encode()
        doc = {"email": email, "purposes": {"email_marketing": self.rng.random() < 0.5},
               "occurred_at": "2026-01-01T00:00:00Z", "notice_version": "n1"}
        if self.rng.random() < 0.5:
            doc[self.pick(list(doc))] = self.pick([*EMAILS, 5, None, "2099-01-01T00:00:00Z", {"x": True}])
        return json.dumps(doc).encode("utf-8", "surrogatepass")

    def authenticated(self) -> tuple[str, str, bytes, list[tuple[bytes, bytes]]]:
        route = self.pick(["mailchimp", "hubspot", "preferences"])
        body = self.near_valid(route) if self.rng.random() < 0.4 else self.body(route)
        headers = [(b"content-type", b"application/json")]
        if route == "mailchimp":
            return "POST", f"/hooks/harbor/mailchimp/{SECRET}", body, headers
        if route == "hubspot":
            stamp = str(int(time.time() * 1000))
            url = f"{BASE}/hooks/harbor/hubspot"
            headers += [(b"x-hubspot-request-timestamp", stamp.encode()),
                        (b"x-hubspot-signature-v3", _hubspot_sig(HUBSPOT_SECRET, url, body, stamp).encode())]
            return "POST", url, body, headers
        stamp = str(int(time.time()))
        headers += [(b"x-segsync-timestamp", stamp.encode()),
                    (b"x-segsync-signature", _pref_sig(SECRET, stamp, body).encode())]
        return "POST", "/hooks/harbor/preferences", body, headers


async def _send(client: httpx.AsyncClient, requests, statuses: Counter) -> list[str]:
    problems = []
    for method, path, body, headers in requests:
        r = await client.request(method, path, content=body, headers=headers)
        statuses[r.status_code] += 1
        if r.status_code >= 500:
            problems.append(f"{r.status_code} for {method} {path[:80]} headers={headers!r}: {r.text[:200]}")
    return problems


def test_seeded_fuzz_over_every_hook_no_5xx_and_no_write_before_authentication(sqlite_url) -> None:
    env = Env(sqlite_url)
    fuzz = Fuzzer(random.Random(SEED))
    refused, accepted = Counter(), Counter()
    try:
        unauth = [fuzz.unauthenticated() for _ in range(UNAUTHENTICATED)]
        problems = env.loop.run_until_complete(_send(env.client, unauth, refused))
        assert problems == [], problems[:5]
        assert env.counts() == (0, 0, 0, 0), "an unauthenticated request wrote to the ledger"
        assert all(status in (400, 401, 404, 405, 413) for status in refused)
        assert refused[200] == 0  # not even Mailchimp's validation GET answers 200 to a wrong secret
        auth = [fuzz.authenticated() for _ in range(AUTHENTICATED)]
        problems = env.loop.run_until_complete(_send(env.client, auth, accepted))
        assert problems == [], problems[:5]
    finally:
        env.close()
    print(f"\nfuzz seed {SEED}: unauthenticated {dict(sorted(refused.items()))}, "
          f"authenticated {dict(sorted(accepted.items()))}")
    assert sum(refused.values()) + sum(accepted.values()) >= 5000
    assert accepted[200] > 0 and accepted[400] > 0  # the authenticated phase reached both outcomes
