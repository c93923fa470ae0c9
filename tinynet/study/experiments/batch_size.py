"""batch-size: BN, GN, LN, IN and no norm from batch 2 to 64.

A CNN on Fashion-MNIST with each normalization after every convolution,
trained for the same number of samples at batch sizes 2 to 64, with the
learning rate scaled linearly with the batch (lr = 0.1 * B / 32). For BN also
the test accuracy in train mode (the statistics of test batches of the
training batch size) against eval mode (the running statistics). Claim (Wu
and He 2018, https://arxiv.org/abs/1803.08494): GN matches BN at batch 32 and
beats it at small batches, where BN's batch statistics are noisy.
"""

from ..common import accuracy, load_data, train_run, public, with_defaults
from .plotting import mark_diverged, save, subplots, titled

NAME = "batch-size"
CLAIM = "GN matches BN at batch 32 and beats it below"
NORMS = ("bn", "gn", "ln", "in", "none")
BATCHES = (2, 4, 8, 16, 32, 64)


def grid(quick):
    samples = 4096 if quick else 60000
    size = dict(n_train=5000, n_test=1000, depth=2, width=8) if quick else \
        dict(n_train=20000, n_test=5000, depth=2, width=16)
    return [dict(data="fashion", arch="cnn", norm=norm, batch_size=b, lr=0.1 * b / 32,
                 steps=samples // b, log_every=max(1, samples // b // 50), **size)
            for norm in NORMS for b in BATCHES]


def run(config):
    out = train_run(config)
    result = public(out)
    if config["norm"] == "bn":
        c = with_defaults(config)
        _, _, xte, yte = load_data(c["data"], c["n_train"], c["n_test"])
        result["test_acc_train_mode"], _ = accuracy(out["_model"], xte, yte,
                                                   batch_size=c["batch_size"], train_mode=True)
    return result


def summarize(records):
    table = {}
    for r in records:
        c, res = r["config"], r["result"]
        entry = {"batch_size": c["batch_size"], "test_err": 1 - res["test_acc"],
                 "train_acc": res["train_acc"], "diverged": res["diverged"]}
        if "test_acc_train_mode" in res:
            entry["test_err_train_mode"] = 1 - res["test_acc_train_mode"]
        table.setdefault(c["norm"], []).append(entry)
    for rows in table.values():
        rows.sort(key=lambda e: e["batch_size"])
    return {"norms": table}


def figure(summary):
    """The figure of ``summary``: test error against batch size for every norm, and
    BN's eval mode against train mode; diverged runs are red x's. Returns a
    matplotlib Figure."""
    t = summary["norms"]
    fig, (ax, ax2) = subplots(1, 2, figsize=(12, 4.5))
    for norm in NORMS:
        rows = t[norm]
        ax.plot([e["batch_size"] for e in rows], [100 * e["test_err"] for e in rows], "o-",
                label=norm)
        mark_diverged(ax, [e["batch_size"] for e in rows if e["diverged"]],
                      [100 * e["test_err"] for e in rows if e["diverged"]])
    ax.set(xscale="log", xlabel="batch size (lr = 0.1 B / 32)", ylabel="test error (%)",
           title="test error against batch size")
    bn = t["bn"]
    ax2.plot([e["batch_size"] for e in bn], [100 * e["test_err"] for e in bn], "o-",
             label="BN eval mode (running stats)")
    ax2.plot([e["batch_size"] for e in bn], [100 * e["test_err_train_mode"] for e in bn], "s--",
             label="BN train mode (test-batch stats, same B)")
    for key in ("test_err", "test_err_train_mode"):
        mark_diverged(ax2, [e["batch_size"] for e in bn if e["diverged"]],
                      [100 * e[key] for e in bn if e["diverged"]])
    ax2.set(xscale="log", xlabel="batch size", ylabel="test error (%)",
            title="BN: eval mode against train mode")
    for a in (ax, ax2):
        a.minorticks_off()
        a.set_xticks(BATCHES, [str(b) for b in BATCHES])
        a.grid(alpha=0.3)
        a.legend()
    return titled(fig, "batch-size: CNN on Fashion-MNIST, same number of samples per run")


def plot(summary, path):
    save(figure(summary), path)
