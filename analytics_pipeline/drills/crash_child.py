"""The process the ``sigkill-publish`` drill kills: ``nightly_job`` for one day, frozen mid-publish.

    python -m analytics_pipeline.drills.crash_child SETTINGS_JSON DAY POINT

It runs the real job in-process with ``storage.PUBLISH_STEP_HOOK`` aimed at the first pass
of ``POINT`` (a name of ``storage.PUBLISH_STEPS``): there it prints ``STOPPED <point>`` and
stops itself (``SIGSTOP``), so the drill's ``SIGKILL`` lands exactly there however fast the
machine is (the mechanism of ``tests/scripts/publish_loop.py``). If the point is never
passed it prints ``NOT REACHED`` and exits 3: the drill then fails instead of passing by luck.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from analytics_pipeline.settings import PipelineSettings
from analytics_pipeline.warehouse import storage


def main(argv: list[str]) -> int:
    settings_json, day, point = argv
    settings = PipelineSettings(**json.loads(settings_json))

    def hook(step: str) -> None:
        if step == point:
            print(f"STOPPED {point}", flush=True)
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
            while True:  # never runs past the point, even if continued
                time.sleep(3600)

    storage.PUBLISH_STEP_HOOK = hook
    from dagster import DagsterInstance

    from analytics_pipeline.definitions import defs

    defs.resolve_job_def("nightly_job").execute_in_process(
        partition_key=day, instance=DagsterInstance.get(), resources={"settings": settings},
        raise_on_error=False,
    )  # fmt: skip
    print("NOT REACHED", flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
