"""The review-round strategies by name: the one list.

The project settings (models), the admin form (webapp) and the registry of
implementations (worker/ml/selection) all read it; the registry fails at
import if it implements a different set.
"""

STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy", "bald", "coreset",
                  "hybrid", "class_balanced")
# Chosen from the benchmark in docs/benchmarks.md: "margin" on backbone features
# ("Active learning (issue 5)"), now "class_balanced" on the cell descriptors new
# projects read ("Head on descriptors and backbone (issue 15)"); migration 0012
# moves the server default, existing projects keep theirs.
DEFAULT_STRATEGY = "class_balanced"
