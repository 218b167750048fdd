"""The AWS emulator (moto_server), with DynamoDB's requests handled one at a time and each
SQS receive taking its messages atomically.

moto runs each request on a thread of its own, and two of its operations are not atomic
across threads:

- TransactWriteItems copies the whole table before a transaction and, when a condition
  fails, puts that copy back, undoing whatever another thread wrote in between. Two racing
  creates of one hook name could then both succeed, which DynamoDB never allows (the name
  guard is a conditional put in a transaction). Taking DynamoDB's requests in turn makes
  the emulator keep that promise.
- ReceiveMessage checks that a message is visible and then marks it received, so two
  concurrent receives (the worker polls each lane with two) could both take the same
  message, and the delivery was sent and recorded twice (in one of two runs of 16
  receives racing for 1,000 messages). SQS can do that too, but rarely, and tests that
  count attempts should not have to wait out the emulator's races as well. Each receive
  now takes its messages under one lock; its long poll waits outside it, so other
  receives are not held up.

The other changes are for speed alone; what the emulator answers is unchanged. The
emulator is one Python process, and the AWS tests spent most of their time waiting on it:
with them a replay test of a thousand deliveries took 92 s, not 427, and the end-to-end
suite's AWS tests about 540 s less in all:

- moto answers every Query by sorting the whole table, all partitions, and then keeping
  the partition asked for; a hook's deliveries are thousands of items, and listing them
  is a query a page. A query of the table now reads its one partition. A query of an
  index still reads every item (moto has no index) but no longer sorts them first: it
  sorts what it keeps by the index's and the table's keys anyway.
- For each message a receive takes, moto checks its retention by working out every
  attribute of its queue, three of them counts over all the queue's messages: a receive
  of ten from a queue of a thousand looked at each message thirty times. The check now
  reads the retention period alone.
- For each request, moto listed its own package directory (an `isdir` for each of some
  two hundred entries) to see whether the host named a service, and ran a regular
  expression over the whole answer, a page of a query included, to put a request id into
  XML. The list is read once, and only an answer with a `<RequestId>` is searched.

Run as `moto_server`: `python3 scripts/emulator.py -H 127.0.0.1 -p 4566`.
"""

import sys
import threading

from moto import backends
from moto.core.responses import BaseResponse
from moto.core.utils import unix_time
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.models import SQSBackend

_in_turn = threading.RLock()
_call_action = DynamoHandler.call_action


def _call_action_in_turn(self):
    with _in_turn:
        return _call_action(self)


DynamoHandler.call_action = _call_action_in_turn

# Which query this thread is answering: ("table", partition) for a query of the table,
# ("index",) for one of an index, None when it answers no query.
_querying = threading.local()
_query = Table.query
_all_items = Table.all_items


def _query_reading_what_it_needs(self, hash_key, *args, **kwargs):
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    _querying.of = ("index",) if index_name else ("table", hash_key)
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        _querying.of = None


def _items_for_the_query(self):
    of = getattr(_querying, "of", None)
    if of is None:
        return _all_items(self)
    if of[0] == "index":
        items = []
        for partition in self.items.values():
            items.extend(partition.values() if self.range_key_attr else [partition])
        return items
    # `items` is a defaultdict: looking a partition up with [] would add an empty one.
    partition = self.items.get(of[1])
    if partition is None:
        return []
    return list(partition.values()) if self.range_key_attr else [partition]


Table.query = _query_reading_what_it_needs
Table.all_items = _items_for_the_query

# Re-entrant: a pass that moves a message to a dead-letter queue adds it there, and adding
# to a queue with an event source mapping receives from it on the same thread.
_taking = threading.RLock()
_receive_message = SQSBackend.receive_message


def _receive_message_atomically(
    self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None
):
    # A missing queue is refused before any wait.
    queue = self.get_queue(queue_name)
    polling_end = unix_time() + wait_seconds_timeout
    while True:
        # With no wait, moto's own receive makes one pass over the queue and returns.
        with _taking:
            taken = _receive_message(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        left = polling_end - unix_time()
        if taken or left <= 0:
            return taken
        # Woken by a message sent; one that turns visible again wakes nobody, so at most a
        # second between passes, as in moto's loop, and never past the poll's end.
        queue.wait_for_messages(min(1, left))


SQSBackend.receive_message = _receive_message_atomically


def _retained(self, queue_name, message):
    retention = int(self.get_queue(queue_name).message_retention_period)
    return retention + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _retained

_modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _modules

_enrich_response = BaseResponse._enrich_response


def _enrich_response_with_xml_only(headers, body):
    if isinstance(body, str) and "<RequestId>" in body:
        return _enrich_response(headers, body)
    # Not XML with a request id: the headers as moto makes them, the body untouched.
    headers, _ = _enrich_response(headers, "")
    return headers, body


BaseResponse._enrich_response = staticmethod(_enrich_response_with_xml_only)

if __name__ == "__main__":
    sys.exit(main())
