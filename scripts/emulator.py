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

Run as `moto_server`: `python3 scripts/emulator.py -H 127.0.0.1 -p 4566`.
"""

import sys
import threading

from moto.core.utils import unix_time
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.sqs.models import SQSBackend

_in_turn = threading.RLock()
_call_action = DynamoHandler.call_action


def _call_action_in_turn(self):
    with _in_turn:
        return _call_action(self)


DynamoHandler.call_action = _call_action_in_turn

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

if __name__ == "__main__":
    sys.exit(main())
