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

_taking = threading.Lock()
_receive_message = SQSBackend.receive_message


def _receive_message_atomically(
    self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None
):
    polling_end = unix_time() + wait_seconds_timeout
    while True:
        # With no wait, moto's own receive makes one pass over the queue and returns.
        with _taking:
            taken = _receive_message(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        if taken or unix_time() >= polling_end:
            return taken
        self.get_queue(queue_name).wait_for_messages(1)


SQSBackend.receive_message = _receive_message_atomically

if __name__ == "__main__":
    sys.exit(main())
