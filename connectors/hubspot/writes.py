"""What segsync writes to HubSpot: its schema, property values in batches, and opt-outs.

Kept apart from the pulls so each file stays small; :class:`WriteMixin` needs ``self.client``
(a :class:`~connectors.hubspot.client.HubSpotClient`) and ``self.marketing_subscriptions()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connectors.base import ADOPTED, CREATED, CREATING, LOST, ObjectLedger, PropertyUpdate, RecordResult, VendorObject
from connectors.hubspot import mapping as M
from connectors.hubspot import settings as S
from connectors.kit.batch import CallBudget, Verdict, send_isolating
from core.emails import normalize_email
from core.errors import ConfigError, InputError, RejectedRecordError, RetriableApiError

if TYPE_CHECKING:
    from connectors.hubspot.client import HubSpotClient

log = logging.getLogger("segsync.hubspot")


def _error_ids(error: Mapping[str, Any]) -> list[str]:
    context = error.get("context")
    ids = context.get("ids") if isinstance(context, Mapping) else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _error_message(error: Mapping[str, Any]) -> str:
    message = str(error.get("message") or error.get("category") or "rejected by HubSpot")
    category = error.get("subCategory") or error.get("category")
    return f"{message} [{category}]" if category and str(category) not in message else message


def _named_inputs(exc: RejectedRecordError, batch: Sequence[tuple[str, dict[str, str]]]) -> dict[str, str]:
    """The inputs a whole-batch 400 names as bad (HubSpot lists their ids in ``errors[].context.ids``)."""
    named: dict[str, str] = {}
    for err in (exc.body.get("errors") or []) if isinstance(exc.body, Mapping) else []:
        if isinstance(err, Mapping):
            for i in _error_ids(err):
                named.setdefault(i, _error_message(err))
    return named


def _nothing_to_clear(message: str) -> bool:
    """The segment property does not exist yet (suppression before the first push): nothing to clear."""
    return "PROPERTY_DOESNT_EXIST" in message


class WriteMixin:
    """ensure_schema, push_properties and suppress for :class:`~connectors.hubspot.HubSpotConnector`."""

    client: HubSpotClient
    marketing_subscriptions: Callable[[], list[str]]  # provided by HubSpotConnector (one cached call)
    objects: ObjectLedger  # the tenant's record of the properties segsync created or adopted
    refused: dict[str, str]  # properties found to be a customer's (by ensure_schema), with why
    adopt_properties: frozenset[str]  # crm.adopt_properties: existing properties segsync may write to

    # ----------------------------------------------------------------- schema

    def ensure_schema(self, property_name: str, segment_names: Sequence[str], score_names: Sequence[str]) -> None:
        """The ``segsync`` group, the multi-select segment property with every segment as an option, and one
        number property per score (``segsync_score_<name>``). Idempotent: when all exist, one read call.

        Options are only ever added, never removed, so a contact holding an old segment keeps a valid value.
        A property that exists and is not segsync's (see :meth:`_claim`) is left as it is: every later update
        that would write it fails, naming it (``refused``), and the rest of the run goes on.
        """
        bad = [n for n in segment_names if not n or ";" in n]
        if bad:
            raise ConfigError(f"hubspot: segment names cannot be empty or contain ';' (multi-select separator): {bad}")
        self.refused = {}
        what = "GET /crm/v3/properties/contacts"
        defs = {str(p.get("name")): p for p in M.results_of(self.client.contact_properties(), what)}
        group_ready = False

        def ensure_group() -> None:
            nonlocal group_ready
            if not group_ready:
                self.client.create_group(S.PROPERTY_GROUP, S.PROPERTY_GROUP_LABEL)  # 409: it exists, fine
                group_ready = True

        wanted = list(dict.fromkeys(segment_names))
        segment = defs.get(property_name)
        if segment is None:
            ensure_group()
            self._record(property_name, CREATING)  # before the call: a crash after it still knows whose it is
            status, _ = self.client.create_property({
                "name": property_name, "label": "segsync segments", "type": "enumeration", "fieldType": "checkbox",
                "groupName": S.PROPERTY_GROUP, "description": "Predictive segments written by segsync",
                "options": [{"label": v, "value": v, "displayOrder": i} for i, v in enumerate(wanted)]})
            if status == 409:  # created meanwhile by someone else: read it, and write to it only if it is ours
                self._record(property_name, LOST, "HubSpot answered 409: the name was taken meanwhile")
                defs = {str(p.get("name")): p for p in M.results_of(self.client.contact_properties(), what)}
                segment = defs.get(property_name)
            else:
                self._record(property_name, CREATED)
                segment = None
        if segment is not None:
            self._check_type(segment, property_name, "enumeration", "checkbox")
            self._claim(segment, property_name)
        if segment is not None and property_name not in self.refused:
            options = [o for o in segment.get("options") or [] if isinstance(o, Mapping)]
            have = {str(o.get("value")) for o in options}
            missing = [v for v in wanted if v not in have]
            if missing:
                kept = [{k: o[k] for k in ("label", "value", "displayOrder", "hidden", "description") if k in o}
                        for o in options]
                added = [{"label": v, "value": v, "displayOrder": len(options) + i} for i, v in enumerate(missing)]
                self.client.update_property(property_name, {"options": kept + added})
        for score in dict.fromkeys(score_names):
            name = f"{S.SCORE_PREFIX}{score}"
            if name in defs:
                self._check_type(defs[name], name, "number", None)
                self._claim(defs[name], name)
                continue
            ensure_group()
            self._record(name, CREATING)
            status, _ = self.client.create_property({"name": name, "label": f"segsync score: {score}",
                                                     "type": "number", "fieldType": "number",
                                                     "groupName": S.PROPERTY_GROUP,
                                                     "description": f"segsync score {score} (0-1 unless stated)"})
            if status == 409:
                self._record(name, LOST, "HubSpot answered 409: the name was taken meanwhile")
                self.refused[name] = (f"hubspot: contact property {name!r} was created by someone else while "
                                      "segsync was creating it; segsync does not write to it")
                continue
            self._record(name, CREATED)

    def _record(self, name: str, how: str, note: str = "") -> None:
        self.objects.record(VendorObject(S.PROPERTY_KIND, S.PROPERTY_SCOPE, name, name, how, note))

    def _claim(self, prop: Mapping[str, Any], name: str) -> None:
        """Write only to a property segsync created or was given; a customer's goes to ``refused`` with why.

        Segsync's own: recorded as created (or as being created when a crash lost HubSpot's answer), listed
        under ``crm.adopt_properties``, or - the upgrade rule for an install from before segsync recorded what
        it creates - made through the API (HubSpot sets ``createdUserId`` only on properties a user made in
        HubSpot) inside segsync's own property group.
        """
        rec = self.objects.objects(S.PROPERTY_KIND, S.PROPERTY_SCOPE).get(name)
        if rec is not None and rec.how == CREATING:
            self._record(name, CREATED, "created; recorded after the create call's answer was lost")
            return
        if rec is not None and rec.owned:
            return
        if prop.get("hubspotDefined"):
            self.refused[name] = (f"hubspot: contact property {name!r} is one of HubSpot's own properties: segsync "
                                  "never writes to it; set push.crm_property (or the score's name) to another name")
            return
        if name in self.adopt_properties:
            self._record(name, ADOPTED, "listed under crm.adopt_properties")
            return
        if prop.get("groupName") == S.PROPERTY_GROUP and not prop.get("createdUserId"):
            self._record(name, ADOPTED, "upgrade: made through the API in segsync's property group")
            return
        who = (f"made by HubSpot user {prop['createdUserId']}" if prop.get("createdUserId")
               else f"in property group {prop.get('groupName')!r}")
        self.refused[name] = (f"hubspot: contact property {name!r} already exists ({who}) and segsync did not "
                              "create it: segsync never overwrites a customer's property. Set push.crm_property to "
                              f"another name (or rename the score), or let segsync write to it by listing {name!r} "
                              "under crm.adopt_properties")

    @staticmethod
    def _check_type(prop: Mapping[str, Any], name: str, type_: str, field_type: str | None) -> None:
        if prop.get("type") != type_ or (field_type and prop.get("fieldType") != field_type):
            want = f"{type_}/{field_type}" if field_type else type_
            raise ConfigError(f"hubspot: contact property {name!r} exists as {prop.get('type')}/"
                              f"{prop.get('fieldType')}, but segsync needs {want}; rename push.crm_property "
                              "or change the property in HubSpot")

    # ----------------------------------------------------------------- push

    def push_properties(self, updates: Sequence[PropertyUpdate]) -> list[RecordResult]:
        """Batch updates of 100; one result per update ("sent", or "failed" with HubSpot's message).

        No updates, no calls. Two updates of one contact are merged (later values win) into one input.
        If HubSpot stops answering (retries exhausted), the unsent records are failed with that reason.
        """
        merged: dict[str, dict[str, str]] = {}
        for update in updates:
            merged.setdefault(str(update.key), {}).update(update.properties)
        results: dict[str, RecordResult] = {}
        for k, props in merged.items():
            if not props:
                results[k] = RecordResult(k, "skipped", "no properties to write")
            elif theirs := [n for n in props if n in self.refused]:  # nothing half-written: the whole record
                results[k] = RecordResult(k, "failed", self.refused[theirs[0]])
        keys = [k for k in merged if k not in results]
        for n in range(0, len(keys), S.BATCH_SIZE):
            chunk = [(k, merged[k]) for k in keys[n:n + S.BATCH_SIZE]]
            try:
                sent = send_isolating(chunk, self._send, key=lambda item: item[0], budget=CallBudget(S.SPLIT_CALLS),
                                      named=_named_inputs, message=lambda exc: exc.detail)
            except RetriableApiError as exc:
                for k in keys[n:]:
                    results.setdefault(k, RecordResult(k, "failed", str(exc)))
                break
            results.update({k: RecordResult(k, outcome, message) for k, (outcome, message) in sent.items()})  # type: ignore[arg-type]
        gone = [k for k, r in results.items() if r.outcome == "failed" and "OBJECT_NOT_FOUND" in r.message]
        if gone:
            results.update(self._resend_merged(gone, merged))
        return [results[str(u.key)] for u in updates]

    def merged_ids(self, ids: Sequence[str]) -> dict[str, str]:
        """old id -> the id of the record it was merged into, for ids HubSpot no longer has as live records.

        HubSpot merges now make a new record; reading an old id answers with the merged record (its new id).
        An id that is really gone (deleted) maps to nothing. One read per id, remembered.
        """
        moved: dict[str, str] = getattr(self, "_moved", {})
        self._moved = moved
        for old in ids:
            if old in moved:
                continue
            response = self.client.request("GET", f"/crm/v3/objects/contacts/{old}", endpoint=S.EP_LIST,
                                           params={"properties": "hs_object_id"}, accept=(404,))
            body = response.json() if response.status_code == 200 and response.content else None
            new = str(body.get("id") or "") if isinstance(body, Mapping) else ""
            if new and new != old:
                moved[old] = new
        return {old: moved[old] for old in ids if old in moved}

    def _resend_merged(self, gone: Sequence[str], merged: Mapping[str, dict[str, str]]) -> dict[str, RecordResult]:
        """Send updates that failed because their record was merged away again, to the merged record."""
        moved = self.merged_ids(gone)
        if not moved:
            return {}
        again = self.push_properties([PropertyUpdate(new, merged[old]) for old, new in moved.items()])
        return {old: RecordResult(old, r.outcome, f"{r.message} (contact {old} was merged into {new})".strip())
                for (old, new), r in zip(moved.items(), again, strict=True)}

    def _send(self, batch: Sequence[tuple[str, dict[str, str]]]) -> dict[str, Verdict]:
        """One batch/update call; its 207 answer read record by record (a whole-batch 400 raises)."""
        status, body = self.client.batch_update([{"id": k, "properties": props} for k, props in batch])
        if not isinstance(body, Mapping):
            raise InputError(f"hubspot: batch/update answered {status} without a JSON body")
        failed: dict[str, str] = {}
        loose: list[str] = []
        keys = {k for k, _ in batch}
        for err in body.get("errors") or []:
            if not isinstance(err, Mapping):
                continue
            ids = [i for i in _error_ids(err) if i in keys]
            for i in ids:
                failed[i] = f"{failed[i]}; {_error_message(err)}" if i in failed else _error_message(err)
            if not ids:
                loose.append(_error_message(err))
        confirmed = {str(r.get("id")) for r in body.get("results") or [] if isinstance(r, Mapping)}
        out: dict[str, Verdict] = {}
        for k, _ in batch:
            if k in failed:
                out[k] = ("failed", failed[k])
            elif loose and k not in confirmed:
                out[k] = ("failed", "; ".join(loose))
            else:
                out[k] = ("sent", "")
        return out

    # ----------------------------------------------------------------- suppress

    def suppress(self, email: str, vendor_id: str | None, property_name: str) -> RecordResult:
        """Unsubscribe the address from every marketing subscription (one v4 batch write, with segsync's legal
        basis note) and clear segsync's segment property. "Already unsubscribed", "no such contact" and "no such
        property yet" are success."""
        address = normalize_email(email)
        key = vendor_id or address or ""
        if address is None:
            return RecordResult(key, "failed", "no email address to unsubscribe")
        problems: list[str] = []
        unsubscribed = self.unsubscribe_many([(address, vendor_id)])[address]
        if unsubscribed.outcome == "failed":
            problems.append(unsubscribed.message)
        if property_name:  # empty: segsync never wrote a segment there, so there is nothing to clear
            self._clear(address, vendor_id, property_name, problems)
        if problems:
            return RecordResult(key, "failed", "; ".join(problems))
        return RecordResult(key, "sent")

    def unsubscribe_many(self, people: Sequence[tuple[str, str | None]]) -> dict[str, RecordResult]:
        """Unsubscribe many addresses from every marketing subscription type in v4 batch writes of 100.

        One call per 100 (address, type) pairs instead of one per pair; an input HubSpot refuses fails that
        address with HubSpot's message ("already unsubscribed" is success).
        """
        results: dict[str, RecordResult] = {}
        addresses: dict[str, str] = {}
        for email in dict(people):  # by address: communication preferences know people by email
            address = normalize_email(email)
            if address is None:
                results[email] = RecordResult(email, "failed", "no email address to unsubscribe")
            else:
                addresses[address] = email
        subscriptions = self.marketing_subscriptions()
        if not subscriptions:
            problem = "the portal has no active marketing subscription type to unsubscribe from"
            return results | {e: RecordResult(e, "failed", problem) for e in addresses.values()}
        inputs = [{"subscriberIdString": a, "subscriptionId": sid, "statusState": "UNSUBSCRIBED", "channel": "EMAIL",
                   "legalBasis": S.UNSUBSCRIBE_LEGAL_BASIS, "legalBasisExplanation": S.UNSUBSCRIBE_EXPLANATION}
                  for a in addresses for sid in subscriptions]
        problems: dict[str, list[str]] = {}
        for n in range(0, len(inputs), S.BATCH_SIZE):
            chunk = inputs[n:n + S.BATCH_SIZE]
            try:
                _, body = self.client.write_statuses(chunk)
            except RejectedRecordError as exc:  # the whole batch refused: every address in it fails, retried later
                for item in chunk:
                    problems.setdefault(str(item["subscriberIdString"]), []).append(exc.detail)
                continue
            for err in (body or {}).get("errors") or [] if isinstance(body, Mapping) else []:
                if not isinstance(err, Mapping) or "already" in str(err.get("message") or "").lower():
                    continue
                context = err.get("context")
                named = context.get("subscriberIdString") if isinstance(context, Mapping) else None
                for address in named if isinstance(named, list) else []:
                    key = normalize_email(str(address)) or str(address)
                    problems.setdefault(key, []).append(_error_message(err))
        for address, email in addresses.items():
            if address in problems:
                results[email] = RecordResult(email, "failed", "; ".join(problems[address]))
            else:
                results[email] = RecordResult(email, "sent", f"unsubscribed from {', '.join(subscriptions)}")
        return results

    def _clear(self, address: str, vendor_id: str | None, property_name: str, problems: list[str]) -> None:
        if vendor_id:  # by id, following a merge (a clear sent to a merged-away id is not done)
            for result in self.push_properties([PropertyUpdate(vendor_id, {property_name: ""})]):
                if result.outcome == "failed" and not _nothing_to_clear(result.message) and not (
                        "OBJECT_NOT_FOUND" in result.message and not self.merged_ids([vendor_id])):
                    problems.append(f"clear {property_name}: {result.message}")
            return
        item: dict[str, Any] = {"id": address, "idProperty": "email", "properties": {property_name: ""}}
        try:
            _, body = self.client.batch_update([item])
        except RejectedRecordError as exc:
            if not _nothing_to_clear(exc.detail):
                problems.append(f"clear {property_name}: {exc.detail}")
        else:
            for err in (body or {}).get("errors") or []:
                if isinstance(err, Mapping) and err.get("category") != "OBJECT_NOT_FOUND" and not _nothing_to_clear(
                        _error_message(err)):
                    problems.append(f"clear {property_name}: {_error_message(err)}")
