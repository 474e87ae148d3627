"""Upstream's examples/unit logger: print the swap history, then each new swap as it happens (Ctrl-C stops)."""

from wirehead import WireheadLogger

if __name__ == "__main__":
    logger = WireheadLogger("config.yaml")

    logs = logger.history()
    if not logs:
        print("No swaps recorded yet.")
    for log in logs:
        print(log)

    logger.run()  # tails for new swaps (JSON Lines)
