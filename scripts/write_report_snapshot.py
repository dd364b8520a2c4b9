"""Writes sae_interp_tasks/reports/report_snapshot.json: every built-in task kind's report and the
directions of its metrics, which `sae-interp leaderboard` / `compare` fall back to for results files
written before tasks recorded their report (so the readers never import the task modules, torch or
lm_eval). tests/test_architecture.py fails when the snapshot and the declarations differ.

    python scripts/write_report_snapshot.py
"""

import json
from pathlib import Path

from sae_interp_tasks import registry
from sae_interp_tasks.reports import spec

OUT = Path(spec.__file__).with_name(spec.SNAPSHOT)

if __name__ == "__main__":
    OUT.write_text(json.dumps(registry.report_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
