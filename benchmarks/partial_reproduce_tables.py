"""Tables of a reproduction stopped after its presets, peers and ensembles.

``skadv reproduce --full`` writes ``reproduce.partial.json`` after each
detector; the presets, peer methods and ensembles come first, the ablations
after them. This writes the comparison tables of such a file with the
report's own formatter::

    python benchmarks/partial_reproduce_tables.py \\
        benchmarks/results/reproduce-mnist-presets-peers.json

The markdown goes beside the JSON (``<stem>-tables.md``).
"""

import json
import sys
from pathlib import Path

from skadv.reproduce._report import _comparison_lines, summary_tables


def main(path):
    path = Path(path)
    results = json.loads(path.read_text())
    tables = summary_tables(results)
    c = results["config"]
    lines = [
        f"# {c['dataset']}: presets, peer methods and ensembles "
        f"(`{c['command']}`, stopped before the ablations)",
        "",
        f"{c['n_train']} training images ({c['n_cal']} held out for calibration), "
        f"{c['n_test']} test images; classifier test accuracy "
        f"{results['classifier']['test_accuracy']:.4f}.",
        *_comparison_lines(tables["comparison"], tables["sets"]),
    ]
    out = path.with_name(path.stem + "-tables.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
