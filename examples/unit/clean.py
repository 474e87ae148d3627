"""The seed's examples/unit clean step: drop the cache's database (starting from empty).

With a host-less config this also starts (or finds) the shared local server, which
`wirehead clean config.yaml --yes` would not: it refuses when no server runs yet.
"""

from wirehead import WireheadConfig
from wirehead.store import Store

if __name__ == "__main__":
    store = Store(WireheadConfig.from_yaml("config.yaml"))
    try:
        store.drop_database()
        print(f"dropped database {store.config.dbname!r} at {store.redacted_uri}")
    finally:
        store.close()
