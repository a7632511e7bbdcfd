"""One contender for ``test_compare_and_swap``: a separate OS process with its own client.

``python cas_worker.py URL DB COLLECTION TAG WINS`` connects, prints ``ready``,
waits for a line on stdin (so both contenders start together), then wins WINS
version-guarded updates of one document with read-then-CAS retries and prints
``{"won": [versions], "conflicts": n}`` as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pymongo import MongoClient, ReturnDocument


def contend(url: str, db: str, collection: str, tag: str, wins: int) -> dict[str, object]:
    client: MongoClient[dict[str, Any]] = MongoClient(url)
    try:
        col = client[db][collection]
        client.admin.command("ping")
        print("ready", flush=True)
        sys.stdin.readline()
        won: list[int] = []
        conflicts = 0
        while len(won) < wins:
            current = col.find_one({"_id": "k"})
            assert current is not None
            version = int(current["version"])
            after = col.find_one_and_update(
                {"_id": "k", "version": version},
                {"$set": {"version": version + 1}, "$push": {"won": tag}},
                return_document=ReturnDocument.AFTER,
            )
            if after is None:
                conflicts += 1  # the other process got there first: read again
            else:
                won.append(version + 1)
        return {"won": won, "conflicts": conflicts}
    finally:
        client.close()


if __name__ == "__main__":
    url, db, collection, tag, wins = sys.argv[1:6]
    print(json.dumps(contend(url, db, collection, tag, int(wins))), flush=True)
