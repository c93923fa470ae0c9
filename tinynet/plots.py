"""matplotlib figures: the loss and accuracy curves of a training History."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_history"]


def plot_history(history, path, title="tinynet training"):
    """Save a two-panel PNG: loss and accuracy per epoch, train and validation.

    Parameters
    ----------
    history : tinynet.train.History
    path : str
        Where to write the PNG.
    """
    epochs = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["train_loss"], "o-", label="train")
    ax_acc.plot(epochs, [100 * a for a in history["train_acc"]], "o-", label="train")
    if all(v is not None for v in history["val_loss"]):
        ax_loss.plot(epochs, history["val_loss"], "s-", label="test")
        ax_acc.plot(epochs, [100 * a for a in history["val_acc"]], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
