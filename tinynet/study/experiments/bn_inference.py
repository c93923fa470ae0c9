"""bn-inference: BatchNorm's three ways to normalize at test time.

A CNN with BatchNorm on MNIST, trained with momentum 0.01, 0.1, 0.5 and None
(the cumulative average). Each trained model is evaluated on the test set
with (a) its running statistics, (b) exact population statistics of the
training set (tn.recompute_batchnorm_stats) and (c) the statistics of each
test batch (train mode), at test batch sizes 2 to 1000; and its running
statistics are compared with the population ones. Claim: running statistics
make eval independent of the batch, and the moving average approximates the
population statistics.
"""
import numpy as np

import tinynet as tn
from ..common import accuracy, load_data, public, train_run, with_defaults
from .plotting import mark_diverged, mark_end, save, subplots, titled

NAME = "bn-inference"
CLAIM = ("running statistics make eval independent of the batch, and the moving average "
         "approximates the population statistics")
MOMENTA = (0.01, 0.1, 0.5, None)


def grid(quick):
    size = dict(n_train=5000, n_test=1000, steps=150, depth=2, width=8) if quick else \
        dict(n_train=30000, n_test=5000, steps=1500, depth=2, width=16)
    return [dict(data="mnist", arch="cnn", norm="bn", bn_momentum=m, lr=0.1, log_every=25,
                 **size) for m in MOMENTA]


def test_batches(n_test):
    return [b for b in (2, 8, 32, 128, 1000) if b <= n_test]


def run(config):
    out = train_run(config)
    model = out["_model"]
    c = with_defaults(config)
    xtr, _, xte, yte = load_data(c["data"], c["n_train"], c["n_test"])
    result = public(out)
    batches = test_batches(len(xte))
    result["test_batches"] = batches
    result["running"] = [accuracy(model, xte, yte, batch_size=b)[0] for b in batches]
    result["batch_stats"] = [accuracy(model, xte, yte, batch_size=b, train_mode=True)[0]
                             for b in batches]
    bns = [l for l in model.layers if isinstance(l, tn.BatchNorm)]
    running = [(l.running_mean.copy(), l.running_var.copy()) for l in bns]
    tn.recompute_batchnorm_stats(model, xtr, batch_size=500)
    result["population"] = [accuracy(model, xte, yte, batch_size=b)[0] for b in batches]
    result["mean_rel_err"] = [float(np.linalg.norm(m - l.running_mean) /
                                    np.linalg.norm(l.running_mean)) for (m, _), l in zip(running, bns)]
    result["var_rel_err"] = [float(np.linalg.norm(v - l.running_var) /
                                   np.linalg.norm(l.running_var)) for (_, v), l in zip(running, bns)]
    return result


def summarize(records):
    rows = []
    for r in records:
        res = r["result"]
        m = r["config"]["bn_momentum"]
        rows.append({"momentum": "None (cumulative)" if m is None else m,
                     "diverged": res["diverged"],
                     **{k: res[k] for k in ("test_batches", "running", "population",
                                            "batch_stats", "mean_rel_err", "var_rel_err")}})
    return {"rows": rows}


def figure(summary):
    """The figure of ``summary``: test accuracy against test batch size with each
    kind of statistics, and the running statistics' error; a diverged run is a
    red x at the end of its curves and above its bars. Returns a matplotlib Figure."""
    rows = summary["rows"]
    fig, axes = subplots(1, 4, figsize=(19, 4.5))
    for i, (key, title) in enumerate((("running", "running statistics"),
                                      ("population", "population statistics (exact)"),
                                      ("batch_stats", "test-batch statistics"))):
        for r in rows:
            acc = [100 * a for a in r[key]]
            axes[i].plot(r["test_batches"], acc, "o-", label=f"momentum {r['momentum']}")
            if r["diverged"]:
                mark_end(axes[i], r["test_batches"], acc)
        axes[i].set(xscale="log", xlabel="test batch size", ylabel="test acc (%)", title=title)
    x = np.arange(len(rows))
    layers = len(rows[0]["mean_rel_err"])
    width = 0.8 / (2 * layers)
    for k in range(layers):
        axes[3].bar(x + 2 * k * width, [r["mean_rel_err"][k] for r in rows], width,
                    label=f"BN {k + 1} mean")
        axes[3].bar(x + (2 * k + 1) * width, [r["var_rel_err"][k] for r in rows], width,
                    label=f"BN {k + 1} var")
    mark_diverged(axes[3], [x[i] + 0.4 - width / 2 for i, r in enumerate(rows) if r["diverged"]])
    axes[3].set_xticks(x + 0.4 - width / 2, [str(r["momentum"]).split(" ")[0] for r in rows])
    axes[3].set(xlabel="momentum", yscale="log", ylabel="relative error",
                title="||running - population|| / ||population||")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return titled(fig, "bn-inference: CNN with BatchNorm on MNIST")


def plot(summary, path):
    save(figure(summary), path)
