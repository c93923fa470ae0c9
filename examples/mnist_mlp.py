"""Train a two-hidden-layer MLP on MNIST with tn.fit (progress bar, history).

    TINYNET_DATA_DIR=../shared/data python examples/mnist_mlp.py [--epochs 5] [--limit N]
"""
import argparse

import tinynet as tn

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--limit", type=int, default=None, help="train on the first N images only")
args = parser.parse_args()

(x_train, y_train) = tn.data.load_mnist("train")
(x_test, y_test) = tn.data.load_mnist("test")
x_train, y_train = x_train[:args.limit], y_train[:args.limit]
x_train = tn.data.prepare_images(x_train, flatten=True)   # (60000, 784) float32
x_test = tn.data.prepare_images(x_test, flatten=True)

tn.init.seed(0)
model = tn.Sequential(
    tn.Dense(784, 256), tn.BatchNorm(256), tn.ReLU(), tn.Dropout(0.2),
    tn.Dense(256, 256), tn.BatchNorm(256), tn.ReLU(), tn.Dropout(0.2),
    tn.Dense(256, 10))
model.summary(input_shape=(1, 784))

optimizer = tn.optim.AdamW(model.parameters(), lr=1e-3)
history = tn.fit(model, tn.SoftmaxCrossEntropy(), optimizer, (x_train, y_train),
                 epochs=args.epochs, val_data=(x_test, y_test), batch_size=128)
print(f"test accuracy: {100 * history['val_acc'][-1]:.2f}%")
