"""A simulated RusticAI guild: the keyspace of an order pipeline, without RusticAI.

:func:`simulate_guild` returns the Redis keys that RusticAI 1.4's Redis messaging
backend leaves behind after a small order-processing guild has run for one and a
half message lifetimes. The keys are byte-compatible with the real backend: message
JSON with RusticAI's field order and compact separators, GemstoneIDs whose priority
and timestamp match the JSON, one topic key member per topic, ``msg:`` copies with a
time to live, ``eo:pos`` delivery positions, managed-state hashes and a key-value
store hash. Everything is derived from the seed and the injected clock ``now_ms``,
so the same arguments always give the same bytes.

The demo guild
--------------
Agents, with the machine id their GemstoneIDs carry:

- ``<guild_id>#manager_agent`` (1), the guild manager: health checks and reports,
  state updates, user-agent creation;
- ``validator`` (2), ``pricing`` (3), ``inventory`` (4) and ``notifier`` (5), the
  order pipeline;
- ``orders_client`` (6), an outside probe that sends orders, pings and a state fetch;
- ``upa-alice`` (7), a user proxy created part-way through, fed by
  ``user_socket:alice`` (8, the API server's websocket);
- the messaging backend itself (0), which writes the dead letters.

Traffic:

- each order runs ``orders.in`` -> validator -> ``orders.validated`` -> pricing ->
  ``orders.priced`` + ``orders.audit`` -> inventory -> ``orders.reserved`` ->
  notifier -> ``orders.done`` + ``agent_inbox:orders_client``, carrying the
  remaining routing slip, a growing ``message_history`` and one trace id; VIP
  orders continue at priority 1 after pricing; inventory and notifier update agent
  and guild state through ``state_topic``;
- three orders typed by Alice arrive wrapped on ``user:alice`` and pass through the
  user proxy first, which makes histories six hops deep;
- the failures a debugger looks for: unknown SKUs rejected with ``send_error``
  (``orders.rejected`` and ``error_topic``), an order without lines that makes the
  validator raise (an ``ErrorMessage`` on ``error_topic``), and orders without a
  customer that break the validator's predicate and end in ``dead_letter_queue``;
- one bulk order whose payload is about 20 KB;
- pings from the probe to each worker's ``agent_inbox`` cycling through all eight
  priorities, answered on ``agent_inbox:orders_client``;
- self-ready notifications, heartbeats, health reports on ``guild_status_topic``
  (forwarded to ``user_system_notification:alice``), a guild update announcement
  and a final state fetch on ``state_topic``.

Traffic starts ``1.5 * msg_ttl_s`` seconds before ``now_ms``, so the ``msg:`` copies
of the oldest third of the messages have expired and are left out while their topic
key members remain, as on a live server an hour after the fact.
"""

from __future__ import annotations

import copy
import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from rdebug_nb.ids import encode_id
from rdebug_nb.snapshot import KeyRecord

__all__ = ["simulate_guild"]

Body = dict[str, Any]
Topics = str | list[str]
Stored = tuple[Body, list[tuple[str, bytes]]]
Event = tuple[int, Callable[[], None]]

_ORDERS: Final = "acme_agents.orders."
_HEALTH: Final = "rustic_ai.core.guild.agent_ext.mixins.health."
_STATE: Final = "rustic_ai.core.state.models."
_SYSTEM: Final = "rustic_ai.core.agents.system.models."
_READY: Final = "rustic_ai.core.guild.agent.SelfReadyNotification"
_ERROR: Final = "rustic_ai.core.agents.commons.message_formats.ErrorMessage"
_WRAPPED: Final = "rustic_ai.core.messaging.core.message.Message"
_REQUEST: Final = _ORDERS + "OrderRequest"
_LOOKUP_FAILED: Final = "catalog lookup failed"
_REJECTED: Final = "order rejected by validator"
_USER: Final = "alice"
_SHARED_TOPICS: Final = ("heartbeat", "guild_status_topic", "state_topic")
_BACKEND: Final = {"id": "messaging_backend", "name": "MessagingBackend"}
_PRICES: Final = {
    "sprocket": 0.4,
    "gizmo": 99.99,
    "widget": 12.5,
    "doohickey": 3.75,
    "flange": 7.2,
}
_CUSTOMERS: Final = (
    "Hooli",
    "Vandelay Import/Export",
    "Initech",
    "Globex",
    "Müller & Söhne GmbH",
    "Café Olé",
    "Wonka Industries",
    "Umbrella Corp",
)
_NOTES: Final = {"bulk": "quarterly restock, ship in one pallet", "vip": "gift wrap"}
_SPECIAL_KINDS: Final = ("bulk", "reject", "reject", "reject", "crash", "dead", "dead")
_USER_KINDS: Final = ("normal", "vip", "reject")
_ORDER_PRIORITIES: Final = (4, 4, 4, 4, 4, 2, 3, 5)
_MIN_ORDERS: Final = 10
_MIN_TTL_S: Final = 60
_HEALTH_ROUNDS: Final = 5
_PINGS: Final = 16
_BULK_LINES: Final = 600
_STOCK: Final = 5000


def simulate_guild(
    guild_id: str = "demo-orders",
    *,
    seed: int = 0,
    now_ms: int,
    orders: int = 40,
    org_id: str = "demo-org",
    msg_ttl_s: int = 3600,
) -> list[KeyRecord]:
    """Generate the keyspace a RusticAI 1.4 order guild leaves in Redis.

    Parameters
    ----------
    guild_id : str, default "demo-orders"
        The guild id, used as the namespace of every key.
    seed : int, default 0
        Seed of the random generator that picks orders, latencies and trace ids.
    now_ms : int
        Unix time in milliseconds when the traffic ends and the keyspace is read;
        ``ttl_ms`` of the ``msg:`` keys is measured from it.
    orders : int, default 40
        Orders sent by the probe (at least 10); Alice adds three more.
    org_id : str, default "demo-org"
        Organisation id, used in the name of the inventory's key-value store hash.
    msg_ttl_s : int, default 3600
        Time to live of the ``msg:`` keys (``RUSTIC_AI_REDIS_MSG_TTL``), at least 60.

    Returns
    -------
    list of KeyRecord
        Topic keys (sorted sets), ``msg:`` strings that have not expired,
        ``eo:pos:`` strings, ``managed_state:`` hashes and the key-value store
        hash, sorted by key.

    Raises
    ------
    ValueError
        If ``orders`` or ``msg_ttl_s`` is too small, or ``now_ms`` lies too close
        to 2023-01-01 for a GemstoneID.

    Notes
    -----
    Every agent has its own machine id here; in a bootstrapped RusticAI guild the
    manager and the agents it launches count from 1 separately, so two agents can
    share one. The traffic is a plausible model, not a replay: latencies are drawn
    at random and agents answer health checks instantly.

    Examples
    --------
    >>> records = simulate_guild(seed=1, now_ms=1_796_301_000_000)
    >>> zsets = {r.key: len(r.value) for r in records if r.type == "zset"}
    >>> len(zsets), zsets["demo-orders:orders.in"], zsets["demo-orders:orders.done"]
    (29, 43, 36)
    >>> records == simulate_guild(seed=1, now_ms=1_796_301_000_000)
    True
    """
    _check_arguments(orders, msg_ttl_s)
    bus, cast = _Bus(guild_id, random.Random(seed)), _cast(guild_id)
    plan = _Plan(now_ms - msg_ttl_s * 1500, now_ms)
    for _, run in sorted(_events(bus, cast, plan, orders), key=lambda event: event[0]):
        run()
    return _records(bus, org_id, now_ms, msg_ttl_s * 1000)


def _check_arguments(orders: int, msg_ttl_s: int) -> None:
    if orders < _MIN_ORDERS:
        raise ValueError(f"orders={orders} is too few; pass at least {_MIN_ORDERS}")
    if msg_ttl_s < _MIN_TTL_S:
        raise ValueError(
            f"msg_ttl_s={msg_ttl_s} is too short; pass at least {_MIN_TTL_S}"
        )


# --- the cast -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Agent:
    """One sender: its tag, class, machine id and the topics it listens to."""

    id: str
    name: str
    class_name: str
    machine_id: int
    topics: tuple[str, ...] = ()

    @property
    def tag(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}

    def listens(self) -> tuple[str, ...]:
        own = (f"agent_self_inbox:{self.id}", f"agent_inbox:{self.id}")
        return own + _SHARED_TOPICS + self.topics


@dataclass(frozen=True, slots=True)
class _Cast:
    manager: _Agent
    validator: _Agent
    pricing: _Agent
    inventory: _Agent
    notifier: _Agent
    probe: _Agent
    user: _Agent
    socket: _Agent

    @property
    def workers(self) -> tuple[_Agent, ...]:
        return (self.validator, self.pricing, self.inventory, self.notifier)

    @property
    def members(self) -> tuple[_Agent, ...]:
        return (self.manager, self.probe, *self.workers, self.user)


def _cast(guild_id: str) -> _Cast:
    probe_topics = ("orders.done", "orders.audit", "orders.rejected", "error_topic")
    user_topics = (f"user:{_USER}", "user_message_broadcast")
    return _Cast(
        manager=_Agent(
            f"{guild_id}#manager_agent",
            f"GuildManagerAgent4{guild_id}",
            "rustic_ai.core.agents.system.guild_manager_agent.GuildManagerAgent",
            1,
            ("system_topic",),
        ),
        validator=_worker("validator", "OrderValidatorAgent", 2, "orders.in"),
        pricing=_worker("pricing", "PricingAgent", 3, "orders.validated"),
        inventory=_worker("inventory", "InventoryAgent", 4, "orders.priced"),
        notifier=_worker("notifier", "NotifierAgent", 5, "orders.reserved"),
        probe=_Agent(
            "orders_client",
            "Orders Client",
            "rustic_ai.testing.helpers.ProbeAgent",
            6,
            (*probe_topics, "system_topic", f"user_notifications:{_USER}"),
        ),
        user=_Agent(
            f"upa-{_USER}",
            _USER.title(),
            "rustic_ai.core.agents.utils.user_proxy_agent.UserProxyAgent",
            7,
            (*user_topics, f"user_system_notification:{_USER}"),
        ),
        socket=_Agent(f"user_socket:{_USER}", _USER.title(), "websocket", 8),
    )


def _worker(agent_id: str, class_name: str, machine_id: int, topic: str) -> _Agent:
    name = agent_id.title()
    return _Agent(agent_id, name, _ORDERS + class_name, machine_id, (topic,))


# --- routing slip ---------------------------------------------------------------


def _rule(agent_type: str, fmt: str, topics: Topics, **fields: Any) -> Body:
    rule: Body = {
        "agent": None,
        "agent_type": _ORDERS + agent_type,
        "method_name": None,
        "origin_filter": None,
        "message_format": _ORDERS + fmt,
        "destination": {"topics": topics, "recipient_list": [], "priority": None},
        "mark_forwarded": False,
        "route_times": 1,
        "transformer": None,
        "agent_state_update": None,
        "guild_state_update": None,
        "process_status": None,
        "reason": None,
    }
    rule.update(fields)
    return rule


def _state_update(expression: str) -> Body:
    return {
        "expression_type": "jsonata",
        "update_format": "json-merge-patch",
        "state_update": expression,
    }


def _guild_slip() -> Body:
    vip = {
        "style": "content_based_router",
        "expression_type": "jsonata",
        "handler": '{"priority": payload.vip ? 1 : priority}',
    }
    last_order = '{"last_order": payload.order_id, "last_total": payload.total}'
    confirmed = (
        '{"orders": {"last_confirmed": payload.order_id, '
        '"last_status": payload.status}}'
    )
    steps = [
        _rule("OrderValidatorAgent", "OrderValidated", "orders.validated"),
        _rule("OrderValidatorAgent", "OrderRejected", "orders.rejected"),
        _rule("PricingAgent", "PricedOrder", ["orders.priced", "orders.audit"]),
        _rule("InventoryAgent", "ReservationResult", "orders.reserved"),
        _rule(
            "NotifierAgent",
            "OrderConfirmed",
            ["orders.done", "agent_inbox:orders_client"],
        ),
    ]
    steps[0]["process_status"] = "running"
    steps[1].update(process_status="error", reason=_REJECTED)
    steps[2].update(method_name="price", transformer=vip)
    steps[3]["agent_state_update"] = _state_update(last_order)
    steps[4].update(mark_forwarded=True, process_status="completed")
    steps[4]["guild_state_update"] = _state_update(confirmed)
    return {"steps": steps}


def _without(slip: Body | None, fmt: str) -> Body | None:
    """The slip left after the rule for ``fmt`` has been used up."""
    if slip is None:
        return None
    return {"steps": [rule for rule in slip["steps"] if rule["message_format"] != fmt]}


# --- messages -------------------------------------------------------------------


def _body(
    sender: dict[str, str],
    topics: Topics,
    payload: Body,
    fmt: str,
    at: int,
    **fields: Any,
) -> Body:
    """A message with every field in RusticAI's order; id is set on publish."""
    body: Body = {
        "sender": sender,
        "topics": topics,
        "recipient_list": [],
        "payload": payload,
        "format": fmt,
        "in_response_to": None,
        "thread": None,
        "conversation_id": None,
        "forward_header": None,
        "routing_slip": None,
        "message_history": [],
        "ttl": None,
        "is_error_message": False,
        "traceparent": None,
        "session_state": None,
        "topic_published_to": None,
        "enrich_with_history": 0,
        "process_status": None,
        "origin_guild_stack": [],
        "id": None,
        "priority": 4,
        "timestamp": float(at),
    }
    if not fields.keys() <= body.keys():
        raise KeyError(f"not message fields: {sorted(fields.keys() - body.keys())}")
    body.update(fields)
    return body


def _hop(
    agent: _Agent,
    origin: int,
    processor: str,
    from_topic: str | None,
    to_topics: list[str],
    reason: list[str] | None = None,
) -> Body:
    """A ProcessEntry; ``result`` is filled in when its message is published."""
    return {
        "agent": agent.tag,
        "origin": origin,
        "result": None,
        "processor": processor,
        "from_topic": from_topic,
        "to_topics": to_topics,
        "reason": reason,
    }


def _as_list(topics: Topics) -> list[str]:
    return [topics] if isinstance(topics, str) else list(topics)


@dataclass(frozen=True, slots=True)
class _Turn:
    """One agent handling one message; every result of the turn adds one hop."""

    origin: Body
    agent: _Agent
    processor: str
    from_topic: str | None = None


@dataclass(slots=True)
class _State:
    """A managed state document with its version and last update time."""

    value: Body = field(default_factory=dict)
    version: int = 0
    timestamp: int = 0

    def merge(self, patch: Body, at: int) -> Body:
        _merge_into(self.value, patch)
        self.version += 1
        self.timestamp = at
        return self.snapshot()

    def snapshot(self) -> Body:
        state = copy.deepcopy(self.value)
        return {"state": state, "version": self.version, "timestamp": self.timestamp}

    def to_hash(self) -> dict[bytes, bytes]:
        return {
            b"state": json.dumps(self.value, ensure_ascii=False).encode(),
            b"version": str(self.version).encode(),
            b"timestamp": str(self.timestamp).encode(),
        }


def _merge_into(target: Body, patch: Body) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class _Bus:
    """Publishes simulated messages and keeps the state they leave behind."""

    def __init__(self, guild_id: str, rng: random.Random) -> None:
        self.guild_id = guild_id
        self.rng = rng
        self.slip = _guild_slip()
        self.sent: list[Body] = []
        self.started: dict[str, tuple[_Agent, int]] = {}
        self.health: dict[str, Body] = {}
        self.states: dict[str, _State] = {}
        self.stock = dict.fromkeys(_PRICES, _STOCK)
        self.kv: dict[str, str] = {}
        self._sequences: dict[tuple[int, int], int] = {}

    def publish(self, body: Body, machine_id: int) -> Body:
        at = int(body["timestamp"])
        sequence = self._next_sequence(at, machine_id)
        body["id"] = int(encode_id(body["priority"], at, machine_id, sequence))
        if body["thread"] is None:
            body["thread"] = [body["id"]]
        history = body["message_history"]
        if history and history[-1]["result"] is None:
            history[-1]["result"] = body["id"]
        self.sent.append(body)
        return body

    def _next_sequence(self, at: int, machine_id: int) -> int:
        key = (at, machine_id)
        self._sequences[key] = self._sequences.get(key, -1) + 1
        return self._sequences[key]

    def send(
        self,
        agent: _Agent,
        topics: Topics,
        payload: Body,
        fmt: str,
        at: int,
        **fields: Any,
    ) -> Body:
        """Publish a message that answers nothing (outside clients, timers)."""
        return self.publish(
            _body(agent.tag, topics, payload, fmt, at, **fields), agent.machine_id
        )

    def answer(
        self,
        turn: _Turn,
        topics: Topics,
        payload: Body,
        fmt: str,
        *,
        reason: list[str] | None = None,
        **fields: Any,
    ) -> Body:
        """Publish what a processor sends through its context (``ctx.send``)."""
        origin = turn.origin
        fields.setdefault("routing_slip", _without(origin["routing_slip"], fmt))
        fields.setdefault("traceparent", self.span(origin["traceparent"]))
        fields.setdefault("session_state", {})
        fields.setdefault("process_status", origin["process_status"])
        to_topics = _as_list(topics)
        hop = _hop(
            turn.agent, origin["id"], turn.processor, turn.from_topic, to_topics, reason
        )
        return self._follow(turn, topics, payload, fmt, hop, fields)

    def direct(
        self, turn: _Turn, topics: Topics, payload: Body, fmt: str, **fields: Any
    ) -> Body:
        """Publish what an agent sends with ``_direct_send`` (no route, no topics)."""
        fields.setdefault("routing_slip", self.slip)
        fields.setdefault("traceparent", turn.origin["traceparent"] or self.span(None))
        hop = _hop(turn.agent, turn.origin["id"], turn.processor, None, [])
        return self._follow(turn, topics, payload, fmt, hop, fields)

    def _follow(
        self,
        turn: _Turn,
        topics: Topics,
        payload: Body,
        fmt: str,
        hop: Body,
        fields: Body,
    ) -> Body:
        origin = turn.origin
        fields.setdefault("priority", origin["priority"])
        at = fields.pop("at", None) or self.after(origin)
        history = [*origin["message_history"], hop]
        body = _body(
            turn.agent.tag,
            topics,
            payload,
            fmt,
            at,
            in_response_to=origin["id"],
            thread=list(origin["thread"]),
            message_history=history,
            ttl=origin["ttl"],
            **fields,
        )
        return self.publish(body, turn.agent.machine_id)

    def after(self, origin: Body) -> int:
        """When an answer to ``origin`` is published: a few milliseconds later."""
        return int(origin["timestamp"]) + self.rng.randint(3, 45)

    def span(self, traceparent: str | None) -> str:
        """A W3C traceparent: a new span in the same trace, or a new trace."""
        trace = (
            traceparent[3:35] if traceparent else f"{self.rng.getrandbits(128):032x}"
        )
        return f"00-{trace}-{self.rng.getrandbits(64):016x}-03"

    def clock(self, at: int) -> str:
        """A naive ISO time with microseconds, as RusticAI's health checks write."""
        moment = datetime.fromtimestamp(at // 1000, tz=UTC)
        micro = at % 1000 * 1000 + self.rng.randrange(1000)
        return moment.replace(microsecond=micro).strftime("%Y-%m-%dT%H:%M:%S.%f")

    def state(self, agent_id: str | None) -> _State:
        return self.states.setdefault(agent_id or "", _State())

    def reserve(self, order_id: str, lines: list[Body]) -> dict[str, int]:
        for line in lines:
            self.stock[line["sku"]] -= line["quantity"]
        skus = dict.fromkeys(line["sku"] for line in lines)
        self.kv["last_order"] = json.dumps({"order_id": order_id, "reserved": True})
        self.kv.update({f"stock:{sku}": str(self.stock[sku]) for sku in skus})
        return {sku: self.stock[sku] for sku in skus}


# --- the schedule ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """The time window of the traffic."""

    start: int
    end: int

    def at(self, fraction: float) -> int:
        return self.start + int((self.end - self.start) * fraction)

    def spread(self, count: int, shift: float = 0.0) -> list[int]:
        """``count`` times evenly inside the window, moved by ``shift`` steps."""
        return [self.at((step + 1 + shift) / (count + 1)) for step in range(count)]


def _events(bus: _Bus, cast: _Cast, plan: _Plan, orders: int) -> list[Event]:
    final = plan.end - 3_000
    events: list[Event] = [(plan.start, partial(_start_guild, bus, cast, plan.start))]
    events += [
        (at, partial(_health_round, bus, cast, at))
        for at in plan.spread(_HEALTH_ROUNDS)
    ]
    pings = enumerate(plan.spread(_PINGS, shift=0.37))
    events += [(at, partial(_ping, bus, cast, number, at)) for number, at in pings]
    events += _order_events(bus, cast, plan, orders)
    events += _user_events(bus, cast, plan)
    events.append((final, partial(_fetch_state, bus, cast, final)))
    return events


def _order_events(bus: _Bus, cast: _Cast, plan: _Plan, count: int) -> list[Event]:
    gap = (plan.end - plan.start - 60_000) // count
    events: list[Event] = []
    for number, kind in enumerate(_order_kinds(bus.rng, count)):
        at = plan.start + 20_000 + number * gap + bus.rng.randrange(max(1, gap // 4))
        payload = _order(bus.rng, f"ORD-{number:04d}", kind)
        priority = bus.rng.choice(_ORDER_PRIORITIES)
        events.append((at, partial(_probe_order, bus, cast, payload, priority, at)))
    return events


def _user_events(bus: _Bus, cast: _Cast, plan: _Plan) -> list[Event]:
    created = plan.at(0.4)
    events: list[Event] = [(created, partial(_add_user, bus, cast, created))]
    for number, kind in enumerate(_USER_KINDS):
        at = plan.at(0.5 + 0.15 * number)
        payload = _order(bus.rng, f"ORD-{1000 + number}", kind)
        events.append((at, partial(_user_order, bus, cast, payload, at)))
    return events


def _order_kinds(rng: random.Random, count: int) -> list[str]:
    kinds = [*_SPECIAL_KINDS, *["vip"] * (count // 5)]
    kinds += ["normal"] * (count - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _order(rng: random.Random, order_id: str, kind: str) -> Body:
    order: Body = {
        "order_id": order_id,
        "customer": rng.choice(_CUSTOMERS),
        "lines": _lines(rng, kind),
        "vip": kind == "vip",
        "note": _NOTES.get(kind),
    }
    if kind == "dead":
        del order["customer"]
    return order


def _lines(rng: random.Random, kind: str) -> list[Body]:
    count = {"bulk": _BULK_LINES, "crash": 0}.get(kind, rng.randint(1, 4))
    skus = list(_PRICES)
    lines = [
        {"sku": rng.choice(skus), "quantity": rng.randint(1, 9)} for _ in range(count)
    ]
    if kind == "reject":
        lines[-1]["sku"] = "flux-capacitor"
    return lines


# --- guild life -----------------------------------------------------------------


def _start_guild(bus: _Bus, cast: _Cast, at: int) -> None:
    # The user proxy is not in the spec: the manager creates it later on request.
    founders = (cast.manager, cast.probe, *cast.workers)
    for step, agent in enumerate(founders):
        _launch(bus, cast, agent, at + step * bus.rng.randint(150, 400))


def _launch(bus: _Bus, cast: _Cast, agent: _Agent, at: int) -> None:
    """An agent starts: self-ready notification, first heartbeat, health report."""
    ready = _self_ready(bus, agent, at)
    turn = _Turn(ready, agent, "send_first_heartbeat")
    beat = _heartbeat(bus, turn, bus.clock(int(ready["timestamp"]) + 1))
    if agent is not cast.manager:
        _report(bus, cast, beat)


def _self_ready(bus: _Bus, agent: _Agent, at: int) -> Body:
    topic = f"agent_self_inbox:{agent.id}"
    processor = agent.class_name.rsplit(".", 1)[-1] + ":self"
    history = [_hop(agent, 0, processor, None, [topic])]
    bus.started[agent.id] = (agent, at)
    payload = {"message": "Agent is ready"}
    return bus.send(
        agent,
        [topic],
        payload,
        _READY,
        at,
        routing_slip=bus.slip,
        message_history=history,
    )


def _heartbeat(bus: _Bus, turn: _Turn, checktime: str) -> Body:
    latency = bus.rng.randint(5, 30) * 0.001
    answered = bus.clock(int(turn.origin["timestamp"]) + 2)
    status = {"checktime": checktime, "checkstatus": "ok", "responsetime": answered}
    bus.health[turn.agent.id] = {**status, "checkmeta": {"observed_latency": latency}}
    payload = {
        **status,
        "checkmeta": {"qos_latency": None, "observed_latency": latency},
    }
    return bus.direct(turn, ["heartbeat"], payload, _HEALTH + "Heartbeat", priority=2)


def _health_round(bus: _Bus, cast: _Cast, at: int) -> None:
    checktime = bus.clock(at)
    check = bus.send(
        cast.manager,
        ["heartbeat"],
        {"checktime": checktime},
        _HEALTH + "HealthCheckRequest",
        at,
        routing_slip=bus.slip,
        traceparent=bus.span(None),
    )
    running = [agent for agent, _ in bus.started.values()]
    beats = [
        _heartbeat(bus, _Turn(check, agent, "send_heartbeat"), checktime)
        for agent in running
    ]
    _report(bus, cast, max(beats, key=lambda beat: beat["timestamp"]))


def _report(bus: _Bus, cast: _Cast, beat: Body) -> None:
    """The manager's health report after a heartbeat, forwarded to the user."""
    payload = {"agents": copy.deepcopy(bus.health), "guild_health": "ok"}
    turn = _Turn(beat, cast.manager, "update_agent_status")
    fmt = _HEALTH + "AgentsHealthReport"
    report = bus.direct(turn, ["guild_status_topic"], payload, fmt, priority=4)
    bus.state(None).merge(
        {"agents": {"health": payload["agents"]}}, int(report["timestamp"])
    )
    if cast.user.id in bus.started:
        forward = {"origin_message_id": report["id"], "on_behalf_of": cast.manager.tag}
        turn = _Turn(report, cast.user, "handle_agents_health_report")
        topic = f"user_system_notification:{_USER}"
        bus.direct(turn, [topic], payload, fmt, forward_header=forward)


def _ping(bus: _Bus, cast: _Cast, number: int, at: int) -> None:
    target = cast.workers[number % len(cast.workers)]
    inbox = f"agent_inbox:{target.id}"
    ping = bus.send(
        cast.probe,
        [inbox],
        {"seq": number, "q": f"ping:{number}"},
        "generic_json",
        at,
        recipient_list=[target.tag],
        priority=number % 8,
    )
    pong = {"seq": number, "a": f"pong:{number}", "agent": target.id}
    turn = _Turn(ping, target, "handle_ping", inbox)
    bus.answer(turn, ["agent_inbox:orders_client"], pong, "generic_json")


def _fetch_state(bus: _Bus, cast: _Cast, at: int) -> None:
    owner = {"state_owner": "guild", "guild_id": bus.guild_id, "agent_id": None}
    query = {"state_path": None, "version": None, "timestamp": None}
    fmt = _STATE + "StateFetchRequest"
    request = bus.send(cast.probe, "state_topic", {**owner, **query}, fmt, at)
    answered = bus.after(request)
    payload = {**owner, **bus.state(None).snapshot(), "state_path": None}
    payload.update(fetch_timestamp=answered, is_latest=True)
    turn = _Turn(request, cast.manager, "get_state_handler")
    fmt = _STATE + "StateFetchResponse"
    bus.direct(turn, ["state_topic"], payload, fmt, at=answered)


def _update_state(
    bus: _Bus, cast: _Cast, turn: _Turn, patch: Body, agent_id: str | None
) -> None:
    """A state update request on ``state_topic`` and the manager's response."""
    owner = {
        "state_owner": "guild" if agent_id is None else "agent",
        "guild_id": bus.guild_id,
        "agent_id": agent_id,
    }
    update: Body = {"update_format": "json-merge-patch", "state_update": patch}
    update |= {"update_path": None, "update_version": None, "update_timestamp": None}
    fmt = _STATE + "StateUpdateRequest"
    request = bus.direct(turn, ["state_topic"], {**owner, **update}, fmt, priority=2)
    at = bus.after(request)
    payload = {**owner, **bus.state(agent_id).merge(patch, at)}
    handler = _Turn(request, cast.manager, "update_state_handler")
    fmt = _STATE + "StateUpdateResponse"
    bus.direct(handler, ["state_topic"], payload, fmt, priority=4, at=at + 1)


# --- the order pipeline ---------------------------------------------------------


def _probe_order(bus: _Bus, cast: _Cast, order: Body, priority: int, at: int) -> None:
    request = bus.send(
        cast.probe,
        "orders.in",
        order,
        _REQUEST,
        at,
        routing_slip=bus.slip,
        priority=priority,
    )
    _validate(bus, cast, request)


def _validate(bus: _Bus, cast: _Cast, request: Body) -> None:
    order = request["payload"]
    turn = _Turn(request, cast.validator, "validate", "orders.in")
    if "customer" not in order:
        _dead_letter(bus, turn, "KeyError", "'customer'")
    elif not order["lines"]:
        _crash(bus, turn, f"order {order['order_id']} has no lines")
    elif (sku := _unknown_sku(order)) is not None:
        _reject(bus, turn, sku)
    else:
        payload = {key: order[key] for key in ("order_id", "customer", "lines", "vip")}
        payload["line_count"] = len(order["lines"])
        fmt = _ORDERS + "OrderValidated"
        _price(bus, cast, bus.answer(turn, "orders.validated", payload, fmt))


def _unknown_sku(order: Body) -> str | None:
    unknown = [line["sku"] for line in order["lines"] if line["sku"] not in _PRICES]
    return unknown[0] if unknown else None


def _price(bus: _Bus, cast: _Cast, validated: Body) -> None:
    order = validated["payload"]
    lines = order["lines"]
    subtotal = round(sum(_PRICES[line["sku"]] * line["quantity"] for line in lines), 2)
    discount = round(subtotal * 0.1, 2) if order["vip"] else 0.0
    payload = {key: order[key] for key in ("order_id", "customer", "lines", "vip")}
    payload.update(subtotal=subtotal, discount=discount, currency="EUR")
    payload["total"] = round(subtotal - discount, 2)
    # The pricing route's transformer raises VIP orders to priority 1.
    priority = 1 if order["vip"] else validated["priority"]
    turn = _Turn(validated, cast.pricing, "price", "orders.validated")
    topics = ["orders.priced", "orders.audit"]
    priced = bus.answer(
        turn, topics, payload, _ORDERS + "PricedOrder", priority=priority
    )
    _reserve(bus, cast, priced)


def _reserve(bus: _Bus, cast: _Cast, priced: Body) -> None:
    order = priced["payload"]
    turn = _Turn(priced, cast.inventory, "reserve", "orders.priced")
    payload = {key: order[key] for key in ("order_id", "customer", "total")}
    payload.update(
        reserved=True, remaining=bus.reserve(order["order_id"], order["lines"])
    )
    fmt = _ORDERS + "ReservationResult"
    reserved = bus.answer(turn, "orders.reserved", payload, fmt)
    patch = {"last_order": order["order_id"], "last_total": order["total"]}
    _update_state(bus, cast, turn, patch, cast.inventory.id)
    _notify(bus, cast, reserved)


def _notify(bus: _Bus, cast: _Cast, reserved: Body) -> None:
    order = reserved["payload"]
    turn = _Turn(reserved, cast.notifier, "notify", "orders.reserved")
    payload = {key: order[key] for key in ("order_id", "customer")}
    payload.update(status="confirmed", total=order["total"])
    forward = {"origin_message_id": reserved["id"], "on_behalf_of": reserved["sender"]}
    topics = ["orders.done", "agent_inbox:orders_client"]
    fmt = _ORDERS + "OrderConfirmed"
    bus.answer(
        turn, topics, payload, fmt, process_status="completed", forward_header=forward
    )
    patch = {
        "orders": {"last_confirmed": order["order_id"], "last_status": "confirmed"}
    }
    _update_state(bus, cast, turn, patch, None)


def _reject(bus: _Bus, turn: _Turn, sku: str) -> None:
    """``ctx.send_error``: one copy per matching route, one on ``error_topic``."""
    order_id = turn.origin["payload"]["order_id"]
    payload = {"order_id": order_id, "reason": "unknown sku", "offending_sku": sku}
    fmt = _ORDERS + "OrderRejected"
    routed = [_LOOKUP_FAILED, _REJECTED]
    bus.answer(
        turn,
        "orders.rejected",
        payload,
        fmt,
        is_error_message=True,
        process_status="error",
        reason=routed,
    )
    errors = [_LOOKUP_FAILED, _LOOKUP_FAILED]
    bus.answer(
        turn, ["error_topic"], payload, fmt, is_error_message=True, reason=errors
    )


def _crash(bus: _Bus, turn: _Turn, message: str) -> None:
    """An unhandled exception in a processor, reported as an ``ErrorMessage``."""
    payload = {
        "agent_type": turn.agent.class_name,
        "error_type": "UNHANDLED_EXCEPTION",
        "error_message": message,
    }
    bus.answer(turn, ["error_topic"], payload, _ERROR, is_error_message=True)


def _dead_letter(bus: _Bus, turn: _Turn, error_type: str, error_message: str) -> None:
    """The backend's dead letter when a predicate raised before the processor ran."""
    failed, topic = turn.origin, str(turn.from_topic)
    thread = failed["thread"]
    original = {**failed, "topic_published_to": topic}
    original.update(current_thread_id=thread[-1], root_thread_id=thread[0])
    payload = {
        "delivery_backend": "RedisPubSubManager",
        "client_id": f"{bus.guild_id}${turn.agent.id}",
        "original_topic": f"{bus.guild_id}:{topic}",
        "original_message_id": failed["id"],
        "original_message": original,
        "error_type": error_type,
        "error_message": error_message,
    }
    at = bus.after(failed)
    body = _body(
        dict(_BACKEND),
        "dead_letter_queue",
        payload,
        "generic_json",
        at,
        in_response_to=failed["id"],
        is_error_message=True,
    )
    bus.publish(body, 0)


# --- the user proxy -------------------------------------------------------------


def _add_user(bus: _Bus, cast: _Cast, at: int) -> None:
    payload = {"user_id": _USER, "user_name": cast.user.name}
    fmt = _SYSTEM + "UserAgentCreationRequest"
    request = bus.send(cast.socket, "system_topic", payload, fmt, at)
    turn = _Turn(request, cast.manager, "create_user_agent", "system_topic")
    created = {"user_id": _USER, "agent_id": cast.user.id, "status_code": 201}
    created |= {"status": "Agent created successfully", "topic": f"user:{_USER}"}
    fmt = _SYSTEM + "UserAgentCreationResponse"
    response = bus.answer(turn, "system_topic", created, fmt)
    spec = {"guild_id": bus.guild_id, "guild_spec": _guild_spec(bus, cast)}
    bus.direct(turn, ["guild_status_topic"], spec, _SYSTEM + "GuildUpdatedAnnouncement")
    _launch(bus, cast, cast.user, bus.after(response))


def _guild_spec(bus: _Bus, cast: _Cast) -> Body:
    agents = [
        {
            "id": agent.id,
            "name": agent.name,
            "class_name": agent.class_name,
            "additional_topics": list(agent.topics),
            "listen_to_default_topic": False,
        }
        for agent in cast.members
    ]
    description = "validate -> price -> reserve -> notify"
    return {
        "id": bus.guild_id,
        "name": "Demo Orders",
        "description": description,
        "agents": agents,
        "routes": bus.slip,
    }


def _user_order(bus: _Bus, cast: _Cast, order: Body, at: int) -> None:
    """An order typed in the UI: a Message wrapped as the payload on ``user:alice``."""
    trace = bus.span(None)
    inner: Body = {"id": None, "priority": 3, "topics": "orders.in", "payload": order}
    inner |= {
        "format": _REQUEST,
        "sender": cast.socket.tag,
        "thread": None,
        "traceparent": trace,
    }
    topic = f"user:{_USER}"
    wrapper = bus.send(
        cast.socket, topic, inner, _WRAPPED, at, priority=3, traceparent=trace
    )
    inner.update(id=wrapper["id"], thread=wrapper["thread"])
    _forward(bus, cast, _Turn(wrapper, cast.user, "unwrap_and_forward_message", topic))


def _forward(bus: _Bus, cast: _Cast, turn: _Turn) -> None:
    order = turn.origin["payload"]["payload"]
    forward = {"origin_message_id": turn.origin["id"], "on_behalf_of": cast.socket.tag}
    notice = [f"user_notifications:{_USER}"]
    bus.direct(turn, notice, order, _REQUEST, forward_header=forward)
    request = bus.answer(
        turn,
        ["orders.in"],
        order,
        _REQUEST,
        routing_slip=bus.slip,
        enrich_with_history=2,
    )
    broadcast = ["user_message_broadcast"]
    bus.answer(
        turn, broadcast, order, _REQUEST, routing_slip=bus.slip, forward_header=forward
    )
    _validate(bus, cast, request)


# --- keys -----------------------------------------------------------------------


def _records(bus: _Bus, org_id: str, now_ms: int, ttl_ms: int) -> list[KeyRecord]:
    stored = [(body, _copies(body)) for body in bus.sent]
    records = [
        *_topic_records(bus.guild_id, stored),
        *_msg_records(bus.guild_id, stored, now_ms, ttl_ms),
        *_position_records(bus, stored),
        *_state_records(bus),
        _kv_record(bus, org_id),
    ]
    return sorted(records, key=lambda record: record.key)


def _dumps(body: Body) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _copies(body: Body) -> list[tuple[str, bytes]]:
    """One stored copy per topic; dead letters keep ``topic_published_to`` null."""
    if body["sender"] == _BACKEND:
        return [("dead_letter_queue", _dumps(body))]
    topics = _as_list(body["topics"])
    return [(topic, _dumps({**body, "topic_published_to": topic})) for topic in topics]


def _topic_records(guild_id: str, stored: list[Stored]) -> Iterator[KeyRecord]:
    members: dict[str, list[tuple[bytes, float]]] = defaultdict(list)
    for body, copies in stored:
        for topic, member in copies:
            members[f"{guild_id}:{topic}"].append((member, body["timestamp"]))
    for key, value in members.items():
        yield KeyRecord(key, "zset", sorted(value, key=lambda pair: (pair[1], pair[0])))


def _msg_records(
    guild_id: str, stored: list[Stored], now_ms: int, ttl_ms: int
) -> Iterator[KeyRecord]:
    """``msg:`` keys still alive at ``now_ms``, each holding its last topic's copy."""
    for body, copies in stored:
        stamp = int(body["timestamp"])
        # Each topic's SET overwrites the key a moment after the previous one.
        expire_at = stamp + len(copies) - 1 + stamp % 2 + ttl_ms
        if expire_at > now_ms:
            key = f"msg:{guild_id}:{body['id']}"
            yield KeyRecord(key, "string", copies[-1][1], expire_at - now_ms, expire_at)


def _position_records(bus: _Bus, stored: list[Stored]) -> Iterator[KeyRecord]:
    """Each agent's ``eo:pos``: the last message on each topic since it started."""
    seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for body, copies in stored:
        for topic, _ in copies:
            seen[topic].append((int(body["timestamp"]), body["id"]))
    for agent, started in bus.started.values():
        for topic in agent.listens():
            delivered = [pair for pair in seen[topic] if pair[0] >= started]
            if delivered:
                key = f"eo:pos:{bus.guild_id}${agent.id}:{bus.guild_id}:{topic}"
                yield KeyRecord(key, "string", str(max(delivered)[1]).encode())


def _state_records(bus: _Bus) -> Iterator[KeyRecord]:
    for owner, state in bus.states.items():
        suffix = f"#{owner}" if owner else ""
        yield KeyRecord(
            f"managed_state:{bus.guild_id}{suffix}", "hash", state.to_hash()
        )


def _kv_record(bus: _Bus, org_id: str) -> KeyRecord:
    """The inventory's RedisKVStore hash: stock levels and the last order."""
    value = {name.encode(): text.encode() for name, text in sorted(bus.kv.items())}
    return KeyRecord(f"{org_id}_{bus.guild_id}_inventory", "hash", value)
