"""`perpline admin`: users, API keys and wallet deposits, written to the topics like any command.

    perpline admin create-user [--label L] [--permissions read,trade,withdraw,manage_keys] [--deposit USDT=1000 ...]
    perpline admin create-key --user ID [--permissions read,trade] [--label L]
    perpline admin list-keys --user ID
    perpline admin revoke-key --user ID --api-key KEY
    perpline admin deposit --user ID USDT=1000 [...]
    perpline admin gen-secret-key

Prints JSON. The operator acts as the owner: any permission may be given (manage_keys lets a key
issue and revoke keys with at most its own permissions). create-user's first key has every
permission by default; create-key's only read and trade. The API secret is shown once, by create-user / create-key; it is stored only
encrypted (Fernet, PERPLINE_SECRET_KEY or the data dir's key file). Deposits go to the accounts
processor as Deposit commands (journal DEPOSIT: platform HOT_WALLET -> user SPOT) and this command
waits for its decision. Connection settings: PERPLINE_KAFKA_BOOTSTRAP, PERPLINE_DATA_DIR,
PERPLINE_SECRET_KEY, PERPLINE_TOPIC_PREFIX.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from perpline import wallet
from perpline.auth import crypto
from perpline.auth.registry import PERMISSIONS, USER_ID_BASE, KeyRegistry
from perpline.config import kafka_config, producer_config, settings, topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.ids import new_request_id, new_trace_id
from perpline.contracts.units import UnitError, parse_uint
from perpline.topics_tool import watermarks

WAIT_S = 30.0
MAX_USERS_AT_ONCE = 10_000


class Admin:
    def __init__(self) -> None:
        cfg = settings()
        self.bootstrap = cfg.kafka_bootstrap
        self.topics = topic_map()
        self.secret_key = crypto.load_secret_key(cfg.data_dir, cfg.secret_key)
        self.producer = Producer(producer_config(self.bootstrap))

    def _meta(self, cause: str) -> dict[str, Any]:
        return {"trace_id": new_trace_id(), "causation_id": cause, "ts_ms": int(time.time() * 1000)}

    def _produce(self, logical: str, key: str, msg: Any) -> int:
        """Produce and wait for the broker; returns the record's offset."""
        offsets: list[int] = []
        errors: list[str] = []

        def delivered(err: Any, record: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets.append(record.offset())

        self.producer.produce(self.topics[logical], key=key.encode(), value=codec.encode(msg), on_delivery=delivered)
        self.producer.flush(WAIT_S)
        if errors or not offsets:
            raise SystemExit(f"the broker did not take the record: {errors or 'timeout'}")
        return offsets[0]

    def create_user(self, label: str, permissions: list[str], deposits: list[tuple[str, str]]) -> dict[str, Any]:
        return self.create_users(1, label, permissions, deposits)[0]

    def create_users(self, count: int, label: str, permissions: list[str],
                     deposits: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """`count` users, each with a key and the deposits: one process, one results consumer, every
        deposit sent before any decision is awaited (a user a process cost over a second)."""
        assert 1 <= count <= MAX_USERS_AT_ONCE, f"1..{MAX_USERS_AT_ONCE} users at once"
        consumer = _results_consumer(self.bootstrap, self.topics["account.events"]) if deposits else None
        try:
            users, pending = [], []
            for _ in range(count):
                rid = new_request_id()
                offset = self._produce("auth.keys", "user", m.UserRegistered(**self._meta(rid), request_id=rid,
                                                                             label=label))
                user_id = USER_ID_BASE + offset
                users.append({"user_id": user_id, **self.create_key(user_id, permissions, label), "deposits": []})
                for asset, amount in deposits:
                    pending.append((users[-1], asset, amount, self._send_deposit(user_id, asset, amount)))
            if consumer is not None:
                results = _wait_results(consumer, {rid for *_, rid in pending})
                for user, asset, amount, rid in pending:
                    if not results[rid].ok:
                        raise SystemExit(f"deposit refused: {results[rid].code} {results[rid].msg}")
                    user["deposits"].append({"asset": asset, "amount": amount, "request_id": rid})
            return users
        finally:
            if consumer is not None:
                consumer.close()

    def _send_deposit(self, user_id: int, asset: str, amount: str) -> str:
        """The wallet received the deposit on chain: its statement line (perpline.wallet), then the exchange's
        Deposit command under the same request id."""
        rid = new_request_id()
        try:
            line = wallet.movement(wallet.DEPOSIT, user_id, asset, amount, rid, int(time.time() * 1000))
            self._produce(wallet.TOPIC, str(user_id), line)
        except wallet.NotAMovement:
            pass  # the processor refuses it: the wallet moved nothing
        self._produce("account.commands", str(user_id), m.Deposit(**self._meta(rid), request_id=rid,
                                                                  account_id=user_id, asset=asset, amount=amount))
        return rid

    def create_key(self, user_id: int, permissions: list[str], label: str) -> dict[str, Any]:
        api_key, secret = crypto.new_api_key(), crypto.new_api_secret()
        issued = m.ApiKeyIssued(**self._meta(f"key:{api_key[:8]}"), api_key=api_key, user_id=user_id,
                                secret_enc=crypto.encrypt(self.secret_key, secret), permissions=permissions,  # type: ignore[arg-type]
                                label=label)
        self._produce("auth.keys", str(user_id), issued)
        return {"api_key": api_key, "api_secret": secret, "permissions": permissions}

    def registry(self) -> KeyRegistry:
        registry = KeyRegistry(self.secret_key)
        for offset, raw in _read_all(self.bootstrap, self.topics["auth.keys"]):
            registry.apply(codec.decode("auth.keys", raw), offset)
        return registry

    def list_keys(self, user_id: int) -> list[dict[str, Any]]:
        return [{"api_key": k.api_key, "permissions": list(k.permissions), "label": k.label, "created_ms": k.created_ms,
                 "revoked": k.revoked} for k in self.registry().keys_of(user_id)]

    def revoke_key(self, user_id: int, api_key: str) -> dict[str, Any]:
        found = self.registry().get(api_key)
        if found is None or found.user_id != user_id:
            raise SystemExit(f"user {user_id} has no key {api_key[:8]}...")
        self._produce("auth.keys", str(user_id), m.ApiKeyRevoked(**self._meta(f"revoke:{api_key[:8]}"), api_key=api_key,
                                                            user_id=user_id))
        return {"api_key": api_key, "revoked": True}

    def deposit(self, user_id: int, asset: str, amount: str) -> dict[str, Any]:
        consumer = _results_consumer(self.bootstrap, self.topics["account.events"])
        try:
            rid = self._send_deposit(user_id, asset, amount)
            result = _wait_results(consumer, {rid})[rid]
        finally:
            consumer.close()
        if not result.ok:
            raise SystemExit(f"deposit refused: {result.code} {result.msg}")
        return {"asset": asset, "amount": amount, "request_id": rid}


def _results_consumer(bootstrap: str, topic: str) -> Consumer:
    """A consumer positioned at the current end of `topic`: it sees only what comes next. The end is
    `watermarks`' (corrected by a fetch): the embedded broker's ListOffsets answer is low after
    multi-record batches, and reading from there would wade through old decisions."""
    consumer = Consumer(kafka_config(bootstrap, **{"group.id": f"perpline-admin-{new_request_id()}",
                                                   "enable.auto.commit": False, "isolation.level": "read_committed"}))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    marks = watermarks(consumer, [TopicPartition(topic, p) for p in parts])
    consumer.assign([TopicPartition(topic, p, marks[(topic, p)][1]) for p in parts])
    return consumer


def _wait_results(consumer: Consumer, request_ids: set[str]) -> dict[str, m.CommandResult]:
    found: dict[str, m.CommandResult] = {}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and len(found) < len(request_ids):
        for msg in consumer.consume(500, timeout=0.2):
            if msg.error() is not None:
                continue
            event = codec.decode("account.events", msg.value())
            if isinstance(event, m.CommandResult) and event.request_id in request_ids:
                found.setdefault(event.request_id, event)
    if len(found) < len(request_ids):
        raise SystemExit(f"no decision for {len(request_ids) - len(found)} request(s) within {WAIT_S:.0f} s "
                         "(is the accounts processor up?)")
    return found


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    consumer = Consumer(kafka_config(bootstrap, **{"group.id": f"perpline-admin-{new_request_id()}",
                                                   "enable.auto.commit": False, "enable.partition.eof": True,
                                                   "auto.offset.reset": "earliest"}))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    return out
                if err is None:
                    out.append((msg.offset(), msg.value()))
        raise SystemExit(f"could not read {topic} to its end")
    finally:
        consumer.close()


def _permissions(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in PERMISSIONS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"permissions are a comma list of {', '.join(PERMISSIONS)}")
    return chosen


def _count(text: str) -> int:
    try:
        return parse_uint(text, what="--count", minimum=1, maximum=MAX_USERS_AT_ONCE)
    except UnitError as err:
        raise argparse.ArgumentTypeError(err.msg) from err


def _asset_amount(text: str) -> tuple[str, str]:
    asset, sep, amount = text.partition("=")
    if not sep or not asset or not amount:
        raise argparse.ArgumentTypeError("use ASSET=AMOUNT, e.g. USDT=1000")
    return asset, amount


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline admin", description="users, API keys and wallet deposits")
    sub = parser.add_subparsers(dest="cmd", required=True)
    cu = sub.add_parser("create-user")
    cu.add_argument("--label", default="")
    cu.add_argument("--permissions", type=_permissions, default=list(PERMISSIONS))
    cu.add_argument("--deposit", type=_asset_amount, action="append", default=[])
    cu.add_argument("--count", type=_count, default=1, help=f"users to make (1..{MAX_USERS_AT_ONCE}); more than one: "
                    "a JSON list")
    ck = sub.add_parser("create-key")
    ck.add_argument("--user", type=int, required=True)
    ck.add_argument("--permissions", type=_permissions, default=["read", "trade"])
    ck.add_argument("--label", default="")
    lk = sub.add_parser("list-keys")
    lk.add_argument("--user", type=int, required=True)
    rk = sub.add_parser("revoke-key")
    rk.add_argument("--user", type=int, required=True)
    rk.add_argument("--api-key", required=True)
    dp = sub.add_parser("deposit")
    dp.add_argument("--user", type=int, required=True)
    dp.add_argument("amounts", type=_asset_amount, nargs="+")
    sub.add_parser("gen-secret-key")
    args = parser.parse_args(argv)
    if args.cmd == "gen-secret-key":
        print(json.dumps({"secret_key": crypto.generate_secret_key()}))
        return
    admin = Admin()
    if args.cmd == "create-user":
        made = admin.create_users(args.count, args.label, args.permissions, args.deposit)
        out: Any = made[0] if args.count == 1 else made
    elif args.cmd == "create-key":
        out = {"user_id": args.user, **admin.create_key(args.user, args.permissions, args.label)}
    elif args.cmd == "list-keys":
        out = admin.list_keys(args.user)
    elif args.cmd == "revoke-key":
        out = admin.revoke_key(args.user, args.api_key)
    else:
        out = {"user_id": args.user, "deposits": [admin.deposit(args.user, a, n) for a, n in args.amounts]}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
