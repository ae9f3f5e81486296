"""moto's server (the pinned version), with DynamoDB's atomic writes and without three of
its costs that grow with a run.

`infra/emulator.sh` starts moto through this file. DynamoDB applies each request to an item
atomically; moto serves requests on threads and reads, checks and writes an item in steps,
so two conditional `ADD`s on one counter can both pass a limit and one increment is lost.
Here DynamoDB requests are served one at a time (the interpreter runs one thread at a time
anyway). The other changes keep what moto answers and only remove work that grows with
everything the server has ever done:

1. moto registers every model instance in its class's `instances_tracked` list, for the
   `/moto-api/data.json` dashboard, and never lets go. DynamoDB replaces an item object on
   every write, so a long run keeps millions of dead objects: after `make demo`, 2.1 GB of
   memory and about 30 s to build data.json, slowing every other call meanwhile. Here the
   registry holds weak references; data.json lists what is alive, which includes the mail
   SES sent (its backend keeps it).
2. TransactWriteItems deep-copies every table it touches before it starts, to put the copies
   back if it is cancelled: 57 ms per transaction instead of 5 once a table holds 3,000
   items, growing with the table. Here only the items the transaction names are copied, and
   only they are put back.
3. Every request lists moto's package directory to find its service; the list never changes
   while the server runs, so it is read once.

Run with another moto version, the file starts moto unchanged and says so.

Usage: python moto_server.py <moto_server arguments>
"""

import copy
import sys
import weakref

import moto

PATCHED_VERSION = "5.2.5"


class LiveInstances:
    """What `instances_tracked` is used as (append, iterate), holding weak references."""

    def __init__(self):
        self._refs = []
        self._pruned_at = 64

    def append(self, instance):
        try:
            self._refs.append(weakref.ref(instance))
        except TypeError:
            # A class without weak reference support stays registered as moto would.
            self._refs.append(lambda: instance)
        # Dead references go once the list has doubled since the last pass: amortised O(1).
        if len(self._refs) >= 2 * self._pruned_at:
            self._refs = [r for r in self._refs if r() is not None]
            self._pruned_at = max(64, len(self._refs))

    def __iter__(self):
        return (i for i in (r() for r in list(self._refs)) if i is not None)


def track_live_instances_only():
    from moto.core.common_models import BaseModel

    def new(cls, *args, **kwargs):
        instance = super(BaseModel, cls).__new__(cls)
        tracked = cls.__dict__.get("instances_tracked")
        if not isinstance(tracked, LiveInstances):
            # Set per class by moto's metaclass, and back to a plain list by a reset.
            tracked = LiveInstances()
            cls.instances_tracked = tracked
        tracked.append(instance)
        return instance

    BaseModel.__new__ = new


def roll_back_transactions_by_item():
    import moto.dynamodb.models as backend_module
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class TablesStayLive:
        """The module's `copy`: a table is "copied" as itself, so moto's own rollback puts
        the live table back in place (a no-op); anything else is really copied."""

        @staticmethod
        def deepcopy(value, memo=None):
            if isinstance(value, Table):
                return value
            return copy.deepcopy(value, memo)

    backend_module.copy = TablesStayLive

    def key_of(table, op):
        attrs = op.get("Item") or op.get("Key") or {}
        hash_value = attrs.get(table.hash_key_attr)
        if hash_value is None:
            return None
        range_value = None
        if table.range_key_attr is not None:
            raw = attrs.get(table.range_key_attr)
            if raw is None:
                return None
            range_value = DynamoType(raw)
        return DynamoType(hash_value), range_value

    def restore(table, hash_value, range_value, item):
        if range_value is None:
            if item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
        elif item is None:
            table.items.get(hash_value, {}).pop(range_value, None)
            if hash_value in table.items and not table.items[hash_value]:
                del table.items[hash_value]
        else:
            table.items[hash_value][range_value] = item

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        before = []
        for entry in transact_items:
            op = next(iter(entry.values()), None)
            table = self.tables.get((op or {}).get("TableName"))
            key = key_of(table, op) if table is not None else None
            if key is not None:
                current = table.get_item(*key)
                before.append((table, *key, copy.deepcopy(current)))
        try:
            return original(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(before):
                restore(table, hash_value, range_value, item)
            raise

    DynamoDBBackend.transact_write_items = transact_write_items


def serve_dynamodb_requests_one_at_a_time():
    import threading

    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(self):
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action


def list_service_modules_once():
    from moto import backends

    modules = list(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


def main(argv):
    if moto.__version__ == PATCHED_VERSION:
        serve_dynamodb_requests_one_at_a_time()
        track_live_instances_only()
        roll_back_transactions_by_item()
        list_service_modules_once()
    else:
        print(
            f"moto_server.py: moto {moto.__version__} is not {PATCHED_VERSION}; "
            "starting it unchanged",
            file=sys.stderr,
        )
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
