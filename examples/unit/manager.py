"""The seed's examples/unit manager: swaps full generations and deletes old ones.

Stops cleanly on Ctrl-C or SIGTERM (releasing its swap lease), so test.sh can end it.
"""

import signal

from wirehead import WireheadManager

WIREHEAD_CONFIG = "config.yaml"

if __name__ == "__main__":
    wirehead_runtime = WireheadManager(config_path=WIREHEAD_CONFIG)
    signal.signal(signal.SIGTERM, lambda *_: wirehead_runtime.stop())
    wirehead_runtime.run_manager()
