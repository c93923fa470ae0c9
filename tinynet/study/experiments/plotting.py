"""matplotlib set-up shared by the experiments' figures."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "save"]


def save(fig, path, title):
    """Give ``fig`` its title, lay it out, write it to ``path`` and close it."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
