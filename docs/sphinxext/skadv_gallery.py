"""sphinx-gallery settings that must be importable: example order, thread reset."""

EXAMPLES = [
    "plot_quickstart.py",
    "plot_explanation_methods.py",
    "plot_threshold_calibration.py",
    "plot_grid_search.py",
    "plot_persistence.py",
]


class ExampleOrder:
    """sphinx-gallery's ``within_subsection_order``: listed examples first."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in EXAMPLES:
            return (EXAMPLES.index(filename), filename)
        return (len(EXAMPLES), filename)

    def __repr__(self):
        # sphinx-gallery compares configurations by repr to decide on rebuilds.
        return f"<{type(self).__name__}: {EXAMPLES}>"


def reset_torch_threads(gallery_conf, fname):
    """Run every example on one torch thread, whatever the one before did."""
    import torch

    torch.set_num_threads(1)
