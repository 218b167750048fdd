"""The AWS emulator (moto_server), with DynamoDB's requests handled one at a time.

moto runs each request on a thread of its own, and its TransactWriteItems is not atomic
across threads: it copies the whole table before a transaction and, when a condition
fails, puts that copy back, undoing whatever another thread wrote in between. Two racing
creates of one hook name could then both succeed, which DynamoDB never allows (the name
guard is a conditional put in a transaction). Taking DynamoDB's requests in turn makes
the emulator keep that promise; SQS's long polls, on other threads, are not held up.

Run as `moto_server`: `python3 scripts/emulator.py -H 127.0.0.1 -p 4566`.
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_in_turn = threading.RLock()
_call_action = DynamoHandler.call_action


def _call_action_in_turn(self):
    with _in_turn:
        return _call_action(self)


DynamoHandler.call_action = _call_action_in_turn

if __name__ == "__main__":
    sys.exit(main())
