"""The figure helpers shared by the experiments: figures off pyplot, saved with savefig."""
from ...plots import subplots

__all__ = ["subplots", "save"]


def save(fig, path, title):
    """Give ``fig`` its title, lay it out and write it to ``path``."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
