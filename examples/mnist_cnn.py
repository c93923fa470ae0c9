"""Train the reference CNN on MNIST with an explicit loop: forward, loss,
backward, step, all in plain sight.

    TINYNET_DATA_DIR=../shared/data python examples/mnist_cnn.py [--epochs 2] [--norm batch] [--limit N]
"""
import argparse
import time

import tinynet as tn
from tinynet.zoo import build_cnn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--norm", default="batch", choices=("batch", "layer", "instance", "group", "none"))
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
args = parser.parse_args()

(x_train, y_train) = tn.data.load_mnist("train")
(x_test, y_test) = tn.data.load_mnist("test")
x_train, y_train = x_train[:args.limit], y_train[:args.limit]
x_train, x_test = tn.data.prepare_images(x_train), tn.data.prepare_images(x_test)

tn.init.seed(0)
model = build_cnn(args.norm)       # conv32-norm-relu-pool, conv64-norm-relu-pool, dense128, dropout, dense10
loss_fn = tn.SoftmaxCrossEntropy()
optimizer = tn.optim.Adam(model.parameters(), lr=1e-3)
loader = tn.data.DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True, seed=0)

for epoch in range(args.epochs):
    model.train()
    t0, total, correct, seen = time.perf_counter(), 0.0, 0.0, 0
    for x, y in loader:
        logits = model.forward(x)                  # (N, 10); each layer caches what it needs
        loss = loss_fn.forward(logits, y)          # mean cross-entropy over the batch
        model.zero_grad()                          # clear .grad: backward ADDS into it
        model.backward(loss_fn.backward())         # dL/dlogits, then every layer in reverse
        optimizer.step()                           # p.data -= update(p.grad)
        total += loss * len(y)
        correct += (logits.argmax(axis=1) == y).sum()
        seen += len(y)
    seconds = time.perf_counter() - t0

    model.eval()                                   # BatchNorm uses running stats, Dropout is off
    test_correct = 0
    for i in range(0, len(x_test), 500):
        test_correct += (model.forward(x_test[i:i + 500]).argmax(axis=1) == y_test[i:i + 500]).sum()
    print(f"epoch {epoch + 1}: loss {total / seen:.4f}  train acc {100 * correct / seen:.2f}%  "
          f"test acc {100 * test_correct / len(x_test):.2f}%  {seconds:.1f}s "
          f"({seen / seconds:.0f} samples/s)")

model.save("mnist_cnn.npz")
print("saved mnist_cnn.npz")
